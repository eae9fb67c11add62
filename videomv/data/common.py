"""Shared pieces of the datasets: backgrounds, image loading and compositing, resizing, and a base
class that replaces unreadable items by a pseudo-randomly drawn readable one (logged and recorded
with the reason)."""

from __future__ import annotations

import logging
import zlib
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from ..defaults import GREY, WHITE

logger = logging.getLogger("videomv.data")

BACKGROUNDS = {"grey": GREY, "gray": GREY, "white": WHITE, "black": (0.0, 0.0, 0.0)}


class ItemError(Exception):
    """An item of a dataset cannot be read (missing or corrupt file)."""


def parse_background(background) -> torch.Tensor:
    """'grey' (128/255), 'white', 'black' or an (r, g, b) triple in [0, 1] -> tensor (3,)."""
    if isinstance(background, str):
        if background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {sorted(BACKGROUNDS)} or an (r, g, b) triple, got {background!r}")
        return torch.tensor(BACKGROUNDS[background])
    try:
        value = torch.tensor([float(c) for c in background])
    except (TypeError, ValueError):
        raise ValueError(f"background must be a name or an (r, g, b) triple in [0, 1], got {background!r}") from None
    if value.shape != (3,) or (value < 0).any() or (value > 1).any():
        raise ValueError(f"background must be an (r, g, b) triple in [0, 1], got {background!r}")
    return value


def load_rgba(path, require_alpha: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """An image file -> rgb (3, H, W) and alpha (1, H, W), floats in [0, 1] (alpha 1 without an
    alpha channel). Raises ItemError when the file is missing or unreadable, or when
    `require_alpha` and it has no alpha channel (an object composited on some background cannot be
    put on the model's)."""
    try:
        with Image.open(path) as img:
            img.load()
            has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
            array = np.asarray(img.convert("RGBA" if has_alpha else "RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for missing/truncated files
        raise ItemError(f"cannot read image {path}: {err}") from None
    if require_alpha and not has_alpha:
        raise ItemError(f"image {path} has no alpha channel (mode {img.mode}); expected an RGBA render")
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    if has_alpha:
        return tensor[:3].contiguous(), tensor[3:].contiguous()
    return tensor, torch.ones(1, *tensor.shape[1:])


def composite(rgb: torch.Tensor, alpha: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Straight-alpha rgb over a constant background."""
    return rgb * alpha + background.view(3, 1, 1).to(rgb) * (1 - alpha)


def center_crop_square(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    size = min(h, w)
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top : top + size, left : left + size]


def resize(image: torch.Tensor, size: int) -> torch.Tensor:
    """(..., C, H, W) -> (..., C, size, size), antialiased bilinear; untouched when already there."""
    if image.shape[-2:] == (size, size):
        return image
    lead = image.shape[:-3]
    flat = image.reshape(-1, *image.shape[-3:])
    out = torch.nn.functional.interpolate(flat, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.clamp(0, 1).reshape(*lead, *out.shape[-3:])


class SkippingDataset(Dataset):
    """Base class: `load(index)` raises ItemError for a bad item; `__getitem__` then logs a warning,
    records it and returns a replacement: another item drawn pseudo-randomly from (seed, index,
    attempt), so the replacements of bad items spread over the dataset instead of repeating a bad
    item's neighbour, and the same index always gives the same item. An epoch never crashes on one
    bad file; if no item is readable it raises RuntimeError.

    `skipped` maps the id of every item found bad to the reason (`item_id(index)` -> message), for
    a summary at the end of a run; `num_skipped` is its size. The record is per process: with
    DataLoader workers each worker keeps its own."""

    random_draws = 16  # then a scan from the last draw, so a mostly-bad dataset still terminates

    def __init__(self, seed: int = 0):
        self.seed = int(seed)
        self.skipped: dict[str, str] = {}
        self._bad: set[int] = set()

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    def item_id(self, index: int) -> str:
        raise NotImplementedError

    def load(self, index: int) -> dict:
        raise NotImplementedError

    def _candidates(self, index: int, n: int):
        yield index
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/{index}".encode()))
        draw = index
        for _ in range(min(self.random_draws, n)):
            draw = int(torch.randint(n, (), generator=g))
            yield draw
        for step in range(1, n + 1):
            yield (draw + step) % n

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} items")
        index %= n
        for current in self._candidates(index, n):
            if current in self._bad:
                continue
            try:
                return self.load(current)
            except ItemError as err:
                self._bad.add(current)
                self.skipped[self.item_id(current)] = str(err)
                logger.warning("skipping %s (%s); %d item(s) skipped so far", self.item_id(current), err, len(self.skipped))
        raise RuntimeError(f"{type(self).__name__}: none of its {n} items could be read (see the warnings above)")


def collate(batch: Sequence[dict]) -> dict:
    """Stack a list of items (all with the same number of frames) into a batch."""
    return default_collate(list(batch))
