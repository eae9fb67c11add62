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
