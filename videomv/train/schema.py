"""Typed run configurations: one dataclass tree per task (engine keys shared).

:func:`videomv.train.config.load_config` merges YAML and overrides onto one of these in OmegaConf
struct mode, so an unknown key fails with the closest valid names, a value of the wrong type fails
naming its key (``max_steps=3.9``, ``ema.enabled=nope``), and :func:`check_ranges` rejects values
out of range (``checkpoint.every=0``). Defaults here are the values the trainers use when a YAML
omits a key. Free-form model constructor arguments (``unet.init``, ``vae.init``, ...) stay dicts:
the model class checks them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional


# ----------------------------------------------------------------------------- engine
@dataclass
class OptimizerConfig:
    lr: float = 1e-4
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    eps: float = 1e-8
    # {trainable model name: factor}: that model's parameters learn at factor x lr (e.g. a text
    # encoder trained beside the UNet); models not named learn at lr
    lr_scale: Dict[str, float] = field(default_factory=dict)


@dataclass
class LRSchedulerConfig:
    name: str = "constant_with_warmup"  # any diffusers.optimization scheduler name
    warmup_steps: int = 0


@dataclass
class EMAConfig:
    enabled: bool = False
    decay: float = 0.9999
    update_after_step: int = 0


@dataclass
class CheckpointConfig:
    every: int = 500
    keep_last: int = 3


@dataclass
class LoggingConfig:
    every: int = 10
    trackers: List[str] = field(default_factory=lambda: ["tensorboard"])  # tensorboard | wandb
    project: str = "videomv"
    run_name: Optional[str] = None


@dataclass
class DataloaderConfig:
    batch_size: int = 1
    num_workers: int = 0


@dataclass
class DebugConfig:
    dump_param_checksum: bool = False


@dataclass
class DistributedConfig:
    timeout_s: float = 1800.0  # a process that does not answer for this long stops the run, named
    name_stopped_process: bool = True  # after a timed-out collective, find out which process stopped


@dataclass
class ValidationConfig:
    every: int = 0  # 0 disables periodic validation


@dataclass
class EngineConfig:
    output_dir: str = "runs/default"
    seed: int = 0
    max_steps: int = 1000  # length of the LR schedule and of the run
    stop_at: Optional[int] = None  # end (checkpoint and export) at this step, schedule unchanged
    time_limit_s: Optional[float] = None  # end (checkpoint and export) once this run's steps took this long
    mixed_precision: str = "no"  # no | fp16 | bf16
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0  # <= 0 disables clipping
    gradient_checkpointing: bool = False
    skip_nonfinite_loss: int = 0  # NaN/inf-loss steps that may be skipped before stopping
    resume: Optional[str] = None  # null | latest | auto (latest, else fresh) | a checkpoint folder
    overwrite: bool = False  # a fresh run may replace the records of an earlier run in output_dir
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    lr_scheduler: LRSchedulerConfig = field(default_factory=LRSchedulerConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    dataloader: DataloaderConfig = field(default_factory=DataloaderConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


# ----------------------------------------------------------------------------- data
@dataclass
class ToyDataConfig:
    num_objects: int = 2000
    resolution: int = 64
    seed: int = 0
    split: List[float] = field(default_factory=lambda: [0.9, 0.05, 0.05])
    workers: Optional[int] = None
    extra_train_objects: int = 0  # > 0: render this many more objects and list them in train_plus<N>.txt


@dataclass
class ImageDataConfig:
    root: Optional[str] = None
    probability: float = 0.0
    batch_size: int = 32
    caption_suffix: str = ""


@dataclass
class MultiViewDataConfig:
    root: str = "data/gobjaverse"
    toy: Optional[ToyDataConfig] = None  # build the toy world at root when missing
    objects: Optional[Any] = None  # object list file (relative to root) or a list
    val_objects: Optional[Any] = None
    captions: Optional[str] = None
    caption_suffix: str = ""
    resolution: int = 256
    num_views: int = 24
    window: Optional[int] = None  # random contiguous views per step; null = all
    background: Any = "grey"  # name or (r, g, b) in [0, 1]
    random_elevation_subset: bool = False
    text_dropout: float = 0.0
    caption_repeats: Optional[Dict[str, int]] = None  # {text: n}: items whose caption holds text enter each epoch n times
    image_dropout: float = 0.0  # image model: share of samples trained with the unconditional image condition
    unconditional_image: str = "embedding"  # what image_dropout drops: the CLIP "embedding", or the "image" too
    cache_latents: bool = False
    prompt: str = ""  # image -> MV: the fixed prompt
    image_data: Optional[ImageDataConfig] = None


# ----------------------------------------------------------------------------- stage 1
@dataclass
class ModelKindConfig:
    kind: str = "t2mv"  # t2mv | i2mv
    fps: int = 16
    clean_input_view: bool = False  # i2mv: the UNet sees view 0 as the clean image latent (not predicted)


@dataclass
class NoiseSchedulerConfig:
    preset: Optional[str] = "t2v_eps"
    overrides: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TimestepBiasConfig:
    share: float = 0.0  # share of training timesteps drawn from [start, T) instead of [0, T); 0: off
    start: int = 500


@dataclass
class VAESourceConfig:
    path: Optional[str] = None
    subfolder: Optional[str] = None
    init: Optional[Dict[str, Any]] = None
    scaling_factor: Optional[float] = None


@dataclass
class UNetSourceConfig:
    init: Optional[Dict[str, Any]] = None
    base: Optional[str] = None
    pretrained: Optional[str] = None
    subfolder: str = "unet"
    ray_map_fovy: Optional[float] = None  # give a loaded UNet a zero-initialised ray-map input (add_ray_map)
    cross_attention_gain: float = 1.0  # scale a new run's cross-attention query and key projections


@dataclass
class TextEncoderConfig:
    init: Optional[Dict[str, Any]] = None
    base: Optional[str] = None
    train: bool = False
    kwargs: Optional[Dict[str, Any]] = None
    extra_layers: int = 0  # layers appended to the loaded encoder, starting as the identity
    bidirectional_layers: int = 0  # the last n layers (appended ones included) attend both ways
    zero_padding: bool = False  # prompt embeddings after the end token are zero (kept in the encoder's config)


@dataclass
class ImageEncoderConfig:
    init: Optional[Dict[str, Any]] = None
    base: Optional[str] = None


@dataclass
class MultiViewValidationConfig(ValidationConfig):
    prompts: Optional[Any] = None  # a list, or a .txt / .json file
    num_views: int = 8
    steps: int = 20
    guidance_scale: Optional[float] = None  # null: 9 (text) / 6 (image)
    elevation: float = 15.0
    radius: float = 2.0
    num_objects: int = 2


@dataclass
class GroundingConfig:
    """Weights of the grounding losses of the text UNet's cross-attention (videomv.train.grounding;
    toy world only): where each caption word's attention goes, and how much of its part it takes."""

    token: float = 0.0
    pixel: float = 0.0


