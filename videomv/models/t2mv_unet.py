"""Text-to-multi-view UNet: ModelScope-T2V's `UNet3DConditionModel` with a per-frame camera embedding."""

from __future__ import annotations

from typing import Any

import torch
from diffusers.configuration_utils import register_to_config
# ModelMixin in this module's namespace lets DiffusionPipeline.from_pretrained find the load method.
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401
from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel, UNet3DConditionOutput
from diffusers.utils.torch_utils import maybe_adjust_dtype_for_device

from .camera_embedding import CameraConditionedMixin, CameraEmbedding


def timestep_batch(timestep, batch_size: int, device) -> torch.Tensor:
    """A timestep given as int/float/0-d/1-d tensor, broadcast to (batch_size,)."""
    if not torch.is_tensor(timestep):
        dtype = maybe_adjust_dtype_for_device(torch.float64 if isinstance(timestep, float) else torch.int64, device)
        timestep = torch.tensor([timestep], dtype=dtype, device=device)
    elif timestep.ndim == 0:
        timestep = timestep[None].to(device)
    return timestep.expand(batch_size)


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
        time_embed_dim = block_out_channels[0] * 4
        if camera_embed_dim is not None and camera_embed_dim != time_embed_dim:
            raise ValueError(
                f"camera_embed_dim must equal the time-embedding width 4 * block_out_channels[0] = {time_embed_dim}, "
                f"got {camera_embed_dim}"
            )
        self.camera_embedding = CameraEmbedding(camera_dim, time_embed_dim)
        self.gradient_checkpointing = False

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
        batch_size, num_frames = sample.shape[0], sample.shape[2]

        # Sizes that are not a multiple of the total downsampling factor need explicit upsample sizes.
        forward_upsample_size = any(s % 2**self.num_upsamplers != 0 for s in sample.shape[-2:])
        upsample_size = None

        if attention_mask is not None:  # 1 = keep, 0 = discard -> additive bias
            attention_mask = (1 - attention_mask.to(sample.dtype)) * -10000.0
            attention_mask = attention_mask.unsqueeze(1)

        # 1. time embedding, repeated per frame, plus the per-frame camera embedding
        timesteps = timestep_batch(timestep, batch_size, sample.device)
        t_emb = self.time_proj(timesteps).to(dtype=self.dtype)
        emb = self.time_embedding(t_emb, timestep_cond)
        emb = emb.repeat_interleave(num_frames, dim=0, output_size=batch_size * num_frames)
        emb = self.add_camera_embedding(emb, cameras, camera_mask, batch_size, num_frames)
        encoder_hidden_states = encoder_hidden_states.repeat_interleave(
            num_frames, dim=0, output_size=encoder_hidden_states.shape[0] * num_frames
        )

        # 2. frames as batch: (B, C, F, H, W) -> (B * F, C, H, W)
        sample = sample.permute(0, 2, 1, 3, 4).reshape((batch_size * num_frames, -1) + sample.shape[3:])
        sample = self.conv_in(sample)
        sample = self.transformer_in(
            sample, num_frames=num_frames, cross_attention_kwargs=cross_attention_kwargs, return_dict=False
        )[0]

        # 3. down
        down_block_res_samples = (sample,)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, res_samples = self.run_block(
                    block, sample, emb, encoder_hidden_states, attention_mask, num_frames, cross_attention_kwargs
                )
            else:
                sample, res_samples = self.run_block(block, sample, emb, num_frames)
            down_block_res_samples += res_samples

        if down_block_additional_residuals is not None:
            down_block_res_samples = tuple(
                res + extra for res, extra in zip(down_block_res_samples, down_block_additional_residuals)
            )

        # 4. mid
        if self.mid_block is not None:
            sample = self.run_block(
                self.mid_block, sample, emb, encoder_hidden_states, attention_mask, num_frames, cross_attention_kwargs
            )
        if mid_block_additional_residual is not None:
            sample = sample + mid_block_additional_residual

        # 5. up
        for i, block in enumerate(self.up_blocks):
            is_final_block = i == len(self.up_blocks) - 1
            res_samples = down_block_res_samples[-len(block.resnets) :]
            down_block_res_samples = down_block_res_samples[: -len(block.resnets)]
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            if getattr(block, "has_cross_attention", False):
                sample = self.run_block(
                    block, sample, res_samples, emb, encoder_hidden_states, upsample_size, attention_mask,
                    num_frames, cross_attention_kwargs,
                )
            else:
                sample = self.run_block(block, sample, res_samples, emb, upsample_size, num_frames)

        # 6. post-process, back to (B, C, F, H, W)
        if self.conv_norm_out:
            sample = self.conv_act(self.conv_norm_out(sample))
        sample = self.conv_out(sample)
        sample = sample.reshape((batch_size, num_frames) + sample.shape[1:]).permute(0, 2, 1, 3, 4)

        if not return_dict:
            return (sample,)
        return UNet3DConditionOutput(sample=sample)
