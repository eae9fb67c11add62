"""The 3D outputs a generation can add to its folder: a textured mesh (`mesh.glb`, `mesh.obj`)
and a turntable video of the Gaussians (and the mesh)."""

from __future__ import annotations

from pathlib import Path

from ..defaults import TEXT
from .export import MeshSettings, save_mesh, textured_mesh


def save_3d_outputs(output, out_dir: str | Path, mesh: bool = False, turntable_resolution: int | None = None,
                    settings: MeshSettings | None = None, progress: bool = True) -> dict:
    """For a `VideoMVOutput` with Gaussians: write the mesh files (`mesh`) and `turntable.mp4`
    (`turntable_resolution` pixels per side, None for none; side by side with the mesh when both).
    Returns {name: path}."""
    from videomv.gaussians.turntable import save_turntable

    if not mesh and turntable_resolution is None:
        return {}
    if output.gaussians is None:
        raise ValueError("the mesh and the turntable need Gaussians: this model has no reconstructor")
    fovy = output.settings.get("fovy", TEXT.fovy)
    written, tri = {}, None
    if mesh:
        tri = textured_mesh(output.gaussians, output.images, output.cameras, fovy, settings, progress)
        written.update(save_mesh(tri, out_dir))
    if turntable_resolution is not None:
        from videomv.geometry import orbit_angles

        elevation, _, radius = (float(x.mean()) for x in orbit_angles(output.cameras))
        background = tuple(output.settings.get("background", (1.0, 1.0, 1.0)))
        written["turntable"] = save_turntable(output.gaussians, Path(out_dir) / "turntable", resolution=turntable_resolution,
                                              elevation=elevation, radius=radius, fovy=fovy, background=background,
                                              mesh=tri, progress=progress)
    return written
