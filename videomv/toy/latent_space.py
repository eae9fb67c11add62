"""How far apart a VAE keeps the toy palette's colours in its latent space.

A diffusion model's error lands in the scaled latents (std 1 by the VAE's scaling factor); two
colours whose latents lie closer than that error are drawn one for the other. `palette_latents`
encodes a flat square of each palette colour on the model's background and takes the scaled latent
at its centre; `nearest_colours` gives each colour's nearest other colour and the distance to it.
"""

from __future__ import annotations

import torch

from . import world


@torch.no_grad()
def palette_latents(model) -> dict[str, torch.Tensor]:
    """{colour: (C,) scaled latent at the centre of a flat square of that colour}, each square half
    the image side on the model's background at its resolution, encoded by the model's VAE."""
    s = model.settings
    size = s.resolution
    background = torch.as_tensor(s.background, dtype=torch.float32).reshape(3, 1, 1)
    images = []
    for rgb in world.PALETTE.values():
        image = background.expand(3, size, size).clone()
        image[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = torch.tensor(rgb).reshape(3, 1, 1)
        images.append(image)
    latents = model.encode(torch.stack(images)[None].to(model.pipeline.unet.dtype))[0].float()  # (C, F, h, w)
    h, w = latents.shape[-2:]
    centre = latents[:, :, h // 2 - 1: h // 2 + 1, w // 2 - 1: w // 2 + 1].mean((-1, -2))  # (C, F)
    return dict(zip(world.PALETTE, centre.T.cpu()))


def nearest_colours(latents: dict[str, torch.Tensor]) -> dict[str, tuple[str, float]]:
    """{colour: (its nearest other colour, Euclidean distance between their latents)}."""
    names = list(latents)
    if len(names) < 2:
        raise ValueError(f"latents: expected at least two colours, got {names}")
    stacked = torch.stack([latents[n] for n in names])
    distances = torch.cdist(stacked[None], stacked[None])[0].fill_diagonal_(float("inf"))
    nearest = distances.argmin(1)
    return {n: (names[int(j)], float(distances[i, j])) for i, (n, j) in enumerate(zip(names, nearest))}
