"""Writing a distillation's results to a folder."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import imageio.v2 as imageio
from omegaconf import OmegaConf

from videomv.gaussians import save_ply
from videomv.io import atomic_directory

from .config import DistillConfig
from .optimize import DistillResult


def save_distillation(result: DistillResult, config: DistillConfig, out_dir: str | Path, settings: dict | None = None,
                      video_resolution: int = 256, fovy: float = 49.1, background=(1.0, 1.0, 1.0)) -> dict:
    """Write gaussians.ply, views/ (renders at the reference cameras), grid.png,
    reference_grid.png (the model's own sample), turntable.mp4, history.json (proxy PSNR per
    evaluation, seconds per step) and config.yaml into `out_dir` (new or empty), all at once."""
    from videomv.gaussians.turntable import save_turntable
    from videomv.geometry import orbit_angles
    from videomv.sampling.export import make_grid, to_uint8

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} exists and is not empty")
    with atomic_directory(out_dir, replace=False) as tmp:
        save_ply(result.gaussians, tmp / "gaussians.ply")
        frames = to_uint8(result.renders)
        (tmp / "views").mkdir()
        for i, frame in enumerate(frames):
            imageio.imwrite(tmp / "views" / f"view_{i:03d}.png", frame)
        imageio.imwrite(tmp / "grid.png", make_grid(frames))
        imageio.imwrite(tmp / "reference_grid.png", make_grid(to_uint8(result.reference)))
        elevation, _, radius = (float(x.mean()) for x in orbit_angles(result.reference_cameras))
        video = save_turntable(result.gaussians, tmp / "turntable", resolution=video_resolution, elevation=elevation,
                               radius=radius, fovy=fovy, background=background)
        history = {"proxy": "PSNR of renders vs the model's own 3D-aware sample at its cameras",
                   "history": result.history, "seconds_per_step": result.seconds_per_step,
                   "sds_gradient_mean_square": result.losses}
        (tmp / "history.json").write_text(json.dumps(history, indent=1))
        (tmp / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create({**asdict(config), **(settings or {})})))
    names = ["gaussians.ply", "views", "grid.png", "reference_grid.png", video.name, "history.json", "config.yaml"]
    return {name: out_dir / name for name in names}
