"""One Blender scene per object: the mesh (imported from glTF), a camera moved to each view, and
RGBA PNG output with a transparent film. Workbench (fast, studio lighting, flat textures) or
Cycles on the CPU (path traced under a uniform white world).

Blender's world is z-up and its camera, like the project's OpenGL convention, looks along -z with
+y up, so a project c2w becomes Blender's camera matrix by the change of world axes alone
(`videomv.geometry.BLENDER_TO_WORLD`). glTF is y-up; Blender's importer turns it z-up, so a mesh
file's own frame is the project's world frame.

Run it in a process of its own (tools/render_objects.py does): importing diffusers into a process
that has loaded bpy crashed it here (bpy 5.0.1).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path

import torch

from videomv.geometry import BLENDER_TO_WORLD

ENGINES = ("workbench", "cycles")


def import_bpy():
    """bpy, or an ImportError saying how to install it."""
    try:
        import bpy
    except ImportError as err:
        raise ImportError(f"rendering needs Blender as a Python module: pip install bpy (Python 3.11 wheels); {err}") from None
    return bpy


@contextlib.contextmanager
def _quiet():
    """Silence Blender's C-level stdout chatter (render progress lines) while rendering."""
    fd = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        os.dup2(fd, 1)
        os.close(fd)


def new_scene(engine: str, resolution: int, fovy: float, samples: int = 32, threads: int | None = None):
    """An empty scene set up for RGBA renders; returns (scene, camera object)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    bpy = import_bpy()
    with _quiet():
        bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    render = scene.render
    render.resolution_x = render.resolution_y = resolution
    render.resolution_percentage = 100
    render.film_transparent = True
    render.image_settings.file_format = "PNG"
    render.image_settings.color_mode = "RGBA"
    render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = "Standard"
    if threads:
        render.threads_mode, render.threads = "FIXED", threads
    if engine == "workbench":
        render.engine = "BLENDER_WORKBENCH"
        scene.display.shading.light = "STUDIO"
        scene.display.shading.color_type = "TEXTURE"
    else:
        render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = samples
        scene.cycles.use_denoising = False
        world = bpy.data.worlds.new("white")
        world.use_nodes = True
        background = world.node_tree.nodes["Background"]
        background.inputs["Color"].default_value = (1.0, 1.0, 1.0, 1.0)
        background.inputs["Strength"].default_value = 1.0
        scene.world = world
    data = bpy.data.cameras.new("camera")
    data.lens_unit = "FOV"
    data.sensor_fit = "VERTICAL"
    data.angle_y = math.radians(fovy)
    data.clip_start, data.clip_end = 0.01, 100.0
    camera = bpy.data.objects.new("camera", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return scene, camera


def import_gltf(path: str | Path) -> None:
    bpy = import_bpy()
    with _quiet():
        result = bpy.ops.import_scene.gltf(filepath=str(path))
    if "FINISHED" not in result:
        raise ValueError(f"Blender could not import {path}")


def render_views(scene, camera, c2w: torch.Tensor, paths: list[Path]) -> None:
    """Render project c2w poses (V, 4, 4) to the PNG files `paths`."""
    from mathutils import Matrix

    bpy = import_bpy()
    world_to_blender = BLENDER_TO_WORLD.T.double()
    for pose, path in zip(c2w, paths):
        camera.matrix_world = Matrix((world_to_blender @ pose.double()).tolist())
        scene.render.filepath = str(path)
        with _quiet():
            bpy.ops.render.render(write_still=True)
