"""Score distillation sampling (DreamFusion) on the latents of all views of a step.

For clean latents z of the rendered views, a timestep t and noise eps, with z_t = sqrt(a_t) z +
sqrt(1 - a_t) eps, the SDS gradient with respect to z is

    g = w(t) (eps_hat(z_t, t, cameras) - eps),

eps_hat the guided noise prediction (no gradient flows through the UNet). `sds_loss` is a
surrogate whose gradient with respect to z is exactly g; backpropagated through the VAE encoder
and the renderer it moves the 3D model's parameters.
"""

from __future__ import annotations

import torch

WEIGHTINGS = ("sds", "uniform")


def weight(alpha_bar: float, weighting: str) -> float:
    """w(t): "sds" = 1 - a_t (DreamFusion's choice), "uniform" = 1."""
    if weighting == "sds":
        return 1.0 - alpha_bar
    if weighting == "uniform":
        return 1.0
    raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def sds_gradient(prior, latents: torch.Tensor, t: int, noise: torch.Tensor, c2w: torch.Tensor, guidance_scale: float,
                 weighting: str = "sds") -> torch.Tensor:
    """g = w(t) (eps_hat(z_t) - eps) for clean latents (1, C, F, h, w) of the views at c2w (F, 4, 4)."""
    if latents.ndim != 5 or latents.shape[0] != 1:
        raise ValueError(f"latents: expected (1, C, F, h, w), got {tuple(latents.shape)}")
    if noise.shape != latents.shape:
        raise ValueError(f"noise: expected the latents' shape {tuple(latents.shape)}, got {tuple(noise.shape)}")
    if c2w.shape != (latents.shape[2], 4, 4):
        raise ValueError(f"c2w: expected ({latents.shape[2]}, 4, 4), one camera per view, got {tuple(c2w.shape)}")
    if not 0 <= int(t) < prior.num_train_timesteps:
        raise ValueError(f"t must be in [0, {prior.num_train_timesteps}), got {t}")
    a = prior.alpha_bar(t)
    z = latents.detach()
    noisy = a**0.5 * z + (1 - a) ** 0.5 * noise
    eps_hat = prior.predict_noise(noisy, t, c2w, guidance_scale)
    return weight(a, weighting) * (eps_hat - noise)


def sds_loss(latents: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """0.5 * |z - sg(z - g)|^2, summed: d loss / d z = g."""
    target = (latents - gradient).detach()
    return 0.5 * (latents - target).square().sum()
