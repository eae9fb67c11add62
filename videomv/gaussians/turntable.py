"""A turntable video of a 3D result: the Gaussians (and optionally a mesh, side by side) rendered
on a full orbit at a chosen resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from videomv.geometry import orbit_cameras

from .gaussian_set import GaussianSet
from .render import render


def render_turntable(gaussians: GaussianSet, num_frames: int = 48, resolution: int = 256, elevation: float = 15.0,
                     radius: float = 2.0, fovy: float = 49.1, background=(1.0, 1.0, 1.0), mesh=None,
                     progress: bool = False) -> torch.Tensor:
    """(num_frames, 3, H, W) frames in [0, 1] on an orbit starting at azimuth 0; with a trimesh
    `mesh`, each frame is the Gaussians' render and the mesh's side by side (W = 2 * resolution)."""
    if not isinstance(gaussians, GaussianSet):
        raise TypeError(f"gaussians: expected a GaussianSet, got {type(gaussians).__name__}")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if not 16 <= resolution <= 4096:
        raise ValueError(f"resolution must be in [16, 4096] pixels, got {resolution}")
    cameras = orbit_cameras(num_frames, elevation, radius).to(gaussians.device)
    frames = []
    for i in tqdm(range(num_frames), desc="turntable", disable=not progress):
        with torch.no_grad():
            rgb = render(gaussians, cameras[i : i + 1], fovy, resolution, resolution, background)["rgb"].float().cpu()
        if mesh is not None:
            from videomv.mesh.render import render_mesh

            rgb = torch.cat([rgb, render_mesh(mesh, cameras[i : i + 1].cpu(), fovy, resolution, background)], -1)
        frames.append(rgb.clamp(0, 1))
    return torch.cat(frames)


def save_turntable(gaussians: GaussianSet, path_without_suffix: str | Path, fps: int = 16, **kwargs) -> Path:
    """Render (`render_turntable` keywords) and write `<path>.mp4` (a .gif without ffmpeg); the
    video appears complete or not at all. Returns the written path."""
    import shutil
    import tempfile

    from videomv.sampling.export import to_uint8, write_video

    frames = np.ascontiguousarray(to_uint8(render_turntable(gaussians, **kwargs)))
    path = Path(path_without_suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        written = write_video(frames, tmp / path.name, fps=fps)
        return written.replace(path.with_suffix(written.suffix))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
