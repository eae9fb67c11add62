"""Text -> 3D Gaussians by multi-view score distillation from a VideoMV text model (paper Sec. 5.2).

Each step renders the Gaussians from a random orbit window (`random_orbit`), encodes the renders
with the VAE, and backpropagates the SDS gradient of all views, denoised jointly with the render
cameras as the UNet's camera condition. Progress is measured without CLIP: the PSNR of renders
against the model's own 3D-aware sample for the prompt at the sample's cameras.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from videomv.gaussians import GaussianSet, random_init, render
from videomv.geometry import orbit_cameras
from videomv.models.latents import vae_encode

from .config import DistillConfig
from .prior import MultiViewPrior
from .schedules import random_orbit, sample_timestep
from .sds import sds_gradient, sds_loss

RATES = {"means": 2e-3, "log_scales": 1e-2, "rotations": 1e-2, "opacity_logits": 5e-2, "color_logits": 5e-2}


def _logit(x: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    x = x.clamp(eps, 1 - eps)
    return torch.log(x / (1 - x))


class GaussianParameters(torch.nn.Module):
    """Unconstrained parameters of a GaussianSet (log scales, logits), activated on demand."""

    def __init__(self, init: GaussianSet):
        super().__init__()
        self.means = torch.nn.Parameter(init.means.clone())
        self.log_scales = torch.nn.Parameter(torch.log(init.scales.clamp_min(1e-8)))
        self.rotations = torch.nn.Parameter(init.rotations.clone())
        self.opacity_logits = torch.nn.Parameter(_logit(init.opacities))
        self.color_logits = torch.nn.Parameter(_logit(init.colors))

    def gaussians(self) -> GaussianSet:
        return GaussianSet(means=self.means, scales=self.log_scales.exp(), rotations=F.normalize(self.rotations, dim=-1),
                           opacities=torch.sigmoid(self.opacity_logits), colors=torch.sigmoid(self.color_logits))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a - b).square().mean())
    return -10 * math.log10(max(mse, 1e-12))


@dataclass
class DistillResult:
    """gaussians: the result; history: [{"step", "psnr"}] proxy evaluations; reference /
    reference_cameras: the model's own sample the proxy compares with; renders: the result at
    those cameras; seconds_per_step: mean wall time of an optimisation step."""

    gaussians: GaussianSet
    history: list = field(default_factory=list)
    reference: torch.Tensor | None = None
    reference_cameras: torch.Tensor | None = None
    renders: torch.Tensor | None = None
    seconds_per_step: float = 0.0
    losses: list = field(default_factory=list)


def distill(model, prompt: str, config: DistillConfig | None = None, progress: bool = True) -> DistillResult:
    """Optimise Gaussians for `prompt` with multi-view SDS from `model` (a text `VideoMV`)."""
    cfg = config or DistillConfig()
    s = model.settings
    if s.task != "text":
        raise ValueError(f"score distillation from a prompt needs a text model, this is a {s.task} model")
    pipe = model.pipeline
    device = pipe.device
    prior = MultiViewPrior(pipe, prompt)
    size = s.resolution
    background = torch.tensor(s.background)

    # the proxy's reference: the model's own 3D-aware sample on its default orbit
    ref_cameras = orbit_cameras(s.num_views, s.elevation, s.radius)
    ref = model(prompt=prompt, cameras=ref_cameras, num_inference_steps=cfg.reference_steps, seed=cfg.seed,
                three_d_aware=model.reconstructor is not None, progress=False).images

    generator = torch.Generator().manual_seed(cfg.seed)
    init = random_init(cfg.num_gaussians, cfg.init_radius, cfg.init_scale, generator=generator)
    params = GaussianParameters(init).to(device)
    optimizer = torch.optim.Adam([{"params": [getattr(params, k)], "lr": cfg.lr * r} for k, r in RATES.items()])

    def evaluate(step: int, history: list) -> torch.Tensor:
        with torch.no_grad():
            out = render(params.gaussians(), ref_cameras.to(device), s.fovy, size, size, background)["rgb"].cpu()
        history.append({"step": step, "psnr": psnr(out, ref)})
        return out

    history, losses = [], []
    evaluate(0, history)
    bar = tqdm(range(cfg.steps), desc="distill", disable=not progress)
    start = time.perf_counter()
    for step in bar:
        c2w = random_orbit(generator, cfg.orbit_views, cfg.views, tuple(cfg.elevation_range), cfg.radius)
        t = sample_timestep(step, cfg.steps, tuple(cfg.t_range), cfg.t_schedule, prior.num_train_timesteps, generator)
        noise = torch.randn((1, pipe.vae.config.latent_channels, cfg.views, size // pipe.vae_scale_factor,
                             size // pipe.vae_scale_factor), generator=generator).to(device)
        rgb = render(params.gaussians(), c2w.to(device), s.fovy, size, size, background.to(device))["rgb"]
        latents = vae_encode(pipe.vae, rgb[None] * 2 - 1, pipe.vae.config.scaling_factor, sample=False)
        gradient = sds_gradient(prior, latents, t, noise, c2w, cfg.guidance, cfg.weighting)
        loss = sds_loss(latents, gradient)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(gradient.square().mean()))
        last_step = step == cfg.steps - 1
        if last_step or (cfg.eval_every and (step + 1) % cfg.eval_every == 0):
            evaluate(step + 1, history)
            bar.set_postfix(t=t, psnr=f"{history[-1]['psnr']:.2f}")
    seconds = (time.perf_counter() - start) / cfg.steps
    renders = evaluate(cfg.steps, [])
    with torch.no_grad():
        final = params.gaussians().detach().to("cpu")
    return DistillResult(gaussians=final, history=history, reference=ref, reference_cameras=ref_cameras,
                         renders=renders, seconds_per_step=seconds, losses=losses)
