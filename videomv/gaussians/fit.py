"""Fit a GaussianSet to posed images by gradient descent on a photometric loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .gaussian_set import GaussianSet
from .render import render


def random_init(
    num_gaussians: int,
    radius: float = 0.6,
    scale: float = 0.03,
    opacity: float = 0.3,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> GaussianSet:
    """Gaussians uniformly distributed in a ball of `radius`, isotropic, grey, equal opacity."""
    if num_gaussians < 1:
        raise ValueError(f"random_init: num_gaussians must be >= 1, got {num_gaussians}")
    direction = F.normalize(torch.randn(num_gaussians, 3, generator=generator, dtype=torch.float64), dim=-1)
    r = radius * torch.rand(num_gaussians, 1, generator=generator, dtype=torch.float64) ** (1.0 / 3.0)
    return GaussianSet(
        means=direction * r,
        scales=torch.full((num_gaussians, 3), scale, dtype=torch.float64),
        rotations=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=torch.float64).repeat(num_gaussians, 1),
        opacities=torch.full((num_gaussians, 1), opacity, dtype=torch.float64),
        colors=torch.full((num_gaussians, 3), 0.5, dtype=torch.float64),
    ).to(dtype=dtype)


def _logit(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


def fit_gaussians(
    images: torch.Tensor,
    c2w: torch.Tensor,
    fovy_deg: float,
    num_gaussians: int = 2000,
    iters: int = 500,
    background=(1.0, 1.0, 1.0),
    init: GaussianSet | None = None,
    seed: int = 0,
    masks: torch.Tensor | None = None,
    loss: str = "l1",
    alpha_weight: float = 1.0,
    init_radius: float = 0.6,
    init_scale: float = 0.03,
    views_per_step: int | None = None,
    lr: float = 1.0,
    backend: str = "torch",
    progress: bool = True,
) -> GaussianSet:
    """Optimise Gaussians with Adam so their renders match `images`.

    images (V, 3, H, W) in [0, 1]; c2w (V, 4, 4) project poses; masks optional (V, 1, H, W) foreground
    masks in [0, 1] (adds an MSE loss on the rendered alpha). Starts from `init`, or from
    `num_gaussians` random Gaussians in a ball of `init_radius`. `lr` scales all learning rates.
    Deterministic for a given seed (on CPU).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"fit_gaussians: images must have shape (V, 3, H, W), got {tuple(images.shape)}")
    v, _, height, width = images.shape
    if c2w.shape != (v, 4, 4):
        raise ValueError(f"fit_gaussians: c2w must have shape ({v}, 4, 4) to match images, got {tuple(c2w.shape)}")
    if masks is not None and masks.shape != (v, 1, height, width):
        raise ValueError(f"fit_gaussians: masks must have shape ({v}, 1, {height}, {width}), got {tuple(masks.shape)}")
    if loss not in ("l1", "mse"):
        raise ValueError(f"fit_gaussians: loss must be 'l1' or 'mse', got {loss!r}")
    if iters < 0:
        raise ValueError(f"fit_gaussians: iters must be >= 0, got {iters}")

    generator = torch.Generator().manual_seed(seed)
    dtype, device = images.dtype, images.device
    if init is None:
        init = random_init(num_gaussians, init_radius, init_scale, generator=generator, dtype=dtype)
    init = init.detach().to(dtype=dtype, device=device)

    params = {
        "means": init.means.clone(),
        "log_scales": torch.log(init.scales.clamp_min(1e-8)),
        "rotations": init.rotations.clone(),
        "opacity_logits": _logit(init.opacities),
        "color_logits": _logit(init.colors),
    }
    for p in params.values():
        p.requires_grad_(True)
    rates = {"means": 2e-3, "log_scales": 1e-2, "rotations": 1e-2, "opacity_logits": 5e-2, "color_logits": 5e-2}
    optimizer = torch.optim.Adam([{"params": [params[k]], "lr": lr * r, "name": k} for k, r in rates.items()])

    def activated() -> GaussianSet:
        return GaussianSet(
            means=params["means"],
            scales=torch.exp(params["log_scales"]),
            rotations=F.normalize(params["rotations"], dim=-1),
            opacities=torch.sigmoid(params["opacity_logits"]),
            colors=torch.sigmoid(params["color_logits"]),
        )

    images = images.to(dtype)
    c2w = c2w.to(dtype=dtype, device=device)
    per_step = v if views_per_step is None else min(views_per_step, v)
    bar = tqdm(range(iters), desc="fit gaussians", disable=not progress)
    for step in bar:
        views = torch.randperm(v, generator=generator)[:per_step] if per_step < v else torch.arange(v)
        views = views.to(device)
        out = render(activated(), c2w[views], fovy_deg, height, width, background, backend=backend)
        target = images[views]
        diff = out["rgb"] - target
        value = diff.abs().mean() if loss == "l1" else diff.square().mean()
        if masks is not None:
            value = value + alpha_weight * (out["alpha"] - masks[views]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        value.backward()
        optimizer.step()
        if step % 10 == 0 or step == iters - 1:
            mse = diff.detach().square().mean().item()
            bar.set_postfix(loss=f"{value.item():.4f}", psnr=f"{-10 * math.log10(max(mse, 1e-12)):.2f}")
    with torch.no_grad():
        return activated().detach().clone()
