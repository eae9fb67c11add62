"""What `T2MVUNet` and `I2MVUNet` share: the per-frame time + camera embedding, the pass of the
frames (as a batch) through conv_in, the temporal transformer, the down/mid/up blocks and the output
head, and loading a base video UNet with a fresh camera branch.

Both UNets run the same body; they differ only in what they feed it (I2MV adds fps to the time
embedding, image tokens to the context and image-latent channels to the sample).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from diffusers.models.attention_processor import Attention
from diffusers.utils.torch_utils import maybe_adjust_dtype_for_device
from torch import nn

from ..geometry.rays import plucker_rays
from .camera_embedding import CameraEmbedding, camera_vectors


def timestep_batch(timestep, batch_size: int, device) -> torch.Tensor:
    """A timestep given as int/float/0-d/1-d tensor, broadcast to (batch_size,)."""
    if not torch.is_tensor(timestep):
        dtype = maybe_adjust_dtype_for_device(torch.float64 if isinstance(timestep, float) else torch.int64, device)
        timestep = torch.tensor([timestep], dtype=dtype, device=device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(device)
    return timestep.expand(batch_size)


# Config keys the camera UNets add to their diffusers base class.
MULTIVIEW_CONFIG_KEYS = ("camera_dim", "camera_embed_dim", "ray_map_fovy")


def cross_attention_layers(unet: nn.Module) -> dict[str, Attention]:
    """The UNet's attention layers over the prompt, by module name (temporal and spatial
    self-attention left out)."""
    return {n: m for n, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


@contextmanager
def cross_attention_processors(unet: nn.Module, make_processor: Callable[[str], Any], caller: str) -> Iterator[None]:
    """Within the block every cross-attention layer of `unet` runs `make_processor(its name)`; the
    layers' own processors are restored on exit, also on error. `caller` names the user in the
    error for a UNet without cross-attention."""
    layers = cross_attention_layers(unet)
    if not layers:
        raise ValueError(f"{caller}: {type(unet).__name__} has no cross-attention layer")
    saved = {name: layer.processor for name, layer in layers.items()}
    try:
        for name, layer in layers.items():
            layer.set_processor(make_processor(name))
        yield
    finally:
        for name, layer in layers.items():
            layer.set_processor(saved[name])


def attention_with_weights(attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                           attention_mask=None) -> tuple[torch.Tensor, torch.Tensor]:
    """What `attn` computes, softmax(QK^T / sqrt(d)) V written out so that the weights can be read:
    (output, weights (rows * heads, queries, keys)). For the video UNets' transformer blocks:
    (rows, tokens, channels) inputs, no spatial or group norm."""
    if attn.spatial_norm is not None or attn.group_norm is not None or hidden_states.ndim != 3:
        raise ValueError("attention_with_weights: expected (batch, tokens, channels) inputs to an attention "
                         "layer without spatial or group norm, as the video UNets' transformer blocks have")
    context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
    if attn.norm_cross and encoder_hidden_states is not None:
        context = attn.norm_encoder_hidden_states(context)
    rows, keys = context.shape[:2]
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, keys, rows)
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))
    key = attn.head_to_batch_dim(attn.to_k(context))
    value = attn.head_to_batch_dim(attn.to_v(context))
    weights = attn.get_attention_scores(query, key, attention_mask)
    out = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(torch.bmm(weights, value))))
    if attn.residual_connection:
        out = out + hidden_states
    return out / attn.rescale_output_factor, weights


class CameraConditionedMixin:
    """The shared part of the camera-conditioned UNets.

    Subclasses define `base_class` (the diffusers UNet they extend) and create `self.camera_embedding`;
    their `forward` builds the per-sample embedding and context and calls `camera_unet_body`.
    """

    base_class: type = None

    def init_camera_branch(self, camera_dim: int, camera_embed_dim: int | None, time_embed_dim: int,
                           ray_map_fovy: float | None = None) -> None:
        """Create `camera_embedding`; its width is the time embedding's (4 x block_out_channels[0]).
        With `ray_map_fovy`, also the ray-map input (`add_ray_map`)."""
        if camera_embed_dim is not None and camera_embed_dim != time_embed_dim:
            raise ValueError(
                f"camera_embed_dim must equal the time-embedding width 4 * block_out_channels[0] = {time_embed_dim}, "
                f"got {camera_embed_dim}"
            )
        self.camera_embedding = CameraEmbedding(camera_dim, time_embed_dim)
        self.gradient_checkpointing = False
        self.ray_map_in = None
        if ray_map_fovy is not None:
            self._create_ray_map_in(ray_map_fovy)

    def _create_ray_map_in(self, fovy_deg) -> None:
        if isinstance(fovy_deg, bool) or not isinstance(fovy_deg, (int, float)) or not 0 < fovy_deg < 180:
            raise ValueError(f"ray_map_fovy: expected a vertical field of view in degrees in (0, 180), got {fovy_deg!r}")
        self.ray_map_in = nn.Conv2d(6, self.conv_in.out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.ray_map_in.weight)
        nn.init.zeros_(self.ray_map_in.bias)

    def add_ray_map(self, fovy_deg: float) -> None:
        """Give every latent pixel its camera ray: the Plücker coordinates (o x d, d) of the ray
        through it (`videomv.geometry.plucker_rays`, field of view `fovy_deg` over the latent
        height) pass through a 3x3 conv that is added to conv_in's output. The per-frame camera
        embedding says where a view looks from; the ray map also says which way each pixel looks,
        so "on top" is a direction the UNet reads rather than infers from the image border. The conv
        starts at zero, so a trained UNet is unchanged until the branch is trained."""
        if self.ray_map_in is not None:
            raise ValueError(f"this UNet already has a ray map (ray_map_fovy={self.config.ray_map_fovy})")
        self._create_ray_map_in(fovy_deg)
        self.ray_map_in.to(device=self.conv_in.weight.device, dtype=self.conv_in.weight.dtype)
        self.register_to_config(ray_map_fovy=float(fovy_deg))

    @torch.no_grad()
    def sharpen_cross_attention(self, gain: float) -> None:
        """Multiply every cross-attention's query and key projections by `gain`, so its logits grow
        by gain²: attention to the prompt that training left nearly uniform (each location reading
        the mean of all 77 tokens, and so every colour named) starts more selective, and training
        adapts the rest. The weights change; the architecture and config do not."""
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain > 0:
            raise ValueError(f"cross_attention_gain: expected a number > 0, got {gain!r}")
        layers = cross_attention_layers(self)
        if not layers:
            raise ValueError(f"cross_attention_gain: {type(self).__name__} has no cross-attention layer")
        for attn in layers.values():
            for proj in (attn.to_q, attn.to_k):
                proj.weight.mul_(gain)
                if proj.bias is not None:
                    proj.bias.mul_(gain)

    def ray_map(self, cameras: torch.Tensor, camera_mask, batch_size: int, num_frames: int, height: int,
                width: int) -> torch.Tensor:
        """(B * F, 6, H, W) Plücker ray map of each frame's camera, zero where `camera_mask` drops it."""
        cameras = camera_vectors(cameras, batch_size, num_frames, self.config.camera_dim)
        c2w = cameras.float().reshape(batch_size * num_frames, 4, 4)
        rays = plucker_rays(c2w, height, width, self.config.ray_map_fovy)
        if camera_mask is not None:
            keep = torch.as_tensor(camera_mask, device=rays.device).float().repeat_interleave(num_frames)
            rays = rays * keep[:, None, None, None]
        return rays

    def time_embedding_of(self, timestep, batch_size: int, device, timestep_cond=None) -> torch.Tensor:
        """(B, D) embedding of the timestep(s)."""
        timesteps = timestep_batch(timestep, batch_size, device)
        return self.time_embedding(self.time_proj(timesteps).to(dtype=self.dtype), timestep_cond)

    def frame_embeddings(self, emb: torch.Tensor, cameras, camera_mask, batch_size: int,
                         num_frames: int) -> torch.Tensor:
        """(B, D) per-sample embedding -> (B * F, D) per frame, plus each frame's camera embedding."""
        emb = emb.repeat_interleave(num_frames, dim=0, output_size=batch_size * num_frames)
        return self.add_camera_embedding(emb, cameras, camera_mask, batch_size, num_frames)

    def add_camera_embedding(
        self,
        emb: torch.Tensor,
        cameras: torch.Tensor | None,
        camera_mask: torch.Tensor | None,
        batch_size: int,
        num_frames: int,
    ) -> torch.Tensor:
        """Add the camera embedding to the per-frame time embedding `emb` of shape (B * F, D)."""
        if cameras is None:
            if camera_mask is not None:
                raise ValueError("camera_mask was given without cameras")
            return emb
        cameras = camera_vectors(cameras, batch_size, num_frames, self.config.camera_dim)
        cam_emb = self.camera_embedding(cameras.to(device=emb.device, dtype=emb.dtype))  # (B, F, D)
        if camera_mask is not None:
            camera_mask = torch.as_tensor(camera_mask, device=emb.device)
            if camera_mask.shape != (batch_size,):
                raise ValueError(
                    f"camera_mask: expected shape ({batch_size},) (one flag per sample), got {tuple(camera_mask.shape)}"
                )
            cam_emb = cam_emb * camera_mask.to(emb.dtype)[:, None, None]
        return emb + cam_emb.reshape(batch_size * num_frames, -1)

    def run_block(self, block, *args):
        """Call a UNet block, through gradient checkpointing when it is enabled and grads are on."""
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    def camera_unet_body(
        self,
        sample: torch.Tensor,
        emb: torch.Tensor,
        context: torch.Tensor,
        cameras: torch.Tensor | None = None,
        camera_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, C_in, F, H, W) -> (B, C_out, F, H, W), frames as batch.

        emb: (B, D) per-sample embedding (time, + fps for I2MV); context: (B, T, D) cross-attention
        tokens; both are repeated per frame and each frame's camera embedding is added to `emb`.
        attention_mask: additive bias for the context or None.
        """
        batch_size, _, num_frames, height, width = sample.shape
        emb = self.frame_embeddings(emb, cameras, camera_mask, batch_size, num_frames)
        context = context.repeat_interleave(num_frames, dim=0, output_size=context.shape[0] * num_frames)
        # Sizes that are not a multiple of the total downsampling factor need explicit upsample sizes.
        forward_upsample_size = any(s % 2**self.num_upsamplers != 0 for s in (height, width))
        upsample_size = None

        # frames as batch: (B, C, F, H, W) -> (B * F, C, H, W)
        sample = sample.permute(0, 2, 1, 3, 4).reshape((batch_size * num_frames, -1, height, width))
        sample = self.conv_in(sample)
        if self.ray_map_in is not None and cameras is not None:
            rays = self.ray_map(cameras, camera_mask, batch_size, num_frames, height, width)
            sample = sample + self.ray_map_in(rays.to(device=sample.device, dtype=sample.dtype))
        sample = self.transformer_in(
            sample, num_frames=num_frames, cross_attention_kwargs=cross_attention_kwargs, return_dict=False
        )[0]

        # down
        down_block_res_samples = (sample,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res_samples = self.run_block(
                    block, sample, emb, context, attention_mask, num_frames, cross_attention_kwargs
                )
            else:
                sample, res_samples = self.run_block(block, sample, emb, num_frames)
            down_block_res_samples += res_samples

        if down_block_additional_residuals is not None:
            down_block_res_samples = tuple(
                res + extra for res, extra in zip(down_block_res_samples, down_block_additional_residuals)
            )

        # mid
        if self.mid_block is not None:
            sample = self.run_block(
                self.mid_block, sample, emb, context, attention_mask, num_frames, cross_attention_kwargs
            )
        if mid_block_additional_residual is not None:
            sample = sample + mid_block_additional_residual

        # up
        for i, block in enumerate(self.up_blocks):
            is_final_block = i == len(self.up_blocks) - 1
            res_samples = down_block_res_samples[-len(block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            if getattr(block, "has_cross_attention", False):
                sample = self.run_block(
                    block, sample, res_samples, emb, context, upsample_size, attention_mask, num_frames,
                    cross_attention_kwargs,
                )
            else:
                sample = self.run_block(block, sample, res_samples, emb, upsample_size, num_frames)

        # output head, back to (B, C, F, H, W)
        if self.conv_norm_out is not None:
            sample = self.conv_act(self.conv_norm_out(sample))
        sample = self.conv_out(sample)
        return sample.reshape((batch_size, num_frames) + sample.shape[1:]).permute(0, 2, 1, 3, 4)

    @classmethod
    def from_base(cls, pretrained_model_name_or_path, subfolder: str | None = "unet", camera_dim: int = 16,
                  camera_embed_dim: int | None = None, **kwargs):
        """Load a base video UNet (hub id or local diffusers folder) and add a zero-initialised camera
        branch. Only camera weights may be missing from the base checkpoint."""
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "token", "revision", "local_files_only") if k in kwargs}
        config = dict(cls.base_class.load_config(pretrained_model_name_or_path, subfolder=subfolder, **hub_kwargs))
        if "camera_dim" in config:
            raise ValueError(
                f"{pretrained_model_name_or_path}: this checkpoint already has a camera branch "
                f"({config.get('_class_name')}); load it with {cls.__name__}.from_pretrained"
            )
        base = cls.base_class.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        model = cls.from_config(base.config, camera_dim=camera_dim, camera_embed_dim=camera_embed_dim)
        result = model.load_state_dict(base.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("camera_embedding.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{pretrained_model_name_or_path}: weights do not fit {cls.__name__}; "
                f"missing (non-camera) keys: {missing}; unexpected keys: {result.unexpected_keys}"
            )
        return model.to(dtype=base.dtype)
