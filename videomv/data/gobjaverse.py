"""Multi-view orbit renders in the G-Objaverse layout, as published (the real data set, renders of
any mesh by tools/render_objects.py, and the toy world):

    <root>/<dir_id>/<obj_id>/campos_512_v4/<view:05d>/<view:05d>.png (RGBA) and <view:05d>.json

Each view folder holds files named after the view: view 5 is `00005/00005.png`. A folder in the
older naming (`00005/00000.png`) is refused with a message saying what is expected.

Bad data is skipped with the object named and the reason recorded (`SkippingDataset.skipped`): a
view without an alpha channel, a non-square view, views of different sizes, an unreadable file, a
camera json without the camera keys or with non-finite values. Objects without a caption are
listed in `missing_captions` (logged at construction); with `require_captions=True` they are
skipped instead.

Views are grouped into orbits of `num_views` consecutive view folders (views 0..23 form the first
24-view orbit). Real G-Objaverse objects have 40 views, of which only 0..23 make a full 24-view
orbit; with `random_elevation_subset=True` an object holding several complete groups (for example
48 views = two orbits at different elevations) serves one group picked at random per access, and an
object with a single group always serves that one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from videomv.geometry import gobjaverse_fov_deg, gobjaverse_json_to_c2w

from .common import ItemError, SkippingDataset, composite, load_rgba, parse_background, resize

logger = logging.getLogger("videomv.data")

VIEW_DIR = "campos_512_v4"


class LayoutError(ValueError):
    """A dataset folder is not in the published G-Objaverse layout."""


def view_files(view_root: Path, view: int) -> tuple[Path, Path]:
    """(png, json) of view `view` under `<obj>/campos_512_v4`: `<v:05d>/<v:05d>.png` and `.json`."""
    folder = Path(view_root) / f"{view:05d}"
    return folder / f"{view:05d}.png", folder / f"{view:05d}.json"


def check_view_naming(view_root: Path, view: int) -> None:
    """Raise LayoutError when view `view` is stored in the older `<v:05d>/00000.png` naming."""
    png, _ = view_files(view_root, view)
    old = png.parent / "00000.png"
    if view != 0 and not png.is_file() and old.is_file():
        raise LayoutError(
            f"{old}: view {view} is stored as {view:05d}/00000.png; the G-Objaverse layout names each view's "
            f"files after the view ({view:05d}/{view:05d}.png and {view:05d}.json). Rebuild the folder "
            "(toy worlds: tools/make_toy_dataset.py) or rename the files")


def read_object_list(objects, root: Path) -> list[str]:
    """Object ids from a list, a text file (one id per line, '#' comments), a JSON list of
    '<dir_id>/<obj_id>' strings (the release's gobjaverse_280k.json) or a scan of `root`."""
    if objects is None:
        ids = sorted(p.parent.relative_to(root).as_posix() for p in root.glob(f"*/*/{VIEW_DIR}") if p.is_dir())
        if not ids:
            raise ValueError(f"no objects found under {root} (expected <dir_id>/<obj_id>/{VIEW_DIR}/ folders)")
        return ids
    if isinstance(objects, (str, os.PathLike)):
        path = Path(objects)
        if not path.is_file():
            raise ValueError(f"object list {path} does not exist")
        if path.suffix.lower() == ".json":
            ids = _read_json_list(path)
        else:
            lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
            ids = [line for line in lines if line]
        if not ids:
            raise ValueError(f"object list {path} is empty")
        return ids
    ids = [str(o) for o in objects]
    if not ids:
        raise ValueError("objects: expected a non-empty list of '<dir_id>/<obj_id>' ids")
    return ids


def _read_json_list(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"object list {path} is not valid JSON: {err}") from None
    if not isinstance(data, list) or not all(isinstance(o, str) and "/" in o for o in data):
        raise ValueError(f"object list {path}: expected a JSON list of '<dir_id>/<obj_id>' strings")
    return [o.strip("/") for o in data]


def read_captions(captions, root: Path) -> dict[str, str]:
    """Captions from a dict, a JSON file mapping ids to captions (the project's captions.json, or
    Cap3D's text_captions_cap3d.json), or (None) `<root>/captions.json` when it exists. Keys are
    '<dir_id>/<obj_id>' or a bare '<obj_id>' (see `caption_for`)."""
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


def caption_for(captions: dict[str, str], object_id: str) -> str | None:
    """The caption of '<dir_id>/<obj_id>': under the full id, else under the bare '<obj_id>'."""
    if object_id in captions:
        return captions[object_id]
    return captions.get(object_id.rsplit("/", 1)[-1])


class GObjaverseDataset(SkippingDataset):
    """Items: images (F,3,H,W) in [-1, 1] composited on `background`, alphas (F,1,H,W) in [0, 1],
    cameras (F,4,4) project c2w, views (F,) view indices, fovy (degrees), caption (+ suffix),
    object_id, has_cameras=True. F = len(view_indices) or num_views.

    A bad object is skipped with the reason recorded (see the module docstring and `SkippingDataset`);
    replacements are drawn pseudo-randomly from `seed`."""

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
        require_captions: bool = False,
        seed: int = 0,
    ):
        super().__init__(seed)
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
        self.require_captions = require_captions
        self.missing_captions = [o for o in self.objects if caption_for(self.captions, o) is None]
        if self.missing_captions:
            shown = ", ".join(self.missing_captions[:10]) + (", ..." if len(self.missing_captions) > 10 else "")
            logger.warning("%d of %d objects have no caption (%s); %s", len(self.missing_captions), len(self.objects),
                           shown, "they are skipped" if require_captions else "they get an empty caption")
        self._check_naming()

    def _check_naming(self) -> None:
        """Refuse a folder in the older naming early, from the first object that has a view 1."""
        for object_id in self.objects[:8]:
            view_root = self.root / object_id / VIEW_DIR
            if (view_root / "00001").is_dir():
                check_view_naming(view_root, 1)
                return

    def __len__(self) -> int:
        return len(self.objects)

    def item_id(self, index: int) -> str:
        return self.objects[index]

    def caption(self, index: int) -> str:
        """The caption `load` gives the item (empty where none is known), without reading its views."""
        return (caption_for(self.captions, self.objects[index]) or "") + self.caption_suffix

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
        caption = caption_for(self.captions, object_id)
        if caption is None and self.require_captions:
            raise ItemError("no caption")
        view_root = self.root / object_id / VIEW_DIR
        start = self._group_start(view_root)
        views = [start + v for v in self.view_indices]
        images, alphas, cameras, fovy = [], [], [], None
        for view in views:
            png, meta_file = view_files(view_root, view)
            try:
                rgb, alpha = load_rgba(png, require_alpha=True)
            except ItemError:
                check_view_naming(view_root, view)  # a folder in the older naming is refused, not skipped
                raise
            if rgb.shape[1] != rgb.shape[2]:
                raise ItemError(f"{png}: view is {rgb.shape[2]}x{rgb.shape[1]} pixels; expected a square render")
            if images and rgb.shape != images[0].shape:
                raise ItemError(f"{png}: image size {tuple(rgb.shape[1:])} differs from the other views")
            meta = _read_camera_json(meta_file)
            try:
                c2w = gobjaverse_json_to_c2w(meta)
                view_fovy = gobjaverse_fov_deg(meta) if fovy is None else fovy
            except (KeyError, ValueError, TypeError) as err:
                raise ItemError(f"bad camera json {meta_file}: {err}") from None
            if not torch.isfinite(c2w).all() or not (math.isfinite(view_fovy) and 0 < view_fovy < 180):
                raise ItemError(f"camera json {meta_file} has non-finite or out-of-range values")
            cameras.append(c2w)
            fovy = view_fovy
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
            "caption": self.caption(index),
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
