"""`VideoMV`: the whole method behind one object — multi-view pipeline (text or image) + reconstructor
+ 3D-aware sampling — saved and loaded as one folder.

Folder layout (a diffusers pipeline folder with two additions):
    model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/, [image_encoder/, feature_extractor/]
    reconstructor/   model.safetensors + config.json (optional: without it no 3D-aware sampling)
    videomv.json     task ("text" | "image"), camera defaults, field of view, background
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from ..defaults import TEXT, release_defaults
from ..gaussians import GaussianSet
from ..io import atomic_directory
from ..models.conditioning import UNCONDITIONAL_IMAGE, is_bundled_clip_tokenizer
from ..models.latents import vae_encode
from ..geometry import check_c2w, orbit_cameras
from ..recon import Reconstructor
from .ddim import SAMPLERS, steps_for
from .aware import ReconstructionHook, aware_step_indices, find_orthogonal_views, orthogonal_cameras_for
from .model_folder import drop_source_paths, link_identical_components, require_empty_destination
from .pipeline import I2MVPipeline, T2MVPipeline, dtype_kwargs

SETTINGS_NAME = "videomv.json"
RECONSTRUCTOR_DIR = "reconstructor"


@dataclass
class VideoMVSettings:
    """What a trained model needs besides its weights; the fields of `videomv.defaults.ReleaseDefaults`
    (field defaults: the release's text model, `videomv.defaults.TEXT`)."""

    task: str = TEXT.task  # "text" | "image"
    num_views: int = TEXT.num_views
    elevation: float = TEXT.elevation
    radius: float = TEXT.radius
    fovy: float = TEXT.fovy
    background: tuple = TEXT.background  # as the training data is composited
    guidance_scale: float = TEXT.guidance_scale
    num_inference_steps: int = TEXT.num_inference_steps
    sampler: str = "ddim"  # or "dpmsolver++" (`videomv.sampling.ddim.SAMPLERS`), with its own num_inference_steps
    resolution: int = TEXT.resolution
    fps: int = TEXT.fps  # image model: the fps condition it was trained with
    clip_skip: int | None = TEXT.clip_skip  # text context: the encoder's last layer (None) or layer k before it
    unconditional_image: str = "embedding"  # image model: what guidance drops, the CLIP embedding or the "image"
    clean_input_view: bool = False  # image model: view 0 given as the input's clean latent (model.clean_input_view)
    # Where the official release's sampling differs from the paper's (see `videomv.sampling.parity`,
    # whose `release` preset sets these); the defaults are this project's behaviour.
    negative_prompt: str = ""  # text of the unconditional branch
    prompt_suffix: str = ""  # appended to text prompts that do not contain it yet (release: ", 3d asset")
    start_azimuth: float = 0.0  # azimuth (degrees) of view 0 of the default orbit
    aware_latents: str = "mode"  # 3D-aware step: re-encode renders with the VAE posterior "mode" or a seeded "sample"
    aware_render_size: int | None = None  # 3D-aware step: render at this size, then nearest-downsample to the views'
    reconstructor_camera_flip: bool = False  # hand the reconstructor c2w @ diag(1, -1, -1, 1) (release inference)

    def __post_init__(self):
        release_defaults(self.task)  # checks the task
        self.background = tuple(float(b) for b in self.background)
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {list(SAMPLERS)}, got {self.sampler!r}")
        if self.unconditional_image not in UNCONDITIONAL_IMAGE:
            raise ValueError(f"unconditional_image must be one of {list(UNCONDITIONAL_IMAGE)}, "
                             f"got {self.unconditional_image!r}")
        if self.task == "text" and self.unconditional_image != "embedding":
            raise ValueError("unconditional_image is for the image task; a text model has no image condition")
        if self.task == "text" and self.clean_input_view:
            raise ValueError("clean_input_view is for the image task; a text model has no input view")
        if self.aware_latents not in ("mode", "sample"):
            raise ValueError(f"aware_latents must be 'mode' or 'sample', got {self.aware_latents!r}")
        if self.aware_render_size is not None and self.aware_render_size < 1:
            raise ValueError(f"aware_render_size must be a positive size or None, got {self.aware_render_size}")

    def full_prompt(self, prompt: str) -> str:
        """`prompt` with `prompt_suffix` appended unless the prompt already contains it."""
        suffix = self.prompt_suffix
        if not suffix or suffix.strip(" ,").lower() in prompt.lower():
            return prompt
        return prompt + suffix

    def reconstructor_cameras(self, c2w: torch.Tensor) -> torch.Tensor:
        """The cameras the reconstructor (and the 3D-aware renders) use for views with c2w (..., 4, 4)."""
        if not self.reconstructor_camera_flip:
            return c2w
        return c2w @ torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])).to(c2w)

    @classmethod
    def read(cls, folder: str | Path) -> "VideoMVSettings":
        """The settings of a model folder (its `videomv.json`)."""
        settings_file = Path(folder) / SETTINGS_NAME
        if not settings_file.is_file():
            raise FileNotFoundError(f"{folder} is not a VideoMV model folder: {SETTINGS_NAME} is missing")
        return cls(**json.loads(settings_file.read_text()))

    @classmethod
    def for_task(cls, task: str, **overrides) -> "VideoMVSettings":
        """The release defaults of `task` (`videomv.defaults`), with `overrides` replacing some."""
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown settings {unknown}; the settings are {[f.name for f in fields(cls)]}")
        return cls(**{**asdict(release_defaults(task)), **overrides})


