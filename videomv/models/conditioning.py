"""Condition encoders: text (CLIP text model, for T2MV and I2MV) and image (CLIP image embedding +
VAE latents of the input image, for I2MV, as diffusers' `I2VGenXLPipeline` feeds its UNet).

The tokenizer works offline: without a saved tokenizer folder it is built from the BPE vocabulary
that open_clip ships inside its package, which is OpenAI CLIP's (49408 tokens).
"""

from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    CLIPImageProcessor,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from .text_encoder import BidirectionalCLIPTextModel, bidirectional_layers, load_text_encoder, text_transformer

CLIP_VOCAB_SIZE = 49408
CLIP_CONTEXT_LENGTH = 77
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def bundled_clip_tokenizer(model_max_length: int = CLIP_CONTEXT_LENGTH, pad_token: str = "!") -> CLIPTokenizer:
    """A transformers `CLIPTokenizer` built from open_clip's bundled BPE merges, no download needed.

    Ids follow OpenAI CLIP (start 49406, end 49407). Padding uses "!" (id 0) as open_clip and the
    OpenCLIP-based tokenizers of ModelScope-T2V / Stable Diffusion 2 do.
    """
    from open_clip.tokenizer import SimpleTokenizer

    reference = SimpleTokenizer()
    specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {specials.get(token, token): index for token, index in reference.encoder.items()}
    merges = [tuple(pair) for pair, _ in sorted(reference.bpe_ranks.items(), key=lambda item: item[1])]
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise RuntimeError(f"open_clip's bundled vocabulary has {len(vocab)} tokens, expected {CLIP_VOCAB_SIZE}")
    return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token, model_max_length=model_max_length)


@functools.cache
def _reference_tokenizer() -> CLIPTokenizer:
    return bundled_clip_tokenizer()  # read only; building it takes about a second


def is_bundled_clip_tokenizer(tokenizer) -> bool:
    """True when `tokenizer` tokenizes exactly as `bundled_clip_tokenizer()` (same BPE model,
    normaliser, special tokens, length and padding), so a saved folder may leave it out."""
    reference = _reference_tokenizer()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False

    def model_of(b) -> dict:  # what tokenizes; truncation/padding are per-call state that a save keeps
        spec = json.loads(b.to_str())
        return {k: v for k, v in spec.items() if k not in ("truncation", "padding")}

    if model_of(backend) != model_of(reference.backend_tokenizer):
        return False
    names = ("model_max_length", "pad_token", "bos_token", "eos_token", "unk_token", "padding_side")
    return all(getattr(tokenizer, n, None) == getattr(reference, n) for n in names)


def uses_bundled_tokenizer(path, tokenizer_subfolder: str = "tokenizer") -> bool:
    """True for a local model folder without a tokenizer folder: it gets `bundled_clip_tokenizer()`
    (saved folders leave that tokenizer out, see `is_bundled_clip_tokenizer`)."""
    return os.path.isdir(path) and not os.path.isdir(os.path.join(path, tokenizer_subfolder))


def padding_mask(ids: torch.Tensor, end_id: int) -> torch.Tensor:
    """(B, T) token ids -> (B, T) bool, true at the padding: every position after the first end
    token that follows the start token (whichever token pads the rest)."""
    if ids.ndim != 2:
        raise ValueError(f"ids: expected (batch, tokens) token ids, got shape {tuple(ids.shape)}")
    is_end = ids[:, 1:] == end_id
    if not bool(is_end.any(1).all()):
        raise ValueError(f"ids: every row needs an end token ({end_id}) after its start token")
    end = is_end.float().argmax(1) + 1
    return torch.arange(ids.shape[1], device=ids.device)[None] > end[:, None]


