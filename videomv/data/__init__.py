"""Data: the G-Objaverse multi-view dataset and 2D images as 1-frame clips."""

from .common import ItemError, collate, parse_background
from .gobjaverse import GObjaverseDataset
from .image_folder import ImageCaptionDataset

__all__ = ["GObjaverseDataset", "ImageCaptionDataset", "ItemError", "collate", "parse_background"]
