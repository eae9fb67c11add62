"""Image metrics in torch, batched: PSNR and SSIM (Wang et al. 2004) for images in [0, 1].

SSIM uses the standard settings: an 11-tap Gaussian window with sigma 1.5, K1 = 0.01, K2 = 0.03,
population (not sample) covariances, evaluated only where the window fits inside the image
("valid"), computed per channel and averaged over channels and pixels. This equals scikit-image's
`structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_RANGE_TOL = 1e-4


def check_images(x: torch.Tensor, name: str, value_range: tuple[float, float] | None = (0.0, 1.0)) -> torch.Tensor:
    """Validate a (B, C, H, W) or (C, H, W) image tensor; returns it as (B, C, H, W)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"{name}: expected images of shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected floating point images in [0, 1], got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: images contain NaN or inf")
    if value_range is not None and x.numel():
        lo, hi = value_range
        if x.min() < lo - _RANGE_TOL or x.max() > hi + _RANGE_TOL:
            raise ValueError(
                f"{name}: expected values in [{lo}, {hi}], got [{x.min().item():.4f}, {x.max().item():.4f}]"
            )
    return x


def _check_pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = check_images(pred, "pred"), check_images(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return pred, target


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction == "mean":
        return values.mean()
    raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, reduction: str = "none") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10 log10(range^2 / MSE); inf for identical images."""
    pred, target = _check_pair(pred, target)
    mse = (pred.double() - target.double()).pow(2).flatten(1).mean(1)
    values = 10.0 * torch.log10(data_range**2 / mse)
    return _reduce(values.float(), reduction)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1D Gaussian taps, float64."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(coords**2) / (2 * sigma**2))
    return taps / taps.sum()


def _blur(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filtering of (N, 1, H, W)."""
    k = taps.numel()
    x = F.conv2d(x, taps.view(1, 1, k, 1))
    return F.conv2d(x, taps.view(1, 1, 1, k))


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    win_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    reduction: str = "none",
) -> torch.Tensor:
    """Structural similarity per image (mean SSIM over valid pixels and channels)."""
    pred, target = _check_pair(pred, target)
    b, c, h, w = pred.shape
    if h < win_size or w < win_size:
        raise ValueError(f"pred/target: images must be at least {win_size}x{win_size} for SSIM, got {h}x{w}")
    x = pred.double().reshape(b * c, 1, h, w)
    y = target.double().reshape(b * c, 1, h, w)
    taps = gaussian_window(win_size, sigma)
    stats = _blur(torch.cat([x, y, x * x, y * y, x * y]), taps).split(b * c)
    mu_x, mu_y, xx, yy, xy = stats
    var_x, var_y, cov = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    values = ssim_map.reshape(b, -1).mean(1)
    return _reduce(values.float(), reduction)
