"""The official release's sampling defaults, per task: the one place they are written down.

`VideoMVSettings.for_task`, the pipelines' argument defaults, training validation and the export
tool all read them from here. Dependency-free, so any module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass

GREY = (128 / 255,) * 3  # the text model's training renders are composited on grey 128
WHITE = (1.0, 1.0, 1.0)  # the image model's on white

# 3D-aware sampling: skip the first 40 % of the DDIM steps, then reconstruct every 20 % of them
# (50 steps: loop indices 20, 30, 40).
AWARE_START_FRACTION = 0.4
AWARE_EVERY_FRACTION = 0.2


@dataclass(frozen=True)
class ReleaseDefaults:
    """What a model of one task generates by default: a `num_views` orbit at `elevation` degrees and
    `radius`, seen with vertical field of view `fovy` degrees on `background`, `num_inference_steps`
    DDIM steps with classifier-free guidance `guidance_scale`, at `resolution` pixels; `fps` is the
    frame-rate condition of the image model; the UNet's text context is the text encoder's last
    layer, or with `clip_skip` = k its k-th from the end through the final layer norm (the image
    model, as I2VGen-XL, takes the penultimate: 1)."""

    task: str
    elevation: float
    radius: float
    background: tuple[float, float, float]
    guidance_scale: float
    num_views: int = 24
    fovy: float = 49.1
    num_inference_steps: int = 50
    resolution: int = 256
    fps: int = 16
    clip_skip: int | None = None


TEXT = ReleaseDefaults(task="text", elevation=15.0, radius=2.0, background=GREY, guidance_scale=9.0)
IMAGE = ReleaseDefaults(task="image", elevation=5.0, radius=1.7, background=WHITE, guidance_scale=6.0, clip_skip=1)
TASKS = {"text": TEXT, "image": IMAGE}


def release_defaults(task: str) -> ReleaseDefaults:
    """The defaults of "text" or "image"."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    return TASKS[task]
