"""A textured mesh from a generation: geometry carved from its Gaussians, colours baked from its
views, written as `mesh.glb` (one self-contained file) and `mesh.obj` + `mesh.mtl` + `mesh.png`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from videomv.io import atomic_write

from .extract import CarveSettings, gaussians_to_geometry
from .texture import bake_texture, check_views, vertex_colors

TEXTURE_MODES = ("uv", "vertex")


@dataclass
class MeshSettings:
    """carve: geometry settings; texture: "uv" (xatlas atlas + baked texture) or "vertex" (vertex
    colours); texture_size: baked texture side in texels; min_fraction: connected components
    smaller than this fraction of the largest one's area are dropped; tolerance: depth tolerance of
    the visibility test (world units)."""

    carve: CarveSettings = field(default_factory=CarveSettings)
    texture: str = "uv"
    texture_size: int = 512
    min_fraction: float = 0.05
    tolerance: float = 0.03

    def __post_init__(self):
        if self.texture not in TEXTURE_MODES:
            raise ValueError(f"texture must be one of {TEXTURE_MODES}, got {self.texture!r}")
        if not 0 <= self.min_fraction <= 1:
            raise ValueError(f"min_fraction must be in [0, 1], got {self.min_fraction}")


def textured_mesh(gaussians, images, cameras, fovy: float, settings: MeshSettings | None = None, progress: bool = False):
    """A `trimesh.Trimesh` with a baked texture (or vertex colours) of the object the Gaussians
    reconstruct, coloured from the posed `images` (V, 3, H, W) in [0, 1], `cameras` (V, 4, 4)."""
    import trimesh
    from PIL import Image

    s = settings or MeshSettings()
    images, cameras = check_views(images, cameras)  # before the slow part
    geometry = gaussians_to_geometry(gaussians, s.carve, s.min_fraction, progress)
    if s.texture == "vertex":
        colors = vertex_colors(geometry, images, cameras, fovy, s.tolerance)
        rgba = np.concatenate([(colors * 255).round(), np.full((len(colors), 1), 255)], 1).astype(np.uint8)
        return trimesh.Trimesh(geometry.vertices, geometry.faces, vertex_colors=rgba, process=False)
    vertices, faces, uvs, texture = bake_texture(geometry, images, cameras, fovy, s.texture_size, s.tolerance)
    # base colour factor 1: viewers multiply the texture by it (and by the OBJ's Kd made from it)
    material = trimesh.visual.material.PBRMaterial(name="mesh", baseColorTexture=Image.fromarray(texture),
                                                   baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0,
                                                   roughnessFactor=1.0)
    visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    return trimesh.Trimesh(vertices, faces, visual=visual, process=False)


def save_mesh(mesh, out_dir: str | Path, name: str = "mesh") -> dict:
    """Write `<name>.glb` and `<name>.obj` (+ its .mtl and texture image) atomically; returns {kind: path}."""
    import trimesh

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    glb = atomic_write(out_dir / f"{name}.glb", lambda tmp: tmp.write_bytes(mesh.export(file_type="glb")))
    text, files = trimesh.exchange.obj.export_obj(mesh, include_normals=False, return_texture=True,
                                                  mtl_name=f"{name}.mtl", header=None)
    written = {"mesh_glb": glb}
    for file_name, data in files.items():  # the .mtl and its texture image, names as the .obj refers to them
        atomic_write(out_dir / file_name, lambda tmp, data=data: tmp.write_bytes(data))
    written["mesh_obj"] = atomic_write(out_dir / f"{name}.obj", lambda tmp: tmp.write_text(text))
    return written


def export_mesh(gaussians, images, cameras, fovy: float, out_dir: str | Path, settings: MeshSettings | None = None,
                progress: bool = False) -> dict:
    """`textured_mesh` + `save_mesh`; returns {kind: path, "seconds": time taken}."""
    start = time.perf_counter()
    written = save_mesh(textured_mesh(gaussians, images, cameras, fovy, settings, progress), out_dir)
    return {**written, "seconds": time.perf_counter() - start}