def task_of(pipeline) -> str:
    if isinstance(pipeline, T2MVPipeline):
        return "text"
    if isinstance(pipeline, I2MVPipeline):
        return "image"
    raise TypeError(f"pipeline: expected a T2MVPipeline or an I2MVPipeline, got {type(pipeline).__name__}")


def load_pipeline(path: str | Path, torch_dtype: torch.dtype = torch.float32) -> T2MVPipeline | I2MVPipeline:
    """A pipeline folder (model_index.json names its class) -> the pipeline, progress bar off."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        raise FileNotFoundError(f"pipeline: {path} is not a pipeline folder (model_index.json is missing)")
    classes = {c.__name__: c for c in (T2MVPipeline, I2MVPipeline)}
    name = json.loads(index.read_text()).get("_class_name")
    if name not in classes:
        raise ValueError(f"pipeline: {path} holds a {name!r}; expected one of {sorted(classes)}")
    pipeline = classes[name].from_pretrained(path, **dtype_kwargs(torch_dtype))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stored_as(part, dtype: torch.dtype):
    """`part` with its floating-point weights in `dtype`: itself when they already are (or it has
    none), else a converted copy, so the caller's model stays as it is."""
    if not isinstance(part, torch.nn.Module):
        return part
    tensors = [*part.parameters(), *part.buffers()]
    if all(t.dtype == dtype for t in tensors if t.is_floating_point()):
        return part
    return copy.deepcopy(part).to(dtype)


@dataclass
class VideoMVOutput:
    """images: (F, 3, H, W) in [0, 1], one per camera; cameras: (F, 4, 4) project c2w;
    gaussians: a reconstruction of the final views (None without a reconstructor);
    aware_steps: loop indices where the reconstruction replaced z0."""

    images: torch.Tensor
    cameras: torch.Tensor
    gaussians: GaussianSet | None
    aware_steps: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)


