"""Camera-conditioned multi-view UNets (text: ModelScope-T2V, image: I2VGen-XL) and their encoders."""

from .camera_embedding import CameraEmbedding, camera_vectors
from .conditioning import ImageConditioner, ImageConditioning, TextConditioner, bundled_clip_tokenizer
from .denoise import MultiViewCondition, denoise
from .i2mv_unet import I2MVUNet
from .t2mv_unet import T2MVUNet

__all__ = [
    "CameraEmbedding",
    "I2MVUNet",
    "ImageConditioner",
    "ImageConditioning",
    "MultiViewCondition",
    "T2MVUNet",
    "TextConditioner",
    "bundled_clip_tokenizer",
    "camera_vectors",
    "denoise",
]
