"""Multi-view generation pipelines (text -> views, image -> views), diffusers style.

Components and folder layout are diffusers' `TextToVideoSDPipeline` / `I2VGenXLPipeline` ones
(unet/, vae/, text_encoder/, tokenizer/, [image_encoder/, feature_extractor/], scheduler/), with
the camera-conditioned UNets. The denoising loop is `videomv.sampling.ddim.ddim_sample`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from transformers import CLIPImageProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModelWithProjection

from ..defaults import IMAGE, TEXT
from ..geometry import camera_vector, orbit_cameras
from ..models.conditioning import (UNCONDITIONAL_IMAGE, ImageConditioner, ImageConditioning, TextConditioner,
                                   bundled_clip_tokenizer, uses_bundled_tokenizer)
from ..models.denoise import MultiViewCondition, denoise
from ..models.i2mv_unet import I2MVUNet
from ..models.t2mv_unet import T2MVUNet
from .ddim import Z0Hook, ddim_sample, output_with_known_views, scheduler_for, with_known_views

OUTPUT_TYPES = ("pt", "np", "pil", "latent")


@dataclass
class MultiViewPipelineOutput(BaseOutput):
    """images: (B, F, 3, H, W) in [0, 1] for "pt", (B, F, H, W, 3) float array for "np", nested
    lists of PIL images for "pil", None for "latent". latents: final (B, C, F, h, w) latents."""

    images: torch.Tensor | np.ndarray | list | None
    latents: torch.Tensor


def dtype_kwargs(dtype: torch.dtype) -> dict:
    """The `from_pretrained` keyword for a dtype: `dtype` where diffusers has it (it deprecates
    `torch_dtype`), `torch_dtype` on older versions."""
    from diffusers.utils import deprecation_utils

    return {"dtype": dtype} if hasattr(deprecation_utils, "_resolve_dtype") else {"torch_dtype": dtype}


def keeping_known_views(z0_hook: Z0Hook, known: torch.Tensor) -> Z0Hook:
    """`z0_hook` whose replacements keep the first views at `known` (see `with_known_views`)."""

    def hook(step_index, timestep, z0_cond, z0_uncond, latents):
        replaced = z0_hook(step_index, timestep, z0_cond, z0_uncond, latents)
        if replaced is None:
            return None
        cond, uncond = replaced
        return with_known_views(cond, known), None if uncond is None else with_known_views(uncond, known)

    return hook


def prepare_cameras(cameras, batch_size: int, default: torch.Tensor) -> torch.Tensor:
    """(B, F, 16) camera vectors from None (-> default orbit), (F, 4, 4), (B, F, 4, 4), (F, 16) or (B, F, 16)."""
    cameras = default if cameras is None else torch.as_tensor(cameras, dtype=torch.float32)
    if cameras.shape[-2:] == (4, 4):
        cameras = camera_vector(cameras.cpu())  # validates the poses
    if cameras.ndim == 2:
        cameras = cameras.unsqueeze(0).expand(batch_size, -1, -1)
    if cameras.ndim != 3 or cameras.shape[-1] != 16 or cameras.shape[0] != batch_size:
        raise ValueError(
            f"cameras: expected (F, 4, 4), (B, F, 4, 4), (F, 16) or (B, F, 16) with B = {batch_size}, "
            f"got {tuple(cameras.shape)}"
        )
    return cameras


class _MultiViewPipeline(DiffusionPipeline):
    """Shared parts: prompt encoding, latents, decoding, output formats."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """As diffusers'; a local folder without tokenizer/ gets the bundled CLIP tokenizer (folders
        whose tokenizer is that one may leave it out, see `videomv.models.conditioning`)."""
        if "tokenizer" not in kwargs and uses_bundled_tokenizer(pretrained_model_name_or_path):
            kwargs["tokenizer"] = bundled_clip_tokenizer()
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def text_conditioner(self) -> TextConditioner:
        return TextConditioner(self.tokenizer, self.text_encoder)

    def prompt_embeddings(self, prompt: list[str], negative_prompt, do_cfg: bool, clip_skip: int | None = None):
        """(prompt embeddings, negative-prompt embeddings or None when guidance is off)."""
        conditioner = self.text_conditioner
        cond = conditioner.encode(prompt, clip_skip)
        if not do_cfg:
            return cond, None
        if negative_prompt is None:
            negative_prompt = [""] * len(prompt)
        elif isinstance(negative_prompt, str):
            negative_prompt = [negative_prompt] * len(prompt)
        if len(negative_prompt) != len(prompt):
            raise ValueError(f"negative_prompt: got {len(negative_prompt)} prompts for {len(prompt)} prompts")
        return cond, conditioner.encode(list(negative_prompt), clip_skip)

    def encode_prompt(self, prompt: list[str], negative_prompt, do_cfg: bool, clip_skip: int | None = None):
        """Text embeddings, [uncond; cond] stacked when guidance is on."""
        cond, uncond = self.prompt_embeddings(prompt, negative_prompt, do_cfg, clip_skip)
        return cond if uncond is None else torch.cat([uncond, cond])

    def sample(self, latents, condition: MultiViewCondition, negative_text, num_inference_steps, guidance_scale,
               eta, generator, z0_hook, progress, cross_attention_kwargs, sampler="ddim",
               unconditional_image="embedding") -> torch.Tensor:
        """The denoising loop under `condition`, with guidance against `negative_text` (and the image
        condition made unconditional as `unconditional_image` says) when it is given; `sampler` "ddim"
        (the folder's scheduler) or "dpmsolver++" (on the same noise schedule)."""
        known = None  # an image model given its input view clean: view 0 is the input's latent throughout
        if condition.image is not None and condition.image.clean_input_view:
            known = condition.image.input_view_latent
            z0_hook = z0_hook and keeping_known_views(z0_hook, known)
        if negative_text is not None:
            condition = condition.with_unconditional(negative_text, unconditional_image)

        def denoiser(model_input, t):
            out = denoise(self.unet, model_input, t, condition, cross_attention_kwargs)
            return out if known is None else output_with_known_views(self.scheduler, out, model_input, t, known)

        return ddim_sample(denoiser, latents, scheduler_for(sampler, self.scheduler), num_inference_steps,
                           guidance_scale, eta, generator, z0_hook, progress)

    def prepare_latents(self, batch_size, num_frames, height, width, dtype, generator, latents=None):
        shape = (batch_size, self.unet.config.in_channels, num_frames,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None:
            return randn_tensor(shape, generator=generator, device=self._execution_device, dtype=dtype)
        if tuple(latents.shape) != shape:
            raise ValueError(f"latents: expected shape {shape}, got {tuple(latents.shape)}")
        return latents.to(device=self._execution_device, dtype=dtype)

    def check_size(self, height, width):
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        if height % self.vae_scale_factor or width % self.vae_scale_factor:
            raise ValueError(f"height and width must be multiples of {self.vae_scale_factor}, got {height}x{width}")
        return height, width

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int | None = None) -> torch.Tensor:
        """(B, C, F, h, w) latents -> (B, F, 3, H, W) images in [0, 1], decoding `decode_chunk_size`
        frames at a time (None: all at once)."""
        b, c, f, h, w = latents.shape
        frames = (latents / self.vae.config.scaling_factor).permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
        chunk = decode_chunk_size or b * f
        images = torch.cat([self.vae.decode(frames[i : i + chunk]).sample for i in range(0, b * f, chunk)])
        images = (images.float() / 2 + 0.5).clamp(0, 1)
        return images.reshape((b, f) + images.shape[1:])

    def format_output(self, latents, output_type, decode_chunk_size) -> MultiViewPipelineOutput:
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if output_type == "latent":
            return MultiViewPipelineOutput(images=None, latents=latents)
        images = self.decode_latents(latents, decode_chunk_size)
        if output_type == "np":
            images = images.permute(0, 1, 3, 4, 2).cpu().numpy()
        elif output_type == "pil":
            arrays = (images.permute(0, 1, 3, 4, 2).cpu().numpy() * 255).round().astype(np.uint8)
            images = [[Image.fromarray(view) for view in sample] for sample in arrays]
        return MultiViewPipelineOutput(images=images, latents=latents)

    @staticmethod
    def make_generator(generator, seed):
        if generator is not None and seed is not None:
            raise ValueError("give either generator or seed, not both")
        return torch.Generator("cpu").manual_seed(seed) if seed is not None else generator


class T2MVPipeline(_MultiViewPipeline):
    """Text -> views (by default the release's text orbit, `videomv.defaults.TEXT`)."""

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: T2MVUNet, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        cameras: torch.Tensor | None = None,
        num_inference_steps: int = TEXT.num_inference_steps,
        guidance_scale: float = TEXT.guidance_scale,
        negative_prompt: str | list[str] | None = None,
        clip_skip: int | None = TEXT.clip_skip,
        eta: float = 0.0,
        sampler: str = "ddim",
        generator: torch.Generator | None = None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        z0_hook: Z0Hook | None = None,
        output_type: str = "pt",
        decode_chunk_size: int | None = 1,
        cross_attention_kwargs: dict | None = None,
        progress: bool = True,
    ) -> MultiViewPipelineOutput:
        """Generate views; `cameras` set the views (default: the `TEXT` orbit, 24 views at 15 deg, radius 2.0);
        `clip_skip` = k takes the text encoder's layer k before the last (default: the last).
        `sampler`: "ddim" or "dpmsolver++" (20-25 steps). `z0_hook`: see `videomv.sampling.ddim`."""
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        height, width = self.check_size(height, width)
        cameras = prepare_cameras(cameras, len(prompt), orbit_cameras(TEXT.num_views, TEXT.elevation, TEXT.radius))
        generator = self.make_generator(generator, seed)
        do_cfg = guidance_scale > 1.0
        device = self._execution_device

        text, negative_text = self.prompt_embeddings(prompt, negative_prompt, do_cfg, clip_skip)
        cameras = cameras.to(device=device, dtype=text.dtype)
        condition = MultiViewCondition(text, cameras)
        latents = self.prepare_latents(len(prompt), cameras.shape[1], height, width, text.dtype, generator, latents)
        latents = self.sample(latents, condition, negative_text, num_inference_steps, guidance_scale, eta, generator,
                              z0_hook, progress, cross_attention_kwargs, sampler)
        return self.format_output(latents, output_type, decode_chunk_size)


