"""The release's sampling settings, as written into a converted model folder."""

from __future__ import annotations

from diffusers import DDIMScheduler

from ..sampling.ddim import ddim_with, image_scheduler, text_scheduler
from ..sampling.system import VideoMVSettings


def release_scheduler(task: str) -> DDIMScheduler:
    """Text: ModelScope's DDIM as ours. Image: the release's last DDIM step uses alphas_cumprod[0]
    as the previous alpha, not 1.0 (set_alpha_to_one False)."""
    if task == "text":
        return text_scheduler()
    return ddim_with(image_scheduler().config, set_alpha_to_one=False)


def release_reconstructor_settings() -> dict:
    """LGM `big` as the release runs it: its quaternion activation (F.normalize across Gaussians)."""
    return dict(lgm_release_rotation=True)


def release_settings(task: str) -> VideoMVSettings:
    overrides = dict(fps=8) if task == "image" else {}
    return VideoMVSettings.for_task(task, **overrides)
