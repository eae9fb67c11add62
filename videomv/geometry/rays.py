"""Per-pixel camera rays and the Plücker embedding fed to the reconstructor (as LGM builds them)."""

from __future__ import annotations

import torch

from .cameras import check_c2w, focal_from_fov


def get_rays(c2w: torch.Tensor, height: int, width: int, fovy_deg: float):
    """Ray origins and unit directions through pixel centres, world frame.

    c2w: (..., 4, 4) project (OpenGL) poses. Returns two tensors of shape (..., height, width, 3).
    """
    c2w = check_c2w(c2w)
    focal = focal_from_fov(fovy_deg, height)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float32, device=c2w.device),
        torch.arange(width, dtype=torch.float32, device=c2w.device),
        indexing="ij",
    )
    # OpenGL camera: +x right, +y up, looking along -z; image rows grow downwards.
    dirs_cam = torch.stack(
        [(xs + 0.5 - width / 2) / focal, -(ys + 0.5 - height / 2) / focal, -torch.ones_like(xs)], dim=-1
    )
    rot = c2w[..., None, None, :3, :3]
    dirs = torch.nn.functional.normalize((rot @ dirs_cam[..., None]).squeeze(-1), dim=-1)
    origins = c2w[..., None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def plucker_rays(c2w: torch.Tensor, height: int, width: int, fovy_deg: float) -> torch.Tensor:
    """Plücker embedding (o x d, d) as channels: (..., 6, height, width)."""
    origins, dirs = get_rays(c2w, height, width, fovy_deg)
    plucker = torch.cat([torch.linalg.cross(origins, dirs, dim=-1), dirs], dim=-1)
    return plucker.movedim(-1, -3).contiguous()
