"""Text-to-multi-view UNet: ModelScope-T2V's `UNet3DConditionModel` with a per-frame camera embedding."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
# ModelMixin in this module's namespace lets DiffusionPipeline.from_pretrained find the load method.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel, UNet3DConditionOutput

from .camera_unet import CameraConditionedMixin


class T2MVUNet(CameraConditionedMixin, UNet3DConditionModel):
    """`UNet3DConditionModel` whose frames are views, each with its own camera.

    The camera MLP (`CameraEmbedding`, width = time-embedding width = 4 x block_out_channels[0]) is
    added to the time embedding after it is repeated over frames. The forward pass follows the base
    model's, plus gradient checkpointing of whole blocks.
    """

    base_class = UNet3DConditionModel
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
        downsample_padding: int = 1,
        mid_block_scale_factor: float = 1,
        act_fn: str = "silu",
        norm_num_groups: int | None = 32,
        norm_eps: float = 1e-5,
        cross_attention_dim: int = 1024,
        attention_head_dim: int | tuple[int] = 64,
        num_attention_heads: int | tuple[int] | None = None,
        time_cond_proj_dim: int | None = None,
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
            downsample_padding=downsample_padding,
            mid_block_scale_factor=mid_block_scale_factor,
            act_fn=act_fn,
            norm_num_groups=norm_num_groups,
            norm_eps=norm_eps,
            cross_attention_dim=cross_attention_dim,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            time_cond_proj_dim=time_cond_proj_dim,
        )
        self.init_camera_branch(camera_dim, camera_embed_dim, block_out_channels[0] * 4, ray_map_fovy)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        cameras: torch.Tensor | None = None,
        camera_mask: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        down_block_additional_residuals: tuple[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet3DConditionOutput | tuple[torch.Tensor]:
        """Predict noise (or v) for `sample` (B, C, F, H, W).

        cameras: (B, F, 16) camera vectors or (B, F, 4, 4) c2w; None = no camera (e.g. 2D images
        trained as 1-frame clips). camera_mask: (B,) 1 keeps, 0 drops the camera of that sample.
        Other arguments are those of `UNet3DConditionModel.forward`.
        """
        if attention_mask is not None:  # 1 = keep, 0 = discard -> additive bias
            attention_mask = (1 - attention_mask.to(sample.dtype)) * -10000.0
            attention_mask = attention_mask.unsqueeze(1)

        emb = self.time_embedding_of(timestep, sample.shape[0], sample.device, timestep_cond)
        sample = self.camera_unet_body(sample, emb, encoder_hidden_states, cameras, camera_mask, attention_mask,
                                       cross_attention_kwargs, down_block_additional_residuals,
                                       mid_block_additional_residual)
        if not return_dict:
            return (sample,)
        return UNet3DConditionOutput(sample=sample)
