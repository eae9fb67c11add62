"""3D-aware denoising (paper Sec. 3.4): at chosen DDIM steps, decode the predicted z0, reconstruct 3D
Gaussians from 4 orthogonal views, render every requested view, re-encode, and let the loop continue
from the "reconstructed z0".

It plugs into the one denoising loop (`videomv.sampling.ddim.ddim_sample`) as its `z0_hook`; plain
sampling is the same loop with an empty schedule.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from ..defaults import AWARE_EVERY_FRACTION, AWARE_START_FRACTION
from ..gaussians import GaussianSet, render
from ..geometry import check_c2w, orbit_angles, orbit_camera


def aware_step_indices(
    num_inference_steps: int,
    start_fraction: float = AWARE_START_FRACTION,
    every_fraction: float = AWARE_EVERY_FRACTION,
) -> list[int]:
    """Loop indices where the reconstruction replaces z0: skip the first `start_fraction` of the
    steps, then every `every_fraction` of them (50 steps -> [20, 30, 40])."""
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if not 0.0 <= start_fraction < 1.0 or not 0.0 < every_fraction <= 1.0:
        raise ValueError(
            f"start_fraction must be in [0, 1) and every_fraction in (0, 1], got {start_fraction}, {every_fraction}"
        )
    start = round(start_fraction * num_inference_steps)
    every = max(1, round(every_fraction * num_inference_steps))
    return list(range(start, num_inference_steps, every))


def find_orthogonal_views(c2w: torch.Tensor, tolerance_deg: float = 1.0) -> list[int] | None:
    """Indices of 4 views at azimuths a0, a0+90, a0+180, a0+270 (a0 = view 0's azimuth) with view 0's
    elevation and radius, or None when the cameras do not contain such views."""
    elevation, azimuth, radius = orbit_angles(check_c2w(c2w))
    picked = [0]
    for k in (1, 2, 3):
        wanted = orbit_camera(elevation[0], azimuth[0] + 90.0 * k, radius[0])[:3, 3]
        cosine = F.cosine_similarity(c2w[:, :3, 3], wanted.expand(len(c2w), 3), dim=-1)
        j = int(cosine.argmax())
        angle = math.degrees(math.acos(float(cosine[j].clamp(-1, 1))))
        if angle > tolerance_deg or abs(float(radius[j] - radius[0])) > 1e-3 * float(radius[0]):
            return None
        picked.append(j)
    return picked


def orthogonal_cameras_for(c2w: torch.Tensor) -> torch.Tensor:
    """The 4 orthogonal orbit cameras around view 0 (its elevation and radius), (4, 4, 4)."""
    elevation, azimuth, radius = orbit_angles(check_c2w(c2w)[:1])
    azimuths = azimuth[0] + torch.tensor([0.0, 90.0, 180.0, 270.0])
    return orbit_camera(elevation[0].expand(4), azimuths, radius[0].expand(4))


class ReconstructionHook:
    """`z0_hook` that swaps the predicted z0 for re-encoded renders of a reconstruction.

    decode(latents (B, C, F, h, w)) -> images (B, F, 3, H, W) in [0, 1];
    encode(images (B, F, 3, H, W) in [0, 1]) -> latents (B, C, F, h, w);
    reconstructor.reconstruct(images (B, 4, 3, H, W), c2w (B, 4, 4, 4), fovy=...) -> list of GaussianSet in the
    cameras' world. `cameras` (B, F, 4, 4) are the generated views; `input_views` the 4 frame
    indices given to the reconstructor. branches: "both" reconstructs the conditional and the
    unconditional z0 and guidance then combines the two re-encoded latents (the release);
    "guided" reconstructs only the guided z0 and uses it for both branches (half the cost).
    """

    def __init__(
        self,
        reconstructor,
        decode: Callable[[torch.Tensor], torch.Tensor],
        encode: Callable[[torch.Tensor], torch.Tensor],
        cameras: torch.Tensor,
        fovy_deg: float,
        background: Sequence[float],
        steps: Sequence[int],
        input_views: Sequence[int] = (0, 6, 12, 18),
        guidance_scale: float = 1.0,
        branches: str = "both",
        render_backend: str = "auto",
        render_size: int | None = None,
    ):
        if branches not in ("both", "guided"):
            raise ValueError(f"branches must be 'both' or 'guided', got {branches!r}")
        if cameras.ndim != 4 or cameras.shape[-2:] != (4, 4):
            raise ValueError(f"cameras: expected (B, F, 4, 4), got {tuple(cameras.shape)}")
        if len(input_views) != 4 or not all(0 <= i < cameras.shape[1] for i in input_views):
            raise ValueError(f"input_views: expected 4 frame indices below {cameras.shape[1]}, got {list(input_views)}")
        self.reconstructor = reconstructor
        self.decode, self.encode = decode, encode
        self.cameras = cameras.float()
        self.fovy_deg = float(fovy_deg)
        self.background = tuple(float(b) for b in background)
        self.steps = set(int(s) for s in steps)
        self.input_views = list(input_views)
        self.guidance_scale = guidance_scale
        self.branches = branches
        self.render_backend = render_backend
        self.render_size = render_size  # render at this size, then nearest-downsample (the release: 512)
        self.calls: list[int] = []  # loop indices where the reconstruction was used
        self.gaussians: list[GaussianSet] | None = None  # the latest reconstruction (conditional)

    @torch.no_grad()
    def reconstruct(self, views: torch.Tensor) -> list[GaussianSet]:
        """Gaussians from the decoded input views (B, 4, 3, H, W) in [0, 1]."""
        cams = self.cameras[:, self.input_views].to(views.device)
        return self.reconstructor.reconstruct(views.clamp(0, 1), cams, fovy=self.fovy_deg)

    @torch.no_grad()
    def render_views(self, gaussians: list[GaussianSet], height: int, width: int) -> torch.Tensor:
        """Render every generated view of each batch element: (B, F, 3, H, W) in [0, 1]. With
        `render_size`, rendered at render_size^2 and brought to (H, W) by nearest-neighbour sampling."""
        size = (height, width) if self.render_size is None else (self.render_size, self.render_size)
        out = []
        for g, cams in zip(gaussians, self.cameras):
            rgb = render(g, cams.to(g.device), self.fovy_deg, *size, self.background, self.render_backend)["rgb"]
            if size != (height, width):
                rgb = F.interpolate(rgb, size=(height, width), mode="nearest")
            out.append(rgb.clamp(0, 1))
        return torch.stack(out)

    @torch.no_grad()
    def reconstructed_z0(self, z0: torch.Tensor) -> tuple[torch.Tensor, list[GaussianSet]]:
        views = self.decode(z0[:, :, self.input_views])  # only the reconstructor's views are decoded
        gaussians = self.reconstruct(views)
        renders = self.render_views(gaussians, views.shape[-2], views.shape[-1])
        return self.encode(renders.to(views.dtype)).to(z0.dtype), gaussians

    def __call__(self, step_index, timestep, z0_cond, z0_uncond, latents):
        if step_index not in self.steps:
            return None
        self.calls.append(step_index)
        if z0_uncond is None:
            new_cond, self.gaussians = self.reconstructed_z0(z0_cond)
            return new_cond, None
        if self.branches == "guided":
            guided = z0_uncond + self.guidance_scale * (z0_cond - z0_uncond)
            new, self.gaussians = self.reconstructed_z0(guided)
            return new, new
        new_cond, self.gaussians = self.reconstructed_z0(z0_cond)
        new_uncond, _ = self.reconstructed_z0(z0_uncond)
        return new_cond, new_uncond
