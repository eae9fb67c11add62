"""The one denoising loop: DDIM (diffusers' `DDIMScheduler`) or DPM-Solver++ (diffusers'
`DPMSolverMultistepScheduler`, second order, built from the model's DDIM configuration by
`scheduler_for`) with classifier-free guidance and a hook on the predicted z0 for 3D-aware sampling.

Latents are (B, C, F, h, w) video latents; frames are views.

z0 hook protocol
----------------
At each step index i (0-based, timestep t), after the UNet ran, the loop computes the predicted
clean latents of the conditional and the unconditional branch and calls

    z0_hook(i, t, z0_cond, z0_uncond, latents) -> None | (z0_cond_new, z0_uncond_new)

`latents` is z_t; `z0_uncond` is None without guidance (guidance_scale <= 1), and `z0_uncond_new`
is then ignored. Returning None keeps the model's prediction. Returning replacements (e.g. latents
re-encoded from renders of a reconstructed 3D model) makes the loop recompute each branch's noise
from its new z0, eps = (z_t - sqrt(a_t) z0) / sqrt(1 - a_t), re-apply guidance to the two
branches, and take the step from the guided (z0, eps). Tensors passed to and returned from
the hook have the latents' shape.
"""

from __future__ import annotations

from typing import Callable, Optional, Protocol

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler
from tqdm.auto import tqdm


class Z0Hook(Protocol):
    def __call__(
        self, step_index: int, timestep: torch.Tensor, z0_cond: torch.Tensor, z0_uncond: Optional[torch.Tensor],
        latents: torch.Tensor,
    ) -> Optional[tuple[torch.Tensor, Optional[torch.Tensor]]]: ...


def text_scheduler() -> DDIMScheduler:
    """ModelScope-T2V's DDIM configuration: eps-prediction, "scaled_linear" betas 0.00085-0.012
    (ModelScope's `linear_sd`), leading spacing with offset 1 (50 steps: t = 981, 961, ..., 1)."""
    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", clip_sample=False, set_alpha_to_one=False, steps_offset=1,
        timestep_spacing="leading",
    )


def image_scheduler(timestep_spacing: str = "leading") -> DDIMScheduler:
    """I2VGen-XL's DDIM configuration: v-prediction, cosine betas rescaled to zero terminal SNR.
    Published I2VGen-XL config and VideoMV's release use leading spacing with offset 1; "trailing"
    starts from the zero-SNR timestep 999 instead."""
    return DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
        rescale_betas_zero_snr=True, clip_sample=False, set_alpha_to_one=True, steps_offset=1,
        timestep_spacing=timestep_spacing,
    )


def ddim_with(config, **changes) -> DDIMScheduler:
    """A DDIM scheduler from a scheduler config with some values changed.

    diffusers' `from_config` resets every key a config lists in `_use_default_values` to its
    default, even when passed in, so a changed `rescale_betas_zero_snr` would silently be lost."""
    values = {k: v for k, v in dict(config).items() if k != "_use_default_values"}
    return DDIMScheduler.from_config({**values, **changes})


SAMPLERS = ("ddim", "dpmsolver++")
# Step counts for a sampler a model folder does not name as its own (`VideoMVSettings.sampler`).
DEFAULT_STEPS = {"ddim": 50, "dpmsolver++": 20}


def steps_for(sampler: str, model_sampler: str, model_steps: int) -> int:
    """Steps when none are asked for: the model's own count for its own sampler, else `DEFAULT_STEPS`."""
    return int(model_steps) if sampler == model_sampler else DEFAULT_STEPS[sampler]


