"""The multi-view generator as a score-distillation prior: a text model's UNet called on all views
of a camera set at once, with classifier-free guidance, returning the predicted noise."""

from __future__ import annotations

import torch

from videomv.geometry import camera_vector
from videomv.models.denoise import MultiViewCondition, denoise
from videomv.sampling.ddim import guide, z0_and_eps


class MultiViewPrior:
    """Noise prediction of a text VideoMV pipeline for one prompt (embeddings computed once)."""

    def __init__(self, pipeline, prompt: str, negative_prompt: str | None = None):
        if not hasattr(pipeline, "text_conditioner") or hasattr(pipeline, "image_conditioner"):
            raise TypeError(f"score distillation needs a text -> views pipeline, got {type(pipeline).__name__}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError("prompt: expected a non-empty string")
        self.pipeline = pipeline
        self.scheduler = pipeline.scheduler
        with torch.no_grad():
            self.text = pipeline.encode_prompt([prompt], negative_prompt, do_cfg=True)  # [uncond; cond]
        for module in (pipeline.unet, pipeline.vae, pipeline.text_encoder):
            module.requires_grad_(False)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def alpha_bar(self, t: int) -> float:
        return float(self.scheduler.alphas_cumprod[int(t)])

    @torch.no_grad()
    def predict_noise(self, noisy: torch.Tensor, t: int, c2w: torch.Tensor, guidance_scale: float) -> torch.Tensor:
        """Guided noise prediction for (1, C, F, h, w) noisy latents of the views at c2w (F, 4, 4)."""
        device, dtype = noisy.device, noisy.dtype
        cameras = camera_vector(c2w.cpu())[None].to(device=device, dtype=dtype)
        timestep = torch.tensor(int(t), device=device)
        condition = MultiViewCondition(self.text.to(dtype), torch.cat([cameras, cameras]))
        out = denoise(self.pipeline.unet, torch.cat([noisy, noisy]), timestep, condition)
        eps_uncond = z0_and_eps(self.scheduler, out[:1], noisy, int(t))[1]
        eps_cond = z0_and_eps(self.scheduler, out[1:], noisy, int(t))[1]
        return guide(eps_uncond, eps_cond, guidance_scale)
