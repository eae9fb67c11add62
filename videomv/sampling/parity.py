"""The `release` preset: the official release's sampling (alibaba/VideoMV, its `tools/inferences/`,
`tools/modules/diffusions/diffusion_ddim.py`, `configs/*_infer.yaml`, `core/options.py`), setting by
setting. Models trained here keep this project's defaults (`VideoMVSettings`); a converted release
checkpoint gets this preset in its `videomv.json` (`tools/convert_release.py`).

Settings of `VideoMVSettings` (project default -> release):
- `fps`: the image model's frame-rate condition, 16 -> 8 (`target_fps: 8`).
- `negative_prompt`: the unconditional branch's text, "" -> `RELEASE_NEGATIVE_PROMPT` (both tasks;
  the release's image model also uses it).
- `prompt_suffix`: "" -> ", 3d asset", appended to text prompts that lack "3d asset".
- `aware_latents`: the 3D-aware step re-encodes renders with the VAE posterior "mode" -> "sample"
  (seeded from the sampling seed here; the release draws from the global CUDA generator).
- `aware_render_size`: None (render at the views' 256) -> 512, then nearest-neighbour downsampling.
- `background`: renders of the 3D-aware step, text 128/255 -> 0.5, image 1.0 -> 0.7.
- `fovy`: the reconstructor's field of view, 49.1 -> 39.6 (input rays and renders).
- `start_azimuth`: 0 -> 90: the release's default orbit (MVDream's `get_camera` turned into its
  G-Objaverse frame) is ours started 90 degrees later, see `tests/test_convert_parity.py`.
- `reconstructor_camera_flip`: False -> True. The release's inference negates the camera y and z
  axes (`gs_camera[:, :3, 1:3] *= -1`) before handing cameras to LGM and rendering, which its
  training does not do; the reconstructor then sees views 6/12/18 facing away from the object.
  Reproduced for parity only; the training geometry stays our default.

Reconstructor config (`reconstructor/config.json`): `lgm_release_rotation` True (LGM's
F.normalize across Gaussians), `rescale_cameras` False with `cam_radius` the orbit's radius (the
release moves view 0 to its true distance, no rescale to 1.5), `fovy` 39.6.

Elsewhere in the converted folder: the image scheduler's last step uses alphas_cumprod[0] as the
final alpha (`set_alpha_to_one` False, the release's DDIM), the text features are OpenCLIP's layer
23 + final LayerNorm (the text encoder is cut to 23 layers for the text model; the image pipeline
takes the penultimate of 24), and both tasks decode and encode with ModelScope-T2V's VAE.
"""

from __future__ import annotations

from diffusers import DDIMScheduler

from ..defaults import release_defaults
from .ddim import ddim_with, image_scheduler, text_scheduler
from .system import VideoMVSettings

RELEASE_NEGATIVE_PROMPT = ("Distorted, discontinuous, Ugly, blurry, low resolution, disfigured, disconnected limbs, "
                           "Ugly faces, incomplete arms")
RELEASE_FOVY = 39.6

RELEASE = {
    "text": dict(negative_prompt=RELEASE_NEGATIVE_PROMPT, prompt_suffix=", 3d asset", aware_latents="sample",
                 aware_render_size=512, background=(0.5, 0.5, 0.5), fovy=RELEASE_FOVY, start_azimuth=90.0,
                 reconstructor_camera_flip=True),
    "image": dict(fps=8, negative_prompt=RELEASE_NEGATIVE_PROMPT, aware_latents="sample", aware_render_size=512,
                  background=(0.7, 0.7, 0.7), fovy=RELEASE_FOVY, start_azimuth=90.0,
                  reconstructor_camera_flip=True),
}
PRESETS = ("project", "release")


def settings_for(task: str, preset: str = "project", **overrides) -> VideoMVSettings:
    """`VideoMVSettings` of `task` under `preset` ("project": this project's defaults; "release":
    the official release's sampling), with `overrides` on top."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    base = RELEASE[task] if preset == "release" else {}
    return VideoMVSettings.for_task(task, **{**base, **overrides})


def release_settings(task: str) -> VideoMVSettings:
    return settings_for(task, "release")


def release_reconstructor_settings(task: str) -> dict:
    """Reconstructor config fields for the release preset (see the module docstring)."""
    return dict(lgm_release_rotation=True, rescale_cameras=False, cam_radius=release_defaults(task).radius,
                fovy=RELEASE_FOVY)


def release_scheduler(task: str) -> DDIMScheduler:
    """Text: ModelScope's DDIM, as ours. Image: the last step's previous alpha is alphas_cumprod[0]."""
    if task == "text":
        return text_scheduler()
    return ddim_with(image_scheduler().config, set_alpha_to_one=False)
