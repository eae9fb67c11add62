"""Image-to-multi-view UNet: I2VGen-XL's `I2VGenXLUNet` with a per-frame camera embedding."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
# ModelMixin in this module's namespace lets DiffusionPipeline.from_pretrained find the load method.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.models.unets.unet_3d_condition import UNet3DConditionOutput
from diffusers.models.unets.unet_i2vgen_xl import I2VGenXLUNet

from .camera_unet import CameraConditionedMixin, timestep_batch


class I2MVUNet(CameraConditionedMixin, I2VGenXLUNet):
    """`I2VGenXLUNet` whose frames are views, each with its own camera.

    Conditioning as I2VGen-XL: text embeddings, the CLIP image embedding, the VAE latents of the
    input image (first frame + position mask frames), and fps. The camera embedding is added to the
    time (+ fps) embedding after it is repeated over frames.
    """

    base_class = I2VGenXLUNet
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        sample_size: int | None = None,
        in_channels: int = 4,
        out_channels: int = 4,
        down_block_types: tuple[str, ...] = (
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "CrossAttnDownBlock3D",
            "DownBlock3D",
        ),
        up_block_types: tuple[str, ...] = (
            "UpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
            "CrossAttnUpBlock3D",
        ),
        block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280),
        layers_per_block: int = 2,
        norm_num_groups: int | None = 32,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | tuple[int] = 64,
        num_attention_heads: int | tuple[int] | None = None,
        camera_dim: int = 16,
        camera_embed_dim: int | None = None,
        ray_map_fovy: float | None = None,
    ):
        super().__init__(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            down_block_types=down_block_types,
            up_block_types=up_block_types,
            block_out_channels=block_out_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
        )
        self.init_camera_branch(camera_dim, camera_embed_dim, block_out_channels[0] * 4, ray_map_fovy)

    def context_embeddings(self, encoder_hidden_states, image_latents, image_embeddings) -> torch.Tensor:
        """Cross-attention context per sample: text tokens, tokens from the first image latent, and
        `in_channels` tokens from the CLIP image embedding."""
        first_latent = image_latents[:, :, 0]  # (B, C, h, w)
        latent_tokens = self.image_latents_context_embedding(first_latent)  # (B, D, h', w')
        latent_tokens = latent_tokens.flatten(2).transpose(1, 2)  # (B, h' * w', D)
        image_tokens = self.context_embedding(image_embeddings)
        image_tokens = image_tokens.view(-1, self.config.in_channels, self.config.cross_attention_dim)
        return torch.cat([encoder_hidden_states, latent_tokens, image_tokens], dim=1)

    def image_latent_features(self, image_latents: torch.Tensor) -> torch.Tensor:
        """Per-pixel temporal encoding of the image latents, concatenated to the sample channels."""
        batch_size, in_channels, num_frames, height, width = image_latents.shape
        x = image_latents.permute(0, 2, 1, 3, 4).reshape(batch_size * num_frames, in_channels, height, width)
        x = self.image_latents_proj_in(x)  # (B * F, C, h, w)
        channels = x.shape[1]
        x = x.reshape(batch_size, num_frames, channels, height, width).permute(0, 3, 4, 1, 2)
        x = self.image_latents_temporal_encoder(x.reshape(batch_size * height * width, num_frames, channels))
        return x.reshape(batch_size, height, width, num_frames, channels).permute(0, 4, 3, 1, 2)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        fps: torch.Tensor | int,
        image_latents: torch.Tensor,
        image_embeddings: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        cameras: torch.Tensor | None = None,
        camera_mask: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> UNet3DConditionOutput | tuple[torch.Tensor]:
        """Predict noise (or v) for `sample` (B, C, F, H, W).

        image_latents: (B, C, F, H, W) as `I2VGenXLPipeline` prepares them; image_embeddings: (B, 1, D)
        CLIP image embeddings; fps: (B,) or a number. cameras / camera_mask as in `T2MVUNet.forward`.
        """
        batch_size = sample.shape[0]
        t_emb = self.time_embedding_of(timestep, batch_size, sample.device, timestep_cond)
        fps = timestep_batch(fps, batch_size, sample.device)
        fps_emb = self.fps_embedding(self.time_proj(fps).to(dtype=self.dtype))
        context = self.context_embeddings(encoder_hidden_states, image_latents, image_embeddings)
        sample = torch.cat([sample, self.image_latent_features(image_latents)], dim=1)
        sample = self.camera_unet_body(sample, t_emb + fps_emb, context, cameras, camera_mask,
                                       cross_attention_kwargs=cross_attention_kwargs)
        if not return_dict:
            return (sample,)
        return UNet3DConditionOutput(sample=sample)
