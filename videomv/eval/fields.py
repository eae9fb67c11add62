"""Scalar fields on a regular grid, for mesh extraction: Gaussian density and visual hulls.

Grid convention: `grid_points(resolution, bound)[i, j, k] = (x_i, y_j, z_k)`, each axis
`linspace(-bound, bound, resolution)`, in project world coordinates.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm import tqdm

from videomv.geometry.cameras import check_c2w, intrinsics_from_fov, opengl_to_opencv
from videomv.gaussians.gaussian_set import quaternion_to_matrix


def grid_axis(resolution: int, bound: float) -> torch.Tensor:
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    if bound <= 0:
        raise ValueError(f"bound must be positive, got {bound}")
    return torch.linspace(-bound, bound, resolution)


def grid_points(resolution: int, bound: float) -> torch.Tensor:
    """(R, R, R, 3) world coordinates of the grid's sample points."""
    axis = grid_axis(resolution, bound)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


def _check_gaussians(means, scales, rotations, opacities):
    means, scales, rotations = (torch.as_tensor(t, dtype=torch.float32) for t in (means, scales, rotations))
    opacities = torch.as_tensor(opacities, dtype=torch.float32).reshape(-1)
    n = means.shape[0]
    for name, t, shape in (("means", means, (n, 3)), ("scales", scales, (n, 3)), ("rotations", rotations, (n, 4))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} (activated values), got {tuple(t.shape)}")
    if opacities.shape != (n,):
        raise ValueError(f"opacities: expected {n} values (shape (N,) or (N, 1)), got {opacities.numel()}")
    if not (scales > 0).all():
        raise ValueError("scales: expected positive standard deviations (activated, not log-scales)")
    if (rotations.norm(dim=-1) < 1e-8).any():
        raise ValueError("rotations: quaternions must be non-zero")
    return means, scales, rotations, opacities


