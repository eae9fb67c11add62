"""A tiny, randomly initialised VideoMV (text or image) for end-to-end tests."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL

from transformers import CLIPImageProcessor

from videomv.models import I2MVUNet
from videomv.models.conditioning import ImageConditioner, TextConditioner
from videomv.models.t2mv_unet import T2MVUNet
from videomv.recon import Reconstructor
from videomv.sampling import I2MVPipeline, T2MVPipeline, image_scheduler, text_scheduler
from videomv import VideoMV

RESOLUTION = 32

# A two-level video UNet shared by the model and pipeline tests (8x8 latents).
TINY_UNET = dict(
    block_out_channels=(16, 32),
    down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
    layers_per_block=1,
    cross_attention_dim=16,
    attention_head_dim=8,
    norm_num_groups=8,
    sample_size=8,
)


def tiny_vae(seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=RESOLUTION,
    ).eval()


def tiny_t2mv_unet(seed: int = 0, camera_scale: float = 0.0) -> T2MVUNet:
    torch.manual_seed(seed)
    unet = T2MVUNet(
        sample_size=RESOLUTION // 2, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=8,
    )
    if camera_scale:
        with torch.no_grad():  # a non-zero camera branch, as after fine-tuning
            unet.camera_embedding.linear_2.weight.normal_(0, camera_scale)
    return unet.eval()


def tiny_text_videomv(with_reconstructor: bool = True, seed: int = 0) -> VideoMV:
    conditioner = TextConditioner.tiny(hidden_size=32, projection_dim=32, seed=seed)
    pipe = T2MVPipeline(vae=tiny_vae(seed), text_encoder=conditioner.text_encoder, tokenizer=conditioner.tokenizer,
                        unet=tiny_t2mv_unet(seed, camera_scale=0.1), scheduler=text_scheduler())
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(seed)
    recon = Reconstructor("tiny").eval() if with_reconstructor else None
    return VideoMV.from_parts(pipeline=pipe, reconstructor=recon,
                              settings=dict(resolution=RESOLUTION, num_inference_steps=5, guidance_scale=3.0))


def tiny_image_videomv(with_reconstructor: bool = False, seed: int = 0) -> VideoMV:
    """A tiny random image VideoMV, 32x32 views."""
    torch.manual_seed(seed)
    text = TextConditioner.tiny(hidden_size=16, projection_dim=16, seed=seed)
    unet = I2MVUNet(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                    up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1, cross_attention_dim=16,
                    attention_head_dim=8, norm_num_groups=8, sample_size=RESOLUTION // 2).eval()
    pipe = I2MVPipeline(vae=tiny_vae(seed), text_encoder=text.text_encoder, tokenizer=text.tokenizer,
                        image_encoder=ImageConditioner.tiny_image_encoder(hidden_size=16, projection_dim=16, image_size=16),
                        feature_extractor=CLIPImageProcessor(crop_size={"height": 16, "width": 16},
                                                             size={"shortest_edge": 16}),
                        unet=unet, scheduler=image_scheduler())
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(seed)
    return VideoMV.from_parts(pipeline=pipe, reconstructor=Reconstructor("tiny").eval() if with_reconstructor else None,
                              settings=dict(resolution=RESOLUTION, num_inference_steps=2))
