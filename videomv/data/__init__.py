"""Data: the G-Objaverse multi-view dataset, 2D images as 1-frame clips, and the toy world."""

from .common import ItemError, collate, parse_background
from .gobjaverse import GObjaverseDataset
from .image_folder import ImageCaptionDataset
from .toyworld import ToyObject, render_object, sample_like, sample_object

__all__ = [
    "GObjaverseDataset",
    "ImageCaptionDataset",
    "ItemError",
    "ToyObject",
    "collate",
    "parse_background",
    "render_object",
    "sample_like",
    "sample_object",
]
