"""Multi-view orbit renders in the G-Objaverse layout (the real data set and the toy world):

    <root>/<dir_id>/<obj_id>/campos_512_v4/<view:05d>/{00000.png (RGBA), 00000.json}

Views are grouped into orbits of `num_views` consecutive view folders (views 0..23 form the first
24-view orbit). Real G-Objaverse objects have 40 views, of which only 0..23 make a full 24-view
orbit; with `random_elevation_subset=True` an object holding several complete groups (for example
48 views = two orbits at different elevations) serves one group picked at random per access, and an
object with a single group always serves that one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import torch

from videomv.geometry import gobjaverse_fov_deg, gobjaverse_json_to_c2w

from .common import ItemError, SkippingDataset, composite, load_rgba, parse_background, resize

logger = logging.getLogger("videomv.data")

VIEW_DIR = "campos_512_v4"


def read_object_list(objects, root: Path) -> list[str]:
    """Object ids from a list, a text file (one id per line, '#' comments) or a scan of `root`."""
    if objects is None:
        ids = sorted(p.parent.relative_to(root).as_posix() for p in root.glob(f"*/*/{VIEW_DIR}") if p.is_dir())
        if not ids:
            raise ValueError(f"no objects found under {root} (expected <dir_id>/<obj_id>/{VIEW_DIR}/ folders)")
        return ids
    if isinstance(objects, (str, os.PathLike)):
        path = Path(objects)
        if not path.is_file():
            raise ValueError(f"object list {path} does not exist")
        lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
        ids = [line for line in lines if line]
        if not ids:
            raise ValueError(f"object list {path} is empty")
        return ids
    ids = [str(o) for o in objects]
    if not ids:
        raise ValueError("objects: expected a non-empty list of '<dir_id>/<obj_id>' ids")
    return ids


def read_captions(captions, root: Path) -> dict[str, str]:
    """Captions from a dict, a json file, or (None) `<root>/captions.json` when it exists."""
    if captions is None:
        default = root / "captions.json"
        if not default.is_file():
            return {}
        captions = default
    if isinstance(captions, dict):
        return {str(k): str(v) for k, v in captions.items()}
    path = Path(captions)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"caption file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"caption file {path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"caption file {path}: expected an object mapping '<dir_id>/<obj_id>' to a caption")
    return {str(k): str(v) for k, v in data.items()}


class GObjaverseDataset(SkippingDataset):
    """Items: images (F,3,H,W) in [-1, 1] composited on `background`, alphas (F,1,H,W) in [0, 1],
    cameras (F,4,4) project c2w, views (F,) view indices, fovy (degrees), caption (+ suffix),
    object_id, has_cameras=True. F = len(view_indices) or num_views.

    A missing or corrupt file makes the item be skipped (see `SkippingDataset`)."""

    def __init__(
        self,
        root,
        objects=None,
        num_views: int = 24,
        view_indices: Sequence[int] | None = None,
        resolution: int = 256,
        background="grey",
        captions=None,
        caption_suffix: str = "",
        random_elevation_subset: bool = False,
    ):
        super().__init__()
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"dataset root {self.root} is not a directory")
        if num_views < 1:
            raise ValueError(f"num_views must be >= 1, got {num_views}")
        if resolution < 1:
            raise ValueError(f"resolution must be >= 1, got {resolution}")
        self.num_views = num_views
        self.view_indices = list(range(num_views)) if view_indices is None else [int(v) for v in view_indices]
        bad = [v for v in self.view_indices if not 0 <= v < num_views]
        if bad or not self.view_indices:
            raise ValueError(f"view_indices must be a non-empty list of indices in [0, {num_views}), got {view_indices}")
        self.resolution = resolution
        self.background = parse_background(background)
        self.caption_suffix = caption_suffix
        self.random_elevation_subset = random_elevation_subset
        self.objects = read_object_list(objects, self.root)
        self.captions = read_captions(captions, self.root)
        missing = [o for o in self.objects if o not in self.captions]
        if missing:
            logger.warning(
                "%d of %d objects have no caption (e.g. %s); they get an empty caption", len(missing), len(self.objects), missing[0]
            )

    def __len__(self) -> int:
        return len(self.objects)

    def item_id(self, index: int) -> str:
        return self.objects[index]

    def _group_start(self, view_root: Path) -> int:
        try:
            count = sum(1 for name in os.listdir(view_root) if name.isdigit())
        except OSError as err:
            raise ItemError(f"cannot list {view_root}: {err}") from None
        groups = count // self.num_views
        if groups < 1:
            raise ItemError(f"{view_root} has {count} views, fewer than num_views={self.num_views}")
        if self.random_elevation_subset and groups > 1:
            return int(torch.randint(groups, ()).item()) * self.num_views
        return 0

    def load(self, index: int) -> dict:
        object_id = self.objects[index]
        view_root = self.root / object_id / VIEW_DIR
        start = self._group_start(view_root)
        views = [start + v for v in self.view_indices]
        images, alphas, cameras, fovy = [], [], [], None
        for view in views:
            view_dir = view_root / f"{view:05d}"
            rgb, alpha = load_rgba(view_dir / "00000.png")
            if images and rgb.shape != images[0].shape:
                raise ItemError(f"{view_dir}: image size {tuple(rgb.shape[1:])} differs from the other views")
            meta = _read_camera_json(view_dir / "00000.json")
            try:
                cameras.append(gobjaverse_json_to_c2w(meta))
                if fovy is None:
                    fovy = gobjaverse_fov_deg(meta)
            except (KeyError, ValueError, TypeError) as err:
                raise ItemError(f"bad camera json {view_dir / '00000.json'}: {err}") from None
            images.append(rgb)
            alphas.append(alpha)
        rgb = composite(torch.stack(images), torch.stack(alphas), self.background)
        rgb = resize(rgb, self.resolution)
        alpha = resize(torch.stack(alphas), self.resolution)
        return {
            "images": rgb * 2 - 1,
            "alphas": alpha,
            "cameras": torch.stack(cameras),
            "views": torch.tensor(views),
            "fovy": float(fovy),
            "caption": self.captions.get(object_id, "") + self.caption_suffix,
            "object_id": object_id,
            "has_cameras": True,
        }


def _read_camera_json(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ItemError(f"cannot read camera json {path}: {err}") from None
    if not isinstance(meta, dict):
        raise ItemError(f"camera json {path} is not an object")
    return meta