class I2MVPipeline(_MultiViewPipeline):
    """Image -> views (by default the release's image orbit, `videomv.defaults.IMAGE`), empty prompt.

    Conditioning as `I2VGenXLPipeline`: the unconditional branch has the negative prompt, a zero
    CLIP image embedding, and the same image latents and fps; `unconditional_image="image"` zeroes
    the image latent there too, for models trained with that dropout (`data.image_dropout`).
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->unet->vae"

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 image_encoder: CLIPVisionModelWithProjection, feature_extractor: CLIPImageProcessor,
                 unet: I2MVUNet, scheduler: DDIMScheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, image_encoder=image_encoder,
                              feature_extractor=feature_extractor, unet=unet, scheduler=scheduler)

    @property
    def image_conditioner(self) -> ImageConditioner:
        return ImageConditioner.from_feature_extractor(self.image_encoder, self.feature_extractor, self.vae)

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        prompt: str | list[str] = "",
        cameras: torch.Tensor | None = None,
        num_inference_steps: int = IMAGE.num_inference_steps,
        guidance_scale: float = IMAGE.guidance_scale,
        negative_prompt: str | list[str] | None = None,
        target_fps: int = IMAGE.fps,
        clip_skip: int | None = IMAGE.clip_skip,
        unconditional_image: str = "embedding",
        clean_input_view: bool = False,
        eta: float = 0.0,
        sampler: str = "ddim",
        generator: torch.Generator | None = None,
        seed: int | None = None,
        height: int | None = None,
        width: int | None = None,
        latents: torch.Tensor | None = None,
        z0_hook: Z0Hook | None = None,
        output_type: str = "pt",
        decode_chunk_size: int | None = 1,
        cross_attention_kwargs: dict | None = None,
        progress: bool = True,
    ) -> MultiViewPipelineOutput:
        """Generate views of the object in `image` ((3, H, W) or (B, 3, H, W) in [0, 1]);
        `cameras` default to the `IMAGE` orbit (24 views at 5 deg, radius 1.7); `clip_skip` = 1 takes the text encoder's
        penultimate layer, as `I2VGenXLPipeline`. `unconditional_image`: what guidance drops of the
        image, "embedding" (the CLIP embedding) or "image" (also the image latent). `clean_input_view`:
        for models trained with `model.clean_input_view`, view 0 is the input image's latent throughout. `sampler`: "ddim"
        or "dpmsolver++" (20-25 steps).
        `z0_hook`: see `videomv.sampling.ddim`."""
        if not torch.is_tensor(image) or image.ndim not in (3, 4):
            raise ValueError("image: expected a (3, H, W) or (B, 3, H, W) tensor with values in [0, 1]")
        if unconditional_image not in UNCONDITIONAL_IMAGE:
            raise ValueError(f"unconditional_image: expected one of {list(UNCONDITIONAL_IMAGE)}, "
                             f"got {unconditional_image!r}")
        image = image.unsqueeze(0) if image.ndim == 3 else image
        batch_size = image.shape[0]
        prompt = [prompt] * batch_size if isinstance(prompt, str) else list(prompt)
        if len(prompt) != batch_size:
            raise ValueError(f"prompt: got {len(prompt)} prompts for {batch_size} images")
        height, width = self.check_size(height, width)
        cameras = prepare_cameras(cameras, batch_size, orbit_cameras(IMAGE.num_views, IMAGE.elevation, IMAGE.radius))
        generator = self.make_generator(generator, seed)
        do_cfg = guidance_scale > 1.0
        device = self._execution_device
        num_frames = cameras.shape[1]

        text, negative_text = self.prompt_embeddings(prompt, negative_prompt, do_cfg, clip_skip)
        encoded = self.image_conditioner.encode(image.to(device), num_frames, height, width)
        condition = MultiViewCondition(
            text, cameras.to(device=device, dtype=text.dtype),
            image=ImageConditioning(encoded.image_embeddings, encoded.image_latents.to(text.dtype), clean_input_view),
            fps=torch.full((batch_size,), target_fps, device=device),
        )
        latents = self.prepare_latents(batch_size, num_frames, height, width, text.dtype, generator, latents)
        latents = self.sample(latents, condition, negative_text, num_inference_steps, guidance_scale, eta, generator,
                              z0_hook, progress, cross_attention_kwargs, sampler, unconditional_image)
        return self.format_output(latents, output_type, decode_chunk_size)