def scheduler_for(sampler: str, ddim: DDIMScheduler) -> DDIMScheduler | DPMSolverMultistepScheduler:
    """The scheduler of `sampler` on the noise schedule of the model's DDIM scheduler `ddim` (same
    betas, zero-SNR rescaling, prediction type and timestep spacing): "ddim" is `ddim` itself,
    "dpmsolver++" the second-order multistep DPM-Solver++ (first order at the last step)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {list(SAMPLERS)}, got {sampler!r}")
    if not isinstance(ddim, DDIMScheduler):
        raise TypeError(f"the model's scheduler must be a DDIMScheduler to derive samplers from, got {type(ddim).__name__}")
    if sampler == "ddim":
        return ddim
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
            "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")
    return DPMSolverMultistepScheduler(**{k: ddim.config[k] for k in keys}, algorithm_type="dpmsolver++",
                                       solver_order=2, lower_order_final=True, final_sigmas_type="zero")


def _alpha(scheduler: DDIMScheduler, t, like: torch.Tensor) -> torch.Tensor:
    return scheduler.alphas_cumprod[int(t)].to(device=like.device, dtype=like.dtype)


def z0_and_eps(scheduler: DDIMScheduler, model_output: torch.Tensor, latents: torch.Tensor, t):
    """Predicted clean latents z0 and noise eps from the model output at timestep t."""
    a = _alpha(scheduler, t, latents)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        eps = model_output
        z0 = (latents - (1 - a).sqrt() * eps) / a.sqrt()
    elif kind == "v_prediction":
        z0 = a.sqrt() * latents - (1 - a).sqrt() * model_output
        eps = a.sqrt() * model_output + (1 - a).sqrt() * latents
    elif kind == "sample":
        z0 = model_output
        eps = (latents - a.sqrt() * z0) / (1 - a).sqrt()
    else:
        raise ValueError(f"scheduler prediction_type {kind!r} is not supported (epsilon, v_prediction, sample)")
    return z0, eps


def eps_from_z0(scheduler: DDIMScheduler, z0: torch.Tensor, latents: torch.Tensor, t) -> torch.Tensor:
    a = _alpha(scheduler, t, latents)
    return (latents - a.sqrt() * z0) / (1 - a).sqrt()


def model_output_from(scheduler: DDIMScheduler, z0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
    """Inverse of `z0_and_eps`: the model output that a consistent (z0, eps) pair corresponds to."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return eps
    if kind == "sample":
        return z0
    a = _alpha(scheduler, t, z0)
    return a.sqrt() * eps - (1 - a).sqrt() * z0  # v_prediction


