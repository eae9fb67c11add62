"""Frames <-> video latents with a 2D VAE applied frame by frame: (B, F, 3, H, W) <-> (B, C, F, h, w)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def vae_encode(vae: AutoencoderKL, images: torch.Tensor, scaling_factor: float, sample: bool = True,
               chunk: int = 32, generator: torch.Generator | None = None) -> torch.Tensor:
    """(B, F, 3, H, W) in [-1, 1] -> scaled latents (B, C, F, h, w); `sample=False` takes the
    posterior mode (deterministic); a sample is drawn from `generator` when given."""
    b, f = images.shape[:2]
    flat = images.flatten(0, 1).to(device=vae.device, dtype=vae.dtype)
    parts = []
    for piece in flat.split(chunk):
        dist = vae.encode(piece).latent_dist
        parts.append(dist.sample(generator=generator) if sample else dist.mode())
    z = torch.cat(parts) * scaling_factor
    return z.unflatten(0, (b, f)).permute(0, 2, 1, 3, 4)


def vae_decode(vae: AutoencoderKL, latents: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """(B, C, F, h, w) scaled latents -> images (B, F, 3, H, W) in [-1, 1]."""
    b, _, f = latents.shape[:3]
    flat = latents.permute(0, 2, 1, 3, 4).flatten(0, 1) / scaling_factor
    return vae.decode(flat.to(vae.dtype)).sample.unflatten(0, (b, f))


def smooth_noise(shape: tuple[int, ...], cell: int, generator: torch.Generator | None = None,
                 device=None, dtype=None) -> torch.Tensor:
    """Gaussian noise of std 1 over the last two dims of `shape` that varies on the scale of `cell`
    latent pixels: drawn on a grid `cell` times coarser, upsampled bilinearly, rescaled to std 1.

    A diffusion model's errors are smooth like this (a whole part drawn a shade off), so a decoder
    cannot average them away as it averages independent noise per latent pixel (`cell` 1)."""
    if cell < 1:
        raise ValueError(f"cell: expected an integer >= 1, got {cell}")
    *lead, h, w = shape
    coarse = torch.randn((*lead, -(-h // cell), -(-w // cell)), generator=generator)
    if cell > 1:
        flat = coarse.reshape(-1, 1, *coarse.shape[-2:])
        coarse = torch.nn.functional.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False)
        coarse = coarse.reshape(*lead, h, w)
        coarse = coarse / coarse.std()
    return coarse.to(device=device, dtype=dtype)
