"""Textured meshes from generations: geometry carved from the Gaussians' renders, colours
projected from the generated views, written as .glb and .obj with trimesh."""

from .export import MeshSettings, export_mesh, save_mesh, textured_mesh
from .extract import CarveSettings, carved_occupancy, clean_mesh, gaussians_to_geometry
from .render import render_mesh
from .texture import bake_texture, project_colors, vertex_colors

__all__ = [
    "CarveSettings",
    "MeshSettings",
    "bake_texture",
    "carved_occupancy",
    "clean_mesh",
    "export_mesh",
    "gaussians_to_geometry",
    "project_colors",
    "render_mesh",
    "save_mesh",
    "textured_mesh",
    "vertex_colors",
]