def _repeated_known(known: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`known` (b, C, k, h, w) checked against latents `like` (B, C, F, h, w) and repeated to B."""
    if known.ndim != 5 or like.shape[0] % known.shape[0] or known.shape[1] != like.shape[1] \
            or known.shape[2] >= like.shape[2] or known.shape[3:] != like.shape[3:]:
        raise ValueError(f"known views: expected (b, C, k, h, w) with b dividing {like.shape[0]} and k < "
                         f"{like.shape[2]} views for latents {tuple(like.shape)}, got {tuple(known.shape)}")
    return known.to(like).repeat(like.shape[0] // known.shape[0], 1, 1, 1, 1)


def with_known_views(z0: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """`z0` (B, C, F, h, w) with its first k views set to `known` (b, C, k, h, w); b divides B, as
    when guidance stacks [uncond; cond]: every branch takes the same known views."""
    known = _repeated_known(known, z0)
    return torch.cat([known, z0[:, :, known.shape[2]:]], dim=2)


def output_with_known_views(scheduler, model_output: torch.Tensor, latents: torch.Tensor, t,
                            known: torch.Tensor) -> torch.Tensor:
    """The model output for `latents` at t with the first views' entries replaced by those that
    predict z0 = `known` (see `with_known_views`), noise consistent with their latents: any sampler
    stepping on it keeps those views on the path that ends exactly at `known`."""
    z0 = _repeated_known(known, model_output)
    views = z0.shape[2]
    eps = eps_from_z0(scheduler, z0, latents[:, :, :views], t)
    return torch.cat([model_output_from(scheduler, z0, eps, t), model_output[:, :, views:]], dim=2)


def guide(uncond: torch.Tensor, cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    return uncond + guidance_scale * (cond - uncond)


def _step(scheduler, model_output, t, latents, eta, generator) -> torch.Tensor:
    """One scheduler step on frames as images, (B, C, F, h, w) -> (B*F, C, h, w), as diffusers' video pipelines."""
    b, c, f, h, w = latents.shape
    flat = lambda x: x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # noqa: E731
    kwargs = dict(eta=eta) if isinstance(scheduler, DDIMScheduler) else {}
    prev = scheduler.step(flat(model_output), t, flat(latents), generator=generator, **kwargs).prev_sample
    return prev.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def set_step_count(scheduler: DDIMScheduler | DPMSolverMultistepScheduler, num_inference_steps: int, device=None) -> None:
    """`scheduler.set_timesteps`, refusing a count its spacing cannot give: for some counts
    "trailing" spacing adds a step at t = -1 and "leading" with an offset reaches t = T, and
    diffusers returns those timesteps without a word."""

    def fits(n: int) -> bool:
        scheduler.set_timesteps(n, device=device)
        t = scheduler.timesteps
        return len(t) == n and int(t.min()) >= 0 and int(t.max()) < scheduler.config.num_train_timesteps

    if not fits(num_inference_steps):
        steps = num_inference_steps
        last = min(scheduler.config.num_train_timesteps, steps + 10)
        near = sorted((n for n in range(max(1, steps - 10), last + 1) if fits(n)), key=lambda n: abs(n - steps))[:2]
        fits(steps)  # leave the scheduler as asked, for a caller that catches the error
        raise ValueError(f"the scheduler's {scheduler.config.timestep_spacing} spacing gives timesteps outside "
                         f"[0, {scheduler.config.num_train_timesteps - 1}] for {steps} steps; "
                         f"try {' or '.join(map(str, sorted(near)))}")


def ddim_sample(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    scheduler: DDIMScheduler | DPMSolverMultistepScheduler,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    z0_hook: Z0Hook | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Run the sampler of `scheduler` (DDIM, or DPM-Solver++ from `scheduler_for`) from the initial
    noise `latents` (B, C, F, h, w) and return the final latents. `eta` is DDIM's (0: deterministic).

    denoiser(model_input, t) returns the model output for `model_input`; with guidance
    (guidance_scale > 1) the input is [latents; latents] and the output must be [uncond; cond],
    the batch order of diffusers' pipelines.
    """
    if not isinstance(scheduler, (DDIMScheduler, DPMSolverMultistepScheduler)):
        raise TypeError(f"scheduler: expected a diffusers DDIMScheduler or DPMSolverMultistepScheduler, "
                        f"got {type(scheduler).__name__}")
    if eta != 0 and not isinstance(scheduler, DDIMScheduler):
        raise ValueError(f"eta={eta}: only the DDIM sampler takes eta; DPM-Solver++ here is deterministic")
    if latents.ndim != 5:
        raise ValueError(f"latents: expected shape (B, C, F, h, w), got {tuple(latents.shape)}")
    if num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    do_cfg = guidance_scale > 1.0
    set_step_count(scheduler, num_inference_steps, device=latents.device)
    latents = latents * scheduler.init_noise_sigma

    for i, t in enumerate(tqdm(scheduler.timesteps, desc="denoising", disable=not progress)):
        model_input = torch.cat([latents, latents]) if do_cfg else latents
        model_output = denoiser(scheduler.scale_model_input(model_input, t), t)
        if do_cfg:
            out_uncond, out_cond = model_output.chunk(2)
            guided = guide(out_uncond, out_cond, guidance_scale)
        else:
            out_uncond, out_cond, guided = None, model_output, model_output

        if z0_hook is not None:
            z0_cond = z0_and_eps(scheduler, out_cond, latents, t)[0]
            z0_uncond = z0_and_eps(scheduler, out_uncond, latents, t)[0] if do_cfg else None
            replaced = z0_hook(i, t, z0_cond, z0_uncond, latents)
            if replaced is not None:
                z0_cond, z0_uncond = replaced
                if z0_cond.shape != latents.shape or (do_cfg and z0_uncond.shape != latents.shape):
                    raise ValueError(f"z0_hook: replacements must have the latents' shape {tuple(latents.shape)}")
                eps_cond = eps_from_z0(scheduler, z0_cond, latents, t)
                if do_cfg:
                    z0 = guide(z0_uncond, z0_cond, guidance_scale)
                    eps = guide(eps_from_z0(scheduler, z0_uncond, latents, t), eps_cond, guidance_scale)
                else:
                    z0, eps = z0_cond, eps_cond
                guided = model_output_from(scheduler, z0, eps, t)

        latents = _step(scheduler, guided, t, latents, eta, generator)
    return latents
