"""Training objectives, one function each: the diffusion loss (optionally min-SNR-γ weighted),
the VAE's KL term, the reconstructor's photometric loss, and the PSNR the trainers report.

The LPIPS network is a perceptual metric shared with evaluation; :func:`load_perceptual` is the one
place training reaches it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from .diffusion import snr


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, scheduler: DDPMScheduler, timesteps: torch.Tensor,
                   min_snr_gamma: float | None = None, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean-squared error, optionally weighted per sample with min-SNR-γ (Hang et al. 2023).

    Weight for eps-prediction: min(SNR, γ)/SNR; for v-prediction: min(SNR, γ)/(SNR + 1).
    With a zero-terminal-SNR schedule SNR(T)=0; weights there use the v form, which stays finite.
    `weight`, broadcastable to `pred` (e.g. (B, 1, F, h, w)), makes each sample's error the weighted
    mean over its elements (see `object_weights`).
    """
    err = (pred.float() - target.float()).pow(2)
    if weight is None:
        per_sample = err.flatten(1).mean(dim=1)
    else:
        weight = weight.float().expand_as(err)
        per_sample = (weight * err).flatten(1).sum(dim=1) / weight.flatten(1).sum(dim=1).clamp_min(1e-12)
    if not min_snr_gamma:
        return per_sample.mean()
    s = snr(scheduler, timesteps)
    clipped = torch.minimum(s, torch.full_like(s, float(min_snr_gamma)))
    if scheduler.config.prediction_type == "v_prediction":
        snr_weight = clipped / (s + 1.0)
    else:
        snr_weight = clipped / s.clamp_min(1e-8)
    return (snr_weight * per_sample).mean()


def object_weights(alphas: torch.Tensor, latent_size: tuple[int, int], object_weight: float) -> torch.Tensor:
    """Per-latent weights 1 + object_weight x coverage for views with alphas (B, F, 1, H, W): the
    coverage is the alpha averaged over the pixels each latent position encodes. Returns
    (B, 1, F, h, w), the latents' layout, so the object's positions count more than the background's
    (small parts take few latent positions)."""
    if alphas.ndim != 5 or alphas.shape[2] != 1:
        raise ValueError(f"alphas: expected (B, F, 1, H, W), got {tuple(alphas.shape)}")
    b, f = alphas.shape[:2]
    coverage = F.adaptive_avg_pool2d(alphas.flatten(0, 1).float(), latent_size)
    return (1 + object_weight * coverage).view(b, f, 1, *latent_size).permute(0, 2, 1, 3, 4)


def input_view_excluded(latents: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Loss weights for `latents` (B, C, F, h, w) that leave out view 0 (an image model given its
    input view clean predicts nothing there): `weight` (broadcastable to the latents, e.g. from
    `object_weights`; None: all 1) times a (B, 1, F, h, w) mask that is 0 at view 0."""
    b, _, f, h, w = latents.shape
    if f < 2:
        raise ValueError(f"latents: a clean input view leaves nothing to predict with {f} view(s); give at least 2")
    keep = torch.ones(b, 1, f, h, w, device=latents.device)
    keep[:, :, 0] = 0
    return keep if weight is None else weight * keep


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, kind: str = "l1",
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 or MSE of images (N, 3, H, W); with a per-pixel `weight` (N, 1, H, W), the weighted mean
    (sum of weight x error over the sum of weight x channels), so pixels of small objects count
    as much as their weight says rather than by their share of the image."""
    err = (recon - target).abs() if kind == "l1" else (recon - target).pow(2)
    if weight is None:
        return err.mean()
    weight = weight.expand_as(err)
    return (weight * err).sum() / weight.sum().clamp_min(1e-12)


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)), averaged over all latent elements."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def photometric_loss(rgb: torch.Tensor, alpha: torch.Tensor, target_rgb: torch.Tensor, target_alpha: torch.Tensor,
                     perceptual=None) -> dict[str, torch.Tensor]:
    """Renders (V, 3, H, W) and alphas (V, 1, H, W) against targets: ``mse_rgb``, ``mse_alpha`` and,
    with a perceptual network (e.g. LPIPS), ``lpips`` (mean over views)."""
    out = {"mse_rgb": F.mse_loss(rgb, target_rgb), "mse_alpha": F.mse_loss(alpha, target_alpha)}
    if perceptual is not None:
        out["lpips"] = perceptual(rgb, target_rgb).mean()
    return out


def load_perceptual(net: str = "vgg", weights_dir=None, device="cpu"):
    """LPIPS with real weights, or ``ValueError`` saying what is missing (never random weights)."""
    from videomv.eval.perceptual import MetricUnavailable, load_lpips

    try:
        return load_lpips(net, weights_dir=weights_dir, device=device)
    except MetricUnavailable as err:
        raise ValueError(f"needs real LPIPS weights: {err}") from None


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [0, 1] (mean squared error over all of them)."""
    mse = F.mse_loss(a.float().clamp(0, 1), b.float().clamp(0, 1)).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)
