"""Rendering meshes into the G-Objaverse layout with Blender as a Python module (`bpy`, optional:
`pip install bpy` on Python 3.11). `objects` drives a whole folder of meshes (orbits, files,
captions, splits, resuming, skipping broken meshes); `blender` is the scene and the camera."""

from .objects import RenderSettings, render_objects

__all__ = ["RenderSettings", "render_objects"]
