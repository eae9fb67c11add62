"""Diffusion training schedule: the noise scheduler, noise, targets, SNR (the loss is in ``losses``)."""

from __future__ import annotations

import warnings

import torch
from diffusers import DDPMScheduler

def _sampling_config(preset: str) -> dict:
    """The training schedule is the sampling scheduler's own (same betas, prediction type, zero-SNR
    rescaling), so training and DDIM sampling can never disagree."""
    from videomv.sampling.ddim import image_scheduler, text_scheduler

    scheduler = text_scheduler() if preset == "t2v_eps" else image_scheduler()
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "prediction_type",
            "rescale_betas_zero_snr", "clip_sample")
    return {k: scheduler.config[k] for k in keys}


# ModelScope-T2V: eps-prediction, "scaled_linear" betas 0.00085-0.012; I2VGen-XL: v-prediction,
# squaredcos_cap_v2 betas rescaled to zero terminal SNR; both 1000 training steps.
SCHEDULE_PRESETS = ("t2v_eps", "i2v_v_zero_snr")


def build_noise_scheduler(preset: str | None = "t2v_eps", **overrides) -> DDPMScheduler:
    """DDPM training scheduler from a preset name (see :data:`SCHEDULE_PRESETS`) plus overrides."""
    if preset is not None and preset not in SCHEDULE_PRESETS:
        raise ValueError(f"noise schedule preset must be one of {sorted(SCHEDULE_PRESETS)}, got {preset!r}")
    kwargs = _sampling_config(preset) if preset else {}
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    return DDPMScheduler(**kwargs)


def randn_as(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn in logical (row-major) order.

    ``torch.randn_like`` follows the memory layout of ``x``, so the same tensor held channels-last
    (as a VAE may return it) or contiguous (as read back from disk) gets different noise; a resumed
    run would then diverge from the uninterrupted one."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def sample_timesteps(num_train_timesteps: int, batch_size: int, device=None, later_share: float = 0.0,
                     later_from: int = 0) -> torch.Tensor:
    """Training timesteps, uniform over [0, T); with ``later_share`` > 0 that share of them is drawn
    uniformly from [later_from, T) instead. The noisy end is where only the condition decides colours
    and layout, so a phase can spend more of its steps there. Share 0 draws exactly what plain
    uniform sampling draws (one ``randint``), so runs without the bias are unchanged."""
    if not 0.0 <= later_share <= 1.0:
        raise ValueError(f"timestep_bias.share: expected a probability in [0, 1], got {later_share}")
    if not 0 <= later_from < num_train_timesteps:
        raise ValueError(f"timestep_bias.start: expected an integer in [0, {num_train_timesteps - 1}], got {later_from}")
    timesteps = torch.randint(0, num_train_timesteps, (batch_size,), device=device)
    if later_share:
        later = torch.randint(int(later_from), num_train_timesteps, (batch_size,), device=device)
        timesteps = torch.where(torch.rand(batch_size, device=device) < later_share, later, timesteps)
    return timesteps


def perturbed_noise(noise: torch.Tensor, gamma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The noise that goes into the UNet's input under input perturbation (DDPM-IP, Ning et al.
    2023): eps + gamma * xi with fresh xi, while the loss target keeps eps. The model then learns to
    undo inputs slightly off the forward process, as its own sampling steps make them (exposure
    bias). gamma = 0 returns `noise` itself and draws nothing."""
    if gamma < 0:
        raise ValueError(f"input_perturbation: expected a number >= 0, got {gamma}")
    return noise + gamma * randn_as(noise, generator) if gamma else noise


def snr(scheduler: DDPMScheduler, timesteps: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ᾱ_t / (1 - ᾱ_t) at integer ``timesteps``."""
    ac = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    return ac / (1.0 - ac).clamp_min(1e-20)


def diffusion_target(scheduler: DDPMScheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type {kind!r} (expected epsilon or v_prediction)")


def warn_min_snr_high_noise(scheduler: DDPMScheduler, min_snr_gamma: float | None) -> str | None:
    """Warn (and return the message) when min-SNR weights leave the noisiest steps almost untrained.

    In x0 terms the min-SNR weight is min(SNR, γ) for eps and v targets alike, so near the end of
    the schedule an x0 error counts about SNR(T) (exactly 0 with zero terminal SNR). Those are the
    steps where only the condition (prompt or input image) can tell colours and layout apart.
    """
    if not min_snr_gamma:
        return None
    last = scheduler.config.num_train_timesteps - 1
    terminal = float(snr(scheduler, torch.tensor([last]))[0])
    if terminal >= 0.01:
        return None
    message = (f"min_snr_gamma={min_snr_gamma}: an x0 error at t={last} is weighted by {terminal:.2g} "
               "(min(SNR, gamma)); the highest-noise steps, where the condition decides colours and layout, "
               "barely train. Set min_snr_gamma: null for plain MSE.")
    warnings.warn(message, stacklevel=2)
    return message

