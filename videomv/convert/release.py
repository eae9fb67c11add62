"""Official release checkpoint + diffusers base folder -> a VideoMV model folder.

What comes from where:
- camera UNet: the checkpoint's UNet weights (renamed, see `keymap`), shaped by the base's UNet config;
- reconstructor: the checkpoint's `lgm_big.*` weights (LGM `big`); `lpips_loss.*` (LGM's training
  loss network) is reported and left out;
- text encoder, tokenizer (and for the image task image encoder, feature extractor): the base;
- VAE: ModelScope-T2V's for both tasks, as the release decodes and encodes with it (for the text
  task that is the base's; for the image task it is read from `vae` / `vae_subfolder`);
- scheduler and `videomv.json`: the release's sampling settings.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..io import atomic_directory
from ..models.camera_unet import MULTIVIEW_CONFIG_KEYS
from ..models.conditioning import bundled_clip_tokenizer, uses_bundled_tokenizer
from ..models.i2mv_unet import I2MVUNet
from ..models.t2mv_unet import T2MVUNet
from ..models.text_encoder import text_transformer
from ..recon import Reconstructor, get_preset, infer_preset
from ..recon.checkpoint import IGNORED_PREFIXES, check_state_dict
from .checkpoint import load_release_checkpoint
from .keymap import check_against, convert_unet_state_dict

MODELSCOPE_T2V = "damo-vilab/text-to-video-ms-1.7b"
# OpenCLIP ViT-H/14 has 24 layers; the release takes the output of layer 23 plus the final LayerNorm.
RELEASE_TEXT_LAYERS = 23


@dataclass
class ConversionReport:
    task: str
    checkpoint: str
    step: int | None
    unet_keys: int
    unet_params: int
    reconstructor_keys: int
    reconstructor_preset: str
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            f"{self.checkpoint} (step {self.step}): task {self.task}",
            f"  UNet: {self.unet_keys} release keys -> camera UNet ({self.unet_params / 1e6:.1f}M parameters)",
            f"  reconstructor: {self.reconstructor_keys} lgm_big.* keys -> preset {self.reconstructor_preset!r}",
        ]
        if self.ignored_keys:
            lines.append(f"  left out (LGM training loss network): {len(self.ignored_keys)} lgm_big.lpips_loss.* keys")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def unet_class(task: str):
    if task not in ("text", "image"):
        raise ValueError(f"--task must be 'text' or 'image', got {task!r}")
    return T2MVUNet if task == "text" else I2MVUNet


def unet_config(base: str, task: str) -> dict:
    """The camera UNet's config from the base's `unet/` config (a diffusers base or a VideoMV folder)."""
    cls = unet_class(task)
    config = dict(cls.base_class.load_config(base, subfolder="unet"))
    names = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in names and k not in MULTIVIEW_CONFIG_KEYS}


def build_camera_unet(release_unet: dict[str, torch.Tensor], config: dict, task: str, source: str):
    """Convert the release UNet weights and load them into a camera UNet with `config`.

    The model is built on the meta device, so the weights are held once."""
    cls = unet_class(task)
    with torch.device("meta"):
        model = cls.from_config(config)
    full_config = dict(model.config)
    conversion = convert_unet_state_dict(release_unet, full_config, task)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_against(conversion, expected, source)
    model.load_state_dict(conversion.state_dict, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{source}: tensors left without weights after loading: {left[:10]}")
    return model.eval()


def build_reconstructor(state: dict[str, torch.Tensor], source: str, **settings) -> tuple[Reconstructor, str, list[str]]:
    """The reconstructor from the checkpoint's `lgm_big.*` weights, with the preset whose shapes
    they fit (`big` in every release file); returns it, the preset name and the keys left out."""
    if not state:
        raise ValueError(f"{source}: no lgm_big.* keys; a release checkpoint carries its LGM reconstructor")
    ignored = sorted(k for k in state if k.startswith(IGNORED_PREFIXES))
    weights = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    try:
        preset = infer_preset(weights)
    except ValueError as err:
        raise ValueError(f"{source} (lgm_big.*): {err}") from None
    config = get_preset(preset, **settings)
    with torch.device("meta"):
        model = Reconstructor(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(expected, weights, source=f"{source} (lgm_big.*)")
    model.load_state_dict({k: v.float() for k, v in weights.items()}, assign=True)
    return model.eval(), preset, [f"lgm_big.{k}" for k in ignored]


def release_text_encoder(base: str, task: str) -> tuple[CLIPTextModel, str | None]:
    """The base's text encoder, cut to the layer whose output the release uses where needed.

    The release's text features are OpenCLIP ViT-H/14's layer 23 (of 24) + final LayerNorm. Text
    task: our text pipeline takes the last hidden state, so a 24-layer encoder loses its last layer
    (ModelScope's diffusers folder already has 23). Image task: the image pipeline takes the
    penultimate layer (clip_skip 1), so the encoder must keep all 24 (I2VGen-XL's folder has)."""
    encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    layers = encoder.config.num_hidden_layers
    if task == "text" and layers == RELEASE_TEXT_LAYERS + 1:
        body = text_transformer(encoder)
        body.encoder.layers = body.encoder.layers[:RELEASE_TEXT_LAYERS]
        encoder.config.num_hidden_layers = RELEASE_TEXT_LAYERS
        return encoder, f"text encoder: kept {RELEASE_TEXT_LAYERS} of {layers} layers (the release's penultimate layer)"
    if task == "image" and layers == RELEASE_TEXT_LAYERS:
        raise ValueError(
            f"--base {base}: its text encoder has {layers} layers; the image pipeline takes the penultimate layer, "
            f"so the release's features (layer {RELEASE_TEXT_LAYERS} + final LayerNorm) need all "
            f"{RELEASE_TEXT_LAYERS + 1} layers (use I2VGen-XL's text encoder)"
        )
    if layers not in (RELEASE_TEXT_LAYERS, RELEASE_TEXT_LAYERS + 1):
        return encoder, (f"text encoder: {layers} layers, not OpenCLIP ViT-H/14's 24; kept as is "
                         "(its features are not the release's)")
    return encoder, None


def load_tokenizer(base: str) -> CLIPTokenizer:
    if uses_bundled_tokenizer(base):
        return bundled_clip_tokenizer()
    return CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")


def convert_release(task: str, checkpoint: str | Path, base: str, out: str | Path, vae: str | None = None,
                    vae_subfolder: str = "vae", progress: bool = True) -> ConversionReport:
    """Write a VideoMV model folder at `out` from a release checkpoint and a diffusers base.

    `vae`: where the ModelScope-T2V VAE is read from (folder or hub id); default: the base for the
    text task, ModelScope-T2V's hub id for the image task (the release's image model uses that VAE)."""
    from ..sampling.model_folder import require_empty_destination
    from ..sampling.pipeline import I2MVPipeline, T2MVPipeline
    from ..sampling.system import VideoMV
    from ..sampling.parity import release_reconstructor_settings, release_scheduler, release_settings

    unet_class(task)
    base, out = str(base), Path(out)
    require_empty_destination(out, "--out")
    stages = tqdm(total=5, desc="convert", disable=not progress)

    def stage(name: str) -> None:
        stages.set_postfix_str(name)
        stages.update()

    ckpt = load_release_checkpoint(checkpoint)
    stage("checkpoint read")
    source = f"--checkpoint {checkpoint}"
    notes = []

    unet = build_camera_unet(ckpt.unet, unet_config(base, task), task, source)
    stage("camera UNet")
    recon, preset, ignored = build_reconstructor(ckpt.reconstructor, source, **release_reconstructor_settings(task))
    stage("reconstructor")

    vae_source = vae or (base if task == "text" else MODELSCOPE_T2V)
    vae_model = AutoencoderKL.from_pretrained(vae_source, subfolder=vae_subfolder)
    notes.append(f"VAE: ModelScope-T2V's, from {vae_source} (the release encodes and decodes with it for both tasks)")
    text_encoder, note = release_text_encoder(base, task)
    if note:
        notes.append(note)
    tokenizer = load_tokenizer(base)
    if task == "text":
        pipeline = T2MVPipeline(vae=vae_model, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                scheduler=release_scheduler(task))
    else:
        pipeline = I2MVPipeline(
            vae=vae_model, text_encoder=text_encoder, tokenizer=tokenizer,
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(base, subfolder="image_encoder"),
            feature_extractor=CLIPImageProcessor.from_pretrained(base, subfolder="feature_extractor"),
            unet=unet, scheduler=release_scheduler(task),
        )
    stage("base parts")
    settings = release_settings(task)
    model = VideoMV.from_parts(pipeline, recon, settings)
    with atomic_directory(out, replace=False) as tmp:
        model.save_pretrained(tmp)
        (tmp / "conversion.json").write_text(json.dumps(
            {"checkpoint": str(checkpoint), "step": ckpt.step, "base": base, "vae": vae_source,
             "ignored_keys": ignored, "notes": notes}, indent=2) + "\n")
    stage("written")
    stages.close()
    return ConversionReport(
        task=task, checkpoint=str(checkpoint), step=ckpt.step, unet_keys=len(ckpt.unet),
        unet_params=sum(p.numel() for p in unet.parameters()), reconstructor_keys=len(ckpt.reconstructor),
        reconstructor_preset=preset,
        ignored_keys=ignored, notes=notes,
    )