def gaussian_density(points, means, scales, rotations, opacities, chunk: int = 2**22) -> torch.Tensor:
    """Density sum_i o_i exp(-1/2 (p - mu_i)^T Sigma_i^-1 (p - mu_i)) at (P, 3) points, without culling."""
    means, scales, rotations, opacities = _check_gaussians(means, scales, rotations, opacities)
    points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
    # local = R^T (p - mu) / s, each axis in units of its sigma; as a matrix product d @ (R / s).
    to_local = quaternion_to_matrix(rotations) / scales[:, None, :]
    out = torch.zeros(points.shape[0])
    step = max(1, chunk // max(1, means.shape[0]))
    for start in range(0, points.shape[0], step):
        d = points[None, start : start + step] - means[:, None]  # (N, p, 3)
        q = torch.bmm(d, to_local).pow(2).sum(-1)  # (N, p)
        out[start : start + step] = (opacities[:, None] * torch.exp(-0.5 * q)).sum(0)
    return out


def gaussian_density_grid(
    means,
    scales,
    rotations,
    opacities,
    resolution: int = 128,
    bound: float = 1.0,
    cutoff: float = 4.0,
    chunk: int = 2**22,
    progress: bool = False,
) -> torch.Tensor:
    """Opacity-weighted Gaussian density on the grid, (R, R, R).

    Each Gaussian is splatted onto the grid points within a cube of half-width `cutoff` times its
    largest scale around its mean, so its density is dropped beyond `cutoff` standard deviations
    (at most exp(-cutoff^2 / 2) of its peak). Gaussians are grouped by window size and processed in
    chunks of about `chunk` (Gaussian, point) pairs. `cutoff=inf` evaluates every pair exactly.
    """
    means, scales, rotations, opacities = _check_gaussians(means, scales, rotations, opacities)
    axis = grid_axis(resolution, bound)
    if not math.isfinite(cutoff):
        return gaussian_density(grid_points(resolution, bound).reshape(-1, 3), means, scales, rotations, opacities, chunk).view(
            resolution, resolution, resolution
        )
    if cutoff <= 0:
        raise ValueError(f"cutoff must be positive, got {cutoff}")
    spacing = float(axis[1] - axis[0])
    to_local = quaternion_to_matrix(rotations) / scales[:, None, :]
    half = torch.ceil(cutoff * scales.max(-1).values / spacing).long().clamp(max=resolution)  # window half-width
    center = torch.round((means + bound) / spacing).long()  # nearest grid index
    field = torch.zeros(resolution**3)
    groups = torch.unique(half).tolist()
    bar = tqdm(total=means.shape[0], desc="gaussian density", disable=not progress)
    for w in groups:
        ids = torch.nonzero(half == w).squeeze(1)
        r = torch.arange(-w, w + 1)
        offsets = torch.stack(torch.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)  # (K, 3)
        step = max(1, chunk // offsets.shape[0])
        for start in range(0, ids.numel(), step):
            sel = ids[start : start + step]
            idx = center[sel, None, :] + offsets[None]  # (n, K, 3) grid indices
            inside = ((idx >= 0) & (idx < resolution)).all(-1)
            d = -bound + idx.float() * spacing - means[sel, None, :]  # grid point minus mean
            q = torch.bmm(d, to_local[sel]).pow(2).sum(-1)
            value = opacities[sel, None] * torch.exp(-0.5 * q)
            flat = (idx[..., 0] * resolution + idx[..., 1]) * resolution + idx[..., 2]
            field.index_add_(0, flat[inside], value[inside])
            bar.update(sel.numel())
    bar.close()
    return field.view(resolution, resolution, resolution)


def project_points(points: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """World (P, 3) points into V cameras: pixel coordinates (V, P, 2) (pixel centres at i + 0.5,
    as `get_rays`) and depth in front of the camera (V, P); depth <= 0 means behind it."""
    w2c = torch.linalg.inv(opengl_to_opencv(check_c2w(c2w)))  # OpenCV camera: x right, y down, z forward
    cam = points[None] @ w2c[:, :3, :3].transpose(-1, -2) + w2c[:, None, :3, 3]
    depth = cam[..., 2]
    k = intrinsics.expand(cam.shape[0], 3, 3)
    uv = torch.einsum("vpi,vji->vpj", cam, k)
    pix = uv[..., :2] / depth.clamp(min=1e-8)[..., None]
    return pix, depth


def visual_hull(
    masks: torch.Tensor,
    c2w: torch.Tensor,
    fovy_deg: float | None = None,
    intrinsics: torch.Tensor | None = None,
    resolution: int = 64,
    bound: float = 1.0,
    chunk: int = 2**18,
    progress: bool = False,
) -> torch.Tensor:
    """Soft visual hull from posed silhouettes, (R, R, R) in [0, 1].

    Each grid point takes the minimum over views of the bilinearly sampled alpha at its projection;
    a point projecting outside an image or behind a camera gets 0 (the object is assumed to be fully
    in view). Threshold at 0.5 (e.g. marching cubes level 0.5) for the carved shape.
    masks: (V, H, W) alpha in [0, 1]; c2w: (V, 4, 4) project poses; either `fovy_deg` (square pixels,
    centred principal point) or `intrinsics` (3, 3) or (V, 3, 3) in OpenCV pixel convention.
    """
    masks = torch.as_tensor(masks, dtype=torch.float32)
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3:
        raise ValueError(f"masks: expected (V, H, W) alpha, got {tuple(masks.shape)}")
    c2w = check_c2w(c2w)
    if c2w.shape != (masks.shape[0], 4, 4):
        raise ValueError(f"c2w: expected {(masks.shape[0], 4, 4)} to match the masks, got {tuple(c2w.shape)}")
    v, h, w = masks.shape
    if (fovy_deg is None) == (intrinsics is None):
        raise ValueError("visual_hull: give exactly one of fovy_deg or intrinsics")
    k = intrinsics_from_fov(fovy_deg, h, w) if intrinsics is None else torch.as_tensor(intrinsics, dtype=torch.float32)
    if k.shape not in ((3, 3), (v, 3, 3)):
        raise ValueError(f"intrinsics: expected (3, 3) or ({v}, 3, 3), got {tuple(k.shape)}")
    points = grid_points(resolution, bound).reshape(-1, 3)
    field = torch.empty(points.shape[0])
    for start in tqdm(range(0, points.shape[0], chunk), desc="visual hull", disable=not progress):
        pix, depth = project_points(points[start : start + chunk], c2w, k)
        grid = torch.stack([2 * pix[..., 0] / w - 1, 2 * pix[..., 1] / h - 1], dim=-1)  # (V, P, 2)
        alpha = F.grid_sample(masks[:, None], grid[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
        alpha = alpha[:, 0, 0]  # (V, P)
        inside = (grid.abs() <= 1).all(-1) & (depth > 0)
        field[start : start + chunk] = torch.where(inside, alpha, torch.zeros_like(alpha)).min(0).values
    return field.view(resolution, resolution, resolution)