@dataclass
class MultiViewConfig(EngineConfig):
    base: Optional[str] = None  # a model folder or hub id the other keys may refer to as ${base}
    model: ModelKindConfig = field(default_factory=ModelKindConfig)
    noise_scheduler: NoiseSchedulerConfig = field(default_factory=NoiseSchedulerConfig)
    vae: VAESourceConfig = field(default_factory=VAESourceConfig)
    unet: UNetSourceConfig = field(default_factory=UNetSourceConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image_encoder: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    data: MultiViewDataConfig = field(default_factory=MultiViewDataConfig)
    validation: MultiViewValidationConfig = field(default_factory=MultiViewValidationConfig)
    min_snr_gamma: Optional[float] = None
    input_perturbation: float = 0.0  # DDPM-IP gamma: the UNet's input noise is eps + gamma * xi, the target eps
    object_weight: float = 0.0  # loss weight 1 + object_weight x alpha coverage per latent position
    grounding: GroundingConfig = field(default_factory=GroundingConfig)
    timestep_bias: TimestepBiasConfig = field(default_factory=TimestepBiasConfig)


# ----------------------------------------------------------------------------- stage 2
@dataclass
class ReconstructorSourceConfig:
    preset: str = "tiny"
    init_from: Optional[str] = None


@dataclass
class ReconInputsConfig:
    source: str = "ground_truth"  # ground_truth | generator
    t_max: int = 700
    views: str = "orthogonal"  # orthogonal | random


@dataclass
class GeneratorConfig:
    path: Optional[str] = None
    task: str = "text"  # text | image


@dataclass
class ReconLossConfig:
    views: Any = "all"  # "all" or a number of random supervised views
    alpha: float = 1.0
    lpips: float = 0.0
    lpips_net: str = "vgg"
    lpips_weights: Optional[str] = None


@dataclass
class ReconValidationConfig(ValidationConfig):
    num_objects: int = 4


@dataclass
class ReconConfig(EngineConfig):
    reconstructor: ReconstructorSourceConfig = field(default_factory=ReconstructorSourceConfig)
    inputs: ReconInputsConfig = field(default_factory=ReconInputsConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    loss: ReconLossConfig = field(default_factory=ReconLossConfig)
    data: MultiViewDataConfig = field(default_factory=MultiViewDataConfig)
    validation: ReconValidationConfig = field(default_factory=ReconValidationConfig)


# ----------------------------------------------------------------------------- toy VAE
@dataclass
class VAEValidationConfig(ValidationConfig):
    views: List[int] = field(default_factory=lambda: [0, 6, 12, 18])
    max_objects: Optional[int] = None


@dataclass
class VAEConfig(EngineConfig):
    vae: VAESourceConfig = field(default_factory=VAESourceConfig)
    data: MultiViewDataConfig = field(default_factory=MultiViewDataConfig)
    validation: VAEValidationConfig = field(default_factory=VAEValidationConfig)
    views_per_object: int = 4
    reconstruction_loss: str = "l1"  # l1 | mse
    kl_weight: float = 1e-6
    object_weight: float = 0.0  # reconstruction error weight 1 + object_weight x alpha per pixel
    latent_noise: float = 0.0  # decode latents + latent_noise x (batch latent std) x smooth N(0, 1)
    latent_noise_cell: int = 4  # the noise varies over this many latent pixels (1: independent)
    train_encoder: bool = True
    backgrounds: Optional[List[Any]] = None  # names or (r, g, b) triples


# ----------------------------------------------------------------------------- ranges
def _positive(v) -> bool:
    return v is not None and v > 0


# (key, test, what is expected); keys absent from a schema are not checked.
RANGES = [
    ("max_steps", lambda v: v >= 1, "an integer >= 1"),
    ("stop_at", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("time_limit_s", lambda v: v is None or v > 0, "null or a number of seconds > 0"),
    ("seed", lambda v: v >= 0, "an integer >= 0"),
    ("mixed_precision", lambda v: v in ("no", "fp16", "bf16"), "one of no, fp16, bf16"),
    ("gradient_accumulation_steps", lambda v: v >= 1, "an integer >= 1"),
    ("skip_nonfinite_loss", lambda v: v >= 0, "an integer >= 0"),
    ("optimizer.lr", _positive, "a number > 0"),
    ("optimizer.weight_decay", lambda v: v >= 0, "a number >= 0"),
    ("optimizer.eps", _positive, "a number > 0"),
    ("optimizer.betas", lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
    ("optimizer.lr_scale", lambda v: all(_positive(f) for f in v.values()), "{model name or model.module: factor > 0}"),
    ("lr_scheduler.warmup_steps", lambda v: v >= 0, "an integer >= 0"),
    ("ema.decay", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("ema.update_after_step", lambda v: v >= 0, "an integer >= 0"),
    ("checkpoint.every", lambda v: v >= 1, "an integer >= 1"),
    ("checkpoint.keep_last", lambda v: v >= 1, "an integer >= 1"),
    ("logging.every", lambda v: v >= 1, "an integer >= 1"),
    ("logging.trackers", lambda v: all(t in ("tensorboard", "wandb") for t in v), "a list of tensorboard, wandb"),
    ("validation.every", lambda v: v >= 0, "an integer >= 0 (0 disables)"),
    ("dataloader.batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("dataloader.num_workers", lambda v: v >= 0, "an integer >= 0"),
    ("distributed.timeout_s", _positive, "a number of seconds > 0"),
    ("model.kind", lambda v: v in ("t2mv", "i2mv"), "t2mv or i2mv"),
    ("text_encoder.extra_layers", lambda v: v >= 0, "an integer >= 0"),
    ("text_encoder.bidirectional_layers", lambda v: v >= 0, "an integer >= 0"),
    ("unet.cross_attention_gain", lambda v: v > 0, "a number > 0"),
    ("unet.ray_map_fovy", lambda v: v is None or 0 < v < 180, "null or a field of view in degrees in (0, 180)"),
    ("data.resolution", lambda v: v >= 1, "an integer >= 1"),
    ("data.num_views", lambda v: v >= 1, "an integer >= 1"),
    ("data.window", lambda v: v is None or v >= 1, "null or an integer >= 1"),
    ("data.text_dropout", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("data.image_dropout", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("data.unconditional_image", lambda v: v in ("embedding", "image"), "embedding or image"),
    ("data.image_data.probability", lambda v: 0 <= v <= 1, "a probability in [0, 1]"),
    ("min_snr_gamma", lambda v: v is None or v > 0, "null or a number > 0"),
    ("input_perturbation", lambda v: v >= 0, "a number >= 0 (0: off)"),
    ("timestep_bias.share", lambda v: 0 <= v <= 1, "a probability in [0, 1] (0: off)"),
    ("timestep_bias.start", lambda v: v >= 0, "an integer >= 0, below the scheduler's num_train_timesteps"),
    ("inputs.source", lambda v: v in ("ground_truth", "generator"), "ground_truth or generator"),
    ("inputs.t_max", lambda v: 0 <= v <= 999, "an integer in [0, 999]"),
    ("inputs.views", lambda v: v in ("orthogonal", "random"), "orthogonal or random"),
    ("generator.task", lambda v: v in ("text", "image"), "text or image"),
    ("loss.views", lambda v: v == "all" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
     '"all" or an integer >= 1'),
    ("loss.lpips", lambda v: v >= 0, "a number >= 0"),
    ("views_per_object", lambda v: v >= 1, "an integer >= 1"),
    ("reconstruction_loss", lambda v: v in ("l1", "mse"), "l1 or mse"),
    ("kl_weight", lambda v: v >= 0, "a number >= 0"),
    ("latent_noise", lambda v: v >= 0, "a number >= 0"),
    ("latent_noise_cell", lambda v: v >= 1, "an integer >= 1"),
    ("object_weight", lambda v: v >= 0, "a number >= 0"),
    ("grounding.token", lambda v: v >= 0, "a number >= 0"),
    ("grounding.pixel", lambda v: v >= 0, "a number >= 0"),
]
