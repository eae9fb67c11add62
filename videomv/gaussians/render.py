"""`render`: one entry point, backend chosen at run time."""

from __future__ import annotations

import torch

from . import render_cuda as _cuda
from .gaussian_set import GaussianSet
from .render_torch import render_dense, render_tiled

BACKENDS = ("auto", "torch", "cuda", "dense")


def _check_inputs(gaussians, c2w, fovy_deg, height, width, background):
    if not isinstance(gaussians, GaussianSet):
        raise TypeError(f"render: gaussians must be a GaussianSet, got {type(gaussians).__name__}")
    if not isinstance(c2w, torch.Tensor) or c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        shape = tuple(c2w.shape) if isinstance(c2w, torch.Tensor) else type(c2w).__name__
        raise ValueError(f"render: c2w must be camera-to-world matrices of shape (V, 4, 4), got {shape}")
    if not 0.0 < float(fovy_deg) < 180.0:
        raise ValueError(f"render: fovy_deg must be in (0, 180) degrees, got {fovy_deg}")
    if int(height) < 1 or int(width) < 1:
        raise ValueError(f"render: height and width must be positive, got {height}x{width}")
    background = torch.as_tensor(background, dtype=gaussians.dtype, device=gaussians.device)
    if background.shape != (3,):
        raise ValueError(f"render: background must be 3 values (r, g, b), got shape {tuple(background.shape)}")
    return c2w.to(dtype=gaussians.dtype, device=gaussians.device), background


def render(
    gaussians: GaussianSet,
    c2w: torch.Tensor,
    fovy_deg: float,
    height: int,
    width: int,
    background=(1.0, 1.0, 1.0),
    backend: str = "auto",
    near_plane: float = 0.01,
) -> dict:
    """Render V views of `gaussians`.

    c2w: (V, 4, 4) project (OpenGL) camera-to-world poses; fovy_deg: vertical field of view; square
    pixels, principal point at the centre. backend: "torch" (tiled PyTorch, CPU/GPU), "cuda"
    (diff_gaussian_rasterization, CUDA tensors only), "dense" (slow reference) or "auto" (cuda when
    usable, else torch).
    Returns {"rgb": (V, 3, H, W), "alpha": (V, 1, H, W), "depth": (V, 1, H, W)}; depth is the
    alpha-composited view-space depth (sum of weight * z, not divided by alpha).
    """
    if backend not in BACKENDS:
        raise ValueError(f"render: backend must be one of {BACKENDS}, got {backend!r}")
    c2w, background = _check_inputs(gaussians, c2w, fovy_deg, height, width, background)
    cuda_ok = gaussians.device.type == "cuda" and _cuda.is_available()
    if backend == "cuda" and not cuda_ok:
        raise RuntimeError(
            "render: backend 'cuda' needs the diff_gaussian_rasterization package and CUDA tensors "
            f"(package importable: {_cuda.is_available()}, tensors on {gaussians.device})"
        )
    if backend == "cuda" or (backend == "auto" and cuda_ok):
        return _cuda.render_cuda(gaussians, c2w, fovy_deg, height, width, background, znear=near_plane)
    if backend == "dense":
        return render_dense(gaussians, c2w, fovy_deg, height, width, background, near_plane)
    return render_tiled(gaussians, c2w, fovy_deg, height, width, background, near_plane)
