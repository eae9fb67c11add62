"""A folder of captioned 2D images served as 1-frame clips with the keys of the multi-view items
(for joint training on 2D data, where the camera condition is unavailable: has_cameras=False)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .common import SkippingDataset, center_crop_square, composite, load_rgba, parse_background, resize

logger = logging.getLogger("videomv.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class ImageCaptionDataset(SkippingDataset):
    """Images under `root` (recursively) with captions from `<name>.txt` next to each image, or from
    `<root>/captions.json` ({relative path or file stem: caption}); a `.txt` file wins.

    Items: images (1,3,H,W) in [-1, 1] (center-cropped to square, alpha composited on
    `background`), alphas (1,1,H,W), cameras identity (1,4,4), views (1,), fovy, caption (+ suffix),
    object_id (relative path), has_cameras=False."""

    def __init__(self, root, resolution: int = 256, background="grey", caption_suffix: str = "", fovy: float = 49.1):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {self.root} is not a directory")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.resolution = resolution
        self.background = parse_background(background)
        self.caption_suffix = caption_suffix
        self.fovy = float(fovy)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")
        self.captions = self._read_caption_json()
        self.missing_captions = [self.item_id(i) for i, p in enumerate(self.files) if self._caption(p) is None]
        if self.missing_captions:
            shown = ", ".join(self.missing_captions[:10]) + (", ..." if len(self.missing_captions) > 10 else "")
            logger.warning("%d of %d images have no caption (%s); they get an empty caption",
                           len(self.missing_captions), len(self.files), shown)

    def _read_caption_json(self) -> dict[str, str]:
        path = self.root / "captions.json"
        if not path.is_file():
            return {}
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"caption file {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise ValueError(f"caption file {path}: expected an object mapping image names to captions")
        return {str(k): str(v) for k, v in data.items()}

    def _caption(self, path: Path) -> str | None:
        txt = path.with_suffix(".txt")
        if txt.is_file():
            return txt.read_text().strip()
        rel = path.relative_to(self.root).as_posix()
        for key in (rel, path.name, str(Path(rel).with_suffix("")), path.stem):
            if key in self.captions:
                return self.captions[key]
        return None

    def __len__(self) -> int:
        return len(self.files)

    def item_id(self, index: int) -> str:
        return self.files[index].relative_to(self.root).as_posix()

    def load(self, index: int) -> dict:
        path = self.files[index]
        rgb, alpha = load_rgba(path)
        rgb, alpha = center_crop_square(rgb), center_crop_square(alpha)
        rgb = resize(composite(rgb, alpha, self.background), self.resolution)
        alpha = resize(alpha, self.resolution)
        return {
            "images": (rgb * 2 - 1)[None],
            "alphas": alpha[None],
            "cameras": torch.eye(4)[None],
            "views": torch.zeros(1, dtype=torch.long),
            "fovy": self.fovy,
            "caption": (self._caption(path) or "") + self.caption_suffix,
            "object_id": self.item_id(index),
            "has_cameras": False,
        }