class VideoMV:
    """Text or image -> consistent views (+ 3D Gaussians). Load a model folder with `from_pretrained`,
    or join a stage-1 pipeline and a stage-2 reconstructor with `from_parts`; write one with
    `save_pretrained`; call the model with a prompt (text task) or an image (image task)."""

    def __init__(self, pipeline: T2MVPipeline | I2MVPipeline, reconstructor: Reconstructor | None,
                 settings: VideoMVSettings):
        expected = T2MVPipeline if settings.task == "text" else I2MVPipeline
        if not isinstance(pipeline, expected):
            raise TypeError(f"task {settings.task!r} needs a {expected.__name__}, got {type(pipeline).__name__}")
        self.pipeline, self.reconstructor, self.settings = pipeline, reconstructor, settings

    # ------------------------------------------------------------------------------------------ #
    # folders
    # ------------------------------------------------------------------------------------------ #

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        torch_dtype: torch.dtype = torch.float32) -> "VideoMV":
        """Load a model folder (see the module docstring) onto `device`, computing in `torch_dtype`."""
        path = Path(path)
        settings = VideoMVSettings.read(path)
        pipeline_cls = T2MVPipeline if settings.task == "text" else I2MVPipeline
        pipeline = pipeline_cls.from_pretrained(path, **dtype_kwargs(torch_dtype)).to(device)
        pipeline.set_progress_bar_config(disable=True)
        recon_dir = path / RECONSTRUCTOR_DIR
        reconstructor = Reconstructor.from_pretrained(recon_dir, device=device) if recon_dir.is_dir() else None
        return cls(pipeline, reconstructor, settings)

    @classmethod
    def from_parts(cls, pipeline: T2MVPipeline | I2MVPipeline | str | Path,
                   reconstructor: Reconstructor | str | Path | None = None,
                   settings: VideoMVSettings | dict | None = None,
                   torch_dtype: torch.dtype = torch.float32) -> "VideoMV":
        """Join a multi-view pipeline and a reconstructor into one model.

        pipeline: a `T2MVPipeline` / `I2MVPipeline` or a pipeline folder (what a stage-1 run exports
        to `<run>/final`); its class sets the task. reconstructor: a `Reconstructor`, its folder (a
        stage-2 run's `<run>/reconstructor`) or None (no 3D-aware sampling). settings: a
        `VideoMVSettings`, a dict of fields replacing the task's release defaults, or None (the
        release defaults). Folders are loaded computing in `torch_dtype`."""
        if isinstance(pipeline, (str, Path)):
            pipeline = load_pipeline(pipeline, torch_dtype)
        task = task_of(pipeline)
        if settings is None or isinstance(settings, dict):
            settings = VideoMVSettings.for_task(task, **(settings or {}))
        elif not isinstance(settings, VideoMVSettings):
            raise TypeError(f"settings: expected VideoMVSettings, a dict or None, got {type(settings).__name__}")
        elif settings.task != task:
            raise ValueError(f"settings: task {settings.task!r}, but the pipeline is a {task} pipeline")
        if isinstance(reconstructor, (str, Path)):
            reconstructor = Reconstructor.from_pretrained(reconstructor, device=pipeline.device, dtype=torch_dtype)
        elif reconstructor is not None and not isinstance(reconstructor, Reconstructor):
            raise TypeError(f"reconstructor: expected a Reconstructor, a folder or None, got {type(reconstructor).__name__}")
        return cls(pipeline, reconstructor, settings)

    def save_pretrained(self, path: str | Path, dtype: torch.dtype | None = None,
                        share_with: str | Path | None = None) -> Path:
        """Write the model folder `path` (it must not exist or be empty); it appears complete or not at all.

        dtype: storage precision of the weights (e.g. torch.float16; default: as they are in memory,
        which stay unchanged). share_with: another model folder; components byte-identical to its
        own are written as relative symlinks to them. Configs leave out `_name_or_path` (a path on
        this machine) and a tokenizer that is the bundled CLIP tokenizer is left out (loading falls
        back to it). Returns `path`."""
        path = Path(path)
        require_empty_destination(path, "model folder")
        if share_with is not None and not Path(share_with).is_dir():
            raise FileNotFoundError(f"share_with: {share_with} is not a folder")
        pipeline, reconstructor = self.pipeline, self.reconstructor
        if dtype is not None:
            pipeline = type(pipeline)(**{name: stored_as(part, dtype) for name, part in pipeline.components.items()})
            reconstructor = None if reconstructor is None else stored_as(reconstructor, dtype)
        with atomic_directory(path, replace=False) as tmp:
            pipeline.save_pretrained(tmp)
            if reconstructor is not None:
                reconstructor.save_pretrained(tmp / RECONSTRUCTOR_DIR)
            (tmp / SETTINGS_NAME).write_text(json.dumps(asdict(self.settings), indent=2))
            drop_source_paths(tmp)
            if is_bundled_clip_tokenizer(pipeline.tokenizer):
                shutil.rmtree(tmp / "tokenizer")
            if share_with is not None:
                link_identical_components(tmp, Path(share_with), final=path)
            tmp.chmod(0o777 & ~current_umask())  # a temporary folder starts private; the model folder is not
        return path

    # ------------------------------------------------------------------------------------------ #
    # latents <-> images
    # ------------------------------------------------------------------------------------------ #

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return self.pipeline.decode_latents(latents)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, F, 3, H, W) in [0, 1] -> (B, C, F, h, w) scaled latents: the posterior mode, or with
        `generator` a sample of the posterior drawn from it."""
        vae = self.pipeline.vae
        return vae_encode(vae, images * 2 - 1, vae.config.scaling_factor, sample=generator is not None,
                          generator=generator)

    # ------------------------------------------------------------------------------------------ #
    # generation
    # ------------------------------------------------------------------------------------------ #

    def default_cameras(self, num_views: int | None = None, elevation: float | None = None,
                        radius: float | None = None) -> torch.Tensor:
        s = self.settings
        return orbit_cameras(num_views or s.num_views, s.elevation if elevation is None else elevation,
                             s.radius if radius is None else radius, start_azimuth=s.start_azimuth)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | None = None,
        image: torch.Tensor | None = None,
        cameras: torch.Tensor | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        seed: int = 0,
        three_d_aware: bool = True,
        aware_steps: list[int] | None = None,
        branches: str = "both",
        negative_prompt: str | None = None,
        eta: float = 0.0,
        sampler: str | None = None,
        progress: bool = True,
    ) -> VideoMVOutput:
        """Generate views (and Gaussians) for one text prompt or one image ((3, H, W) in [0, 1]).

        cameras: (F, 4, 4) project c2w, default the model's orbit. When they do not contain 4
        orthogonal views for the reconstructor, 4 such views are generated alongside and dropped.
        aware_steps: loop indices for the reconstruction (default `aware_step_indices`). sampler:
        "ddim" or "dpmsolver++" (default: the model's `settings.sampler`)."""
        s = self.settings
        if s.task == "text":
            if image is not None or not isinstance(prompt, str) or not prompt.strip():
                raise ValueError("this is a text model: give a non-empty prompt and no image")
        elif image is None or not torch.is_tensor(image) or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError("this is an image model: give image as a (3, H, W) tensor in [0, 1]")
        if s.task == "text":
            prompt = s.full_prompt(prompt)
        if negative_prompt is None and s.negative_prompt:
            negative_prompt = s.negative_prompt
        sampler = sampler or s.sampler
        steps = num_inference_steps or steps_for(sampler, s.sampler, s.num_inference_steps)
        guidance = s.guidance_scale if guidance_scale is None else guidance_scale
        cameras = self.default_cameras() if cameras is None else check_c2w(cameras, "cameras")
        if cameras.ndim != 3:
            raise ValueError(f"cameras: expected (F, 4, 4), got {tuple(cameras.shape)}")
        num_requested = len(cameras)

        input_views = find_orthogonal_views(cameras) if self.reconstructor is not None else None
        if self.reconstructor is not None and input_views is None:
            cameras = torch.cat([cameras, orthogonal_cameras_for(cameras)])
            input_views = list(range(num_requested, num_requested + 4))
        schedule = (aware_step_indices(steps) if aware_steps is None else list(aware_steps)) if three_d_aware else []
        if schedule and self.reconstructor is None:
            raise ValueError("3D-aware sampling needs a reconstructor; this model has none (use three_d_aware=False)")

        hook = None
        if schedule:
            encode = self.encode
            if s.aware_latents == "sample":
                generator = torch.Generator("cpu").manual_seed(seed)
                encode = lambda images: self.encode(images, generator=generator)  # noqa: E731
            hook = ReconstructionHook(self.reconstructor, self.decode, encode, s.reconstructor_cameras(cameras[None]),
                                      s.fovy, s.background, schedule, input_views, guidance, branches,
                                      render_size=s.aware_render_size)
        common = dict(cameras=cameras[None], num_inference_steps=steps, guidance_scale=guidance, eta=eta, seed=seed,
                      sampler=sampler, height=s.resolution, width=s.resolution, z0_hook=hook, negative_prompt=negative_prompt,
                      clip_skip=s.clip_skip, output_type="pt", progress=progress)
        if s.task == "text":
            out = self.pipeline(prompt, **common)
        else:
            out = self.pipeline(image.float().clamp(0, 1), target_fps=s.fps, unconditional_image=s.unconditional_image,
                                clean_input_view=s.clean_input_view, **common)
        images = out.images[0].float()

        gaussians = None
        if self.reconstructor is not None:
            gaussians = self.reconstructor.reconstruct(images[None, input_views].to(self.pipeline.device),
                                                       s.reconstructor_cameras(cameras[None, input_views]),
                                                       fovy=s.fovy)[0]
        return VideoMVOutput(
            images=images[:num_requested].cpu(),
            cameras=cameras[:num_requested],
            gaussians=None if gaussians is None else gaussians.detach().to("cpu"),
            aware_steps=hook.calls if hook else [],
            settings=dict(task=s.task, prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, seed=seed,
                          sampler=sampler, three_d_aware=bool(schedule), aware_steps=schedule, branches=branches, eta=eta,
                          negative_prompt=negative_prompt, fovy=s.fovy, background=list(s.background)),
        )