class TextConditioner(nn.Module):
    """Tokenizer + `CLIPTextModel`: prompts -> (B, 77, D) token embeddings (last hidden state)."""

    def __init__(self, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel):
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder

    @classmethod
    def from_pretrained(cls, path: str, tokenizer_subfolder: str = "tokenizer",
                        text_encoder_subfolder: str = "text_encoder", **kwargs) -> "TextConditioner":
        """Load from a diffusers folder (or hub id). A missing tokenizer folder in a local folder
        falls back to the bundled CLIP tokenizer."""
        text_encoder = load_text_encoder(path, subfolder=text_encoder_subfolder, **kwargs)
        if uses_bundled_tokenizer(path, tokenizer_subfolder):
            tokenizer = bundled_clip_tokenizer()
        else:
            tokenizer = CLIPTokenizer.from_pretrained(path, subfolder=tokenizer_subfolder)
        return cls(tokenizer, text_encoder)

    @classmethod
    def tiny(cls, hidden_size: int = 32, num_layers: int = 2, num_heads: int = 4, projection_dim: int = 32,
             seed: int = 0) -> "TextConditioner":
        """A small randomly initialised text encoder with the real CLIP vocabulary, for tests and toys."""
        config = CLIPTextConfig(
            vocab_size=CLIP_VOCAB_SIZE,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 4,
            num_hidden_layers=num_layers,
            num_attention_heads=num_heads,
            max_position_embeddings=CLIP_CONTEXT_LENGTH,
            projection_dim=projection_dim,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=0,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            text_encoder = CLIPTextModel(config).eval()
        return cls(bundled_clip_tokenizer(), text_encoder)

    def add_identity_layers(self, count: int) -> None:
        """Append `count` transformer layers that start as the identity: their attention and MLP
        output projections are zero, so each residual branch adds nothing. A trained encoder grows
        deeper without its output changing; the new layers then learn from where it stands."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"extra layers: expected an integer >= 0, got {count!r}")
        if count and bidirectional_layers(self.text_encoder):
            raise ValueError("extra layers: append them before making layers bidirectional "
                             "(attend_both_ways counts from the last layer)")
        from transformers.models.clip.modeling_clip import CLIPEncoderLayer

        layers = self.transformer.encoder.layers
        config = self.text_encoder.config
        reference = next(self.text_encoder.parameters())
        for _ in range(count):
            layer = CLIPEncoderLayer(config).to(device=reference.device, dtype=reference.dtype)
            for projection in (layer.self_attn.out_proj, layer.mlp.fc2):
                nn.init.zeros_(projection.weight)
                nn.init.zeros_(projection.bias)
            layers.append(layer)
        config.num_hidden_layers = len(layers)

    def attend_both_ways(self, count: int) -> None:
        """Let the last `count` layers attend to every token (`BidirectionalCLIPTextModel`); the
        weights stay, so the encoder's output changes and training adapts it."""
        self.text_encoder = BidirectionalCLIPTextModel.from_causal(self.text_encoder, count)

    @property
    def transformer(self) -> nn.Module:
        """The CLIP text transformer (`text_transformer`)."""
        return text_transformer(self.text_encoder)

    @property
    def device(self) -> torch.device:
        return self.text_encoder.device

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        """(B, 77) token ids, padded and truncated to the context length."""
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError(f"prompts: expected a list of strings, got {prompts!r}")
        return self.tokenizer(
            list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
            truncation=True, return_tensors="pt",
        ).input_ids

    def encode(self, prompts: list[str], clip_skip: int | None = None, text_encoder=None) -> torch.Tensor:
        """(B, 77, D) token embeddings: the last hidden state, or with `clip_skip` = k the output of
        the k-th layer from the end passed through the final layer norm (as diffusers' pipelines);
        zero after the end token where `zero_padding` is set.
        `text_encoder`: a wrapper of this conditioner's model to run instead (e.g. DDP in training)."""
        ids = self.tokenize(prompts).to(self.device)
        model = self.text_encoder if text_encoder is None else text_encoder
        if clip_skip is None:
            out = model(ids)[0]
        else:
            hidden = model(ids, output_hidden_states=True).hidden_states[-(clip_skip + 1)]
            out = self.transformer.final_layer_norm(hidden)
        if self.zero_padding:
            out = out.masked_fill(padding_mask(ids, self.tokenizer.eos_token_id)[..., None], 0.0)
        return out

    @property
    def zero_padding(self) -> bool:
        """Whether the embeddings after the prompt's end token are zero (`text_encoder/config.json`
        keeps `zero_padding`). A causal encoder's padding has read the whole prompt, so a UNet can
        take every colour and shape from it at once; zeroed, only the prompt's own tokens carry it."""
        return bool(getattr(self.text_encoder.config, "zero_padding", False))

    @zero_padding.setter
    def zero_padding(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"zero_padding: expected true or false, got {value!r}")
        self.text_encoder.config.zero_padding = value


UNCONDITIONAL_IMAGE = ("embedding", "image")


@dataclass
class ImageConditioning:
    """What the I2MV UNet needs from the input image. With `clean_input_view` the UNet also sees the
    image latent in place of the noisy latents of view 0 (the input view), at every noise level, so
    its temporal attention reads the input clean in every block (`videomv.models.denoise.denoise`);
    a model is trained one way or the other."""

    image_embeddings: torch.Tensor  # (B, 1, D) CLIP image embeddings
    image_latents: torch.Tensor  # (B, C, F, h, w): VAE latent of the image, then F-1 position-mask frames
    clean_input_view: bool = False

    @property
    def input_view_latent(self) -> torch.Tensor:
        """(B, C, 1, h, w): the VAE latent of the input image (zero where the image was dropped)."""
        return self.image_latents[:, :, :1]

    def dropped(self, drop: torch.Tensor, what: str = "embedding") -> "ImageConditioning":
        """This condition with the samples where `drop` (B,) is true made unconditional: a zero CLIP
        embedding (what="embedding", as `I2VGenXLPipeline`'s unconditional branch), and with
        what="image" a zero image latent as well (the position-mask frames stay), so that guidance
        also works against the image itself."""
        if what not in UNCONDITIONAL_IMAGE:
            raise ValueError(f"unconditional image: expected one of {list(UNCONDITIONAL_IMAGE)}, got {what!r}")
        drop = drop.to(device=self.image_embeddings.device, dtype=torch.bool)
        if drop.shape != (self.image_embeddings.shape[0],):
            raise ValueError(f"drop: expected ({self.image_embeddings.shape[0]},) flags, got {tuple(drop.shape)}")
        keep = (~drop).to(self.image_embeddings.dtype)
        embeddings = self.image_embeddings * keep.view(-1, 1, 1)
        latents = self.image_latents
        if what == "image":
            first = latents[:, :, :1] * keep.to(latents.dtype).view(-1, 1, 1, 1, 1)
            latents = torch.cat([first, latents[:, :, 1:]], dim=2)
        return ImageConditioning(embeddings, latents, self.clean_input_view)

    def unconditional(self, what: str = "embedding") -> "ImageConditioning":
        """The classifier-free-guidance partner of this condition (see `dropped`)."""
        return self.dropped(torch.ones(self.image_embeddings.shape[0], dtype=torch.bool), what)


def center_crop_resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Scale (B, 3, H, W) so it covers (height, width), then center crop (antialiased bilinear)."""
    in_h, in_w = images.shape[-2:]
    scale = max(height / in_h, width / in_w)
    new_h, new_w = max(height, round(in_h * scale)), max(width, round(in_w * scale))
    if (new_h, new_w) != (in_h, in_w):
        images = F.interpolate(images, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return images[..., top : top + height, left : left + width]


def with_position_masks(latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, C, h, w) scaled image latent -> (B, C, F, h, w): the latent followed by F-1 constant
    frames k/(F-1), k = 1..F-1, marking frame positions (I2VGen-XL's image-latent input)."""
    latents = latent.unsqueeze(2)
    if num_frames > 1:
        scales = torch.arange(1, num_frames, device=latents.device, dtype=latents.dtype) / (num_frames - 1)
        masks = torch.ones_like(latents).expand(-1, -1, num_frames - 1, -1, -1) * scales.view(1, 1, -1, 1, 1)
        latents = torch.cat([latents, masks], dim=2)
    return latents


class ImageConditioner(nn.Module):
    """CLIP image embedding + VAE image latents for the I2MV UNet, preprocessing done in torch.

    Follows `I2VGenXLPipeline`: the CLIP input is the image center-cropped to a square and resized to
    the encoder's resolution, normalised with CLIP's mean/std; the latent input is the image
    center-cropped/resized to the output size, encoded by the VAE (distribution mode here, so the
    conditioning is deterministic) and scaled by `vae.config.scaling_factor`, followed by F-1 constant
    frames k/(F-1), k = 1..F-1, marking frame positions.
    """

    def __init__(self, image_encoder: CLIPVisionModelWithProjection, vae, image_size: int = 224,
                 mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD):
        super().__init__()
        self.image_encoder = image_encoder
        self.vae = vae
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_feature_extractor(cls, image_encoder, feature_extractor: CLIPImageProcessor, vae) -> "ImageConditioner":
        crop = feature_extractor.crop_size
        if crop["height"] != crop["width"]:
            raise ValueError(f"feature_extractor: expected a square crop size, got {crop}")
        return cls(image_encoder, vae, crop["height"], feature_extractor.image_mean, feature_extractor.image_std)

    @staticmethod
    def tiny_image_encoder(hidden_size: int = 32, projection_dim: int = 32, image_size: int = 32,
                           seed: int = 0) -> CLIPVisionModelWithProjection:
        config = CLIPVisionConfig(
            hidden_size=hidden_size, intermediate_size=hidden_size * 4, projection_dim=projection_dim,
            num_hidden_layers=2, num_attention_heads=4, image_size=image_size, patch_size=8,
        )
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return CLIPVisionModelWithProjection(config).eval()

    @staticmethod
    def check_images(images: torch.Tensor) -> torch.Tensor:
        if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
            raise ValueError(f"images: expected a (B, 3, H, W) tensor with values in [0, 1], got {shape}")
        if images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise ValueError("images: values must be in [0, 1]")
        return images

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, D) CLIP image embeddings of (B, 3, H, W) images in [0, 1]."""
        images = self.check_images(images)
        side = min(images.shape[-2:])
        square = center_crop_resize(images, side, side)
        clip_in = center_crop_resize(square, self.image_size, self.image_size)
        clip_in = (clip_in - self.mean.to(clip_in.device)) / self.std.to(clip_in.device)
        dtype = next(self.image_encoder.parameters()).dtype
        return self.image_encoder(clip_in.to(dtype)).image_embeds.unsqueeze(1)

    def image_latents(self, images: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
        """(B, C, F, h, w): the image latent followed by F-1 position-mask frames."""
        images = center_crop_resize(self.check_images(images), height, width)
        images = (images * 2 - 1).to(self.vae.dtype)
        latents = self.vae.encode(images).latent_dist.mode() * self.vae.config.scaling_factor
        return with_position_masks(latents, num_frames)

    def encode(self, images: torch.Tensor, num_frames: int, height: int | None = None,
               width: int | None = None) -> ImageConditioning:
        """Both conditions for (B, 3, H, W) images in [0, 1]; the latents are made at (height, width)
        (default: the image size)."""
        height = height or images.shape[-2]
        width = width or images.shape[-1]
        return ImageConditioning(self.image_embeddings(images), self.image_latents(images, num_frames, height, width))
