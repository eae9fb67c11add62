"""Posed view sets: what the evaluation protocols consume.

A view set is V images of one object on a plain background with their cameras (project OpenGL
c2w). It comes from a generation folder written by `videomv.sampling.export.save_generation`
(`views/*.png` + `cameras.json` {"cameras", "fovy_deg"}, optional `settings.json` with the prompt
and background), or from ground-truth renders in the G-Objaverse layout.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from videomv.data.common import parse_background, resize
from videomv.defaults import TEXT
from videomv.geometry import check_c2w

DEFAULT_BACKGROUND = TEXT.background


@dataclass
class ViewSet:
    """images (V, 3, H, W) in [0, 1]; cameras (V, 4, 4); alphas (V, 1, H, W) when known (renders)."""

    name: str
    images: torch.Tensor
    cameras: torch.Tensor
    fovy: float
    prompt: str = ""
    background: tuple = DEFAULT_BACKGROUND
    alphas: torch.Tensor | None = None

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"view set {self.name}: images must be (V, 3, H, W), got {tuple(self.images.shape)}")
        self.cameras = check_c2w(self.cameras, f"view set {self.name}: cameras")
        if self.cameras.shape != (len(self.images), 4, 4):
            raise ValueError(f"view set {self.name}: {len(self.images)} images but cameras of shape {tuple(self.cameras.shape)}")
        if self.alphas is not None and self.alphas.shape != (len(self.images), 1, *self.images.shape[-2:]):
            raise ValueError(f"view set {self.name}: alphas must be (V, 1, H, W), got {tuple(self.alphas.shape)}")
        if not 0 < float(self.fovy) < 180:
            raise ValueError(f"view set {self.name}: fovy must be in (0, 180) degrees, got {self.fovy}")
        self.background = tuple(float(b) for b in self.background)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    def resized(self, resolution: int | None) -> "ViewSet":
        """The same views at `resolution` (antialiased; unchanged when None or already there)."""
        if resolution is None or (self.images.shape[-2:] == (resolution, resolution)):
            return self
        alphas = None if self.alphas is None else resize(self.alphas, resolution)
        return replace(self, images=resize(self.images, resolution), alphas=alphas)

    def select(self, indices) -> "ViewSet":
        indices = list(indices)
        alphas = None if self.alphas is None else self.alphas[indices]
        return replace(self, images=self.images[indices], cameras=self.cameras[indices], alphas=alphas)


def is_view_set_folder(folder: Path) -> bool:
    return (folder / "views").is_dir() and (folder / "cameras.json").is_file()


def find_view_set_folders(root: str | Path) -> list[Path]:
    """`root` itself when it is a view-set folder, else its view-set subfolders, sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"views folder {root} is not a directory")
    if is_view_set_folder(root):
        return [root]
    found = sorted(p for p in root.iterdir() if p.is_dir() and is_view_set_folder(p))
    if not found:
        raise ValueError(f"no view sets in {root}: expected subfolders with views/*.png and cameras.json")
    return found


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def load_view_set(folder: str | Path, name: str | None = None, fovy: float | None = None,
                  background=None, prompt: str | None = None) -> ViewSet:
    """A generation folder -> ViewSet. Prompt, background and field of view come from the folder's
    `settings.json` / `cameras.json` unless given."""
    folder = Path(folder)
    if not is_view_set_folder(folder):
        raise ValueError(f"{folder} is not a view-set folder (expected views/*.png and cameras.json)")
    meta = _read_json(folder / "cameras.json")
    settings = _read_json(folder / "settings.json") if (folder / "settings.json").is_file() else {}
    try:
        cameras = torch.tensor(meta["cameras"], dtype=torch.float32)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{folder / 'cameras.json'}: expected 'cameras', a list of 4x4 matrices ({err})") from None
    fovy = fovy if fovy is not None else meta.get("fovy_deg", settings.get("fovy"))
    if fovy is None:
        raise ValueError(f"{folder}: no field of view in cameras.json ('fovy_deg') or settings.json ('fovy')")
    files = sorted((folder / "views").glob("*.png"))
    if len(files) != len(cameras):
        raise ValueError(f"{folder}: {len(files)} view images but {len(cameras)} cameras")
    images = []
    for path in files:
        try:
            with Image.open(path) as img:
                images.append(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)
        except OSError as err:
            raise ValueError(f"cannot read view image {path}: {err}") from None
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"{folder}: view images differ in size")
    background = background if background is not None else settings.get("background", DEFAULT_BACKGROUND)
    return ViewSet(
        name=name or folder.name,
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        cameras=cameras,
        fovy=float(fovy),
        prompt=prompt if prompt is not None else str(settings.get("prompt") or ""),
        background=tuple(parse_background(background).tolist()),
    )


def load_view_sets(root: str | Path, limit: int | None = None) -> list[ViewSet]:
    folders = find_view_set_folders(root)
    return [load_view_set(f) for f in folders[:limit]]


def read_split(root: str | Path, split: str) -> list[str]:
    """Object ids of `<root>/<split>.txt`."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        raise ValueError(f"split file {path} does not exist (expected one '<dir_id>/<obj_id>' per line)")
    ids = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    ids = [i for i in ids if i]
    if not ids:
        raise ValueError(f"split file {path} is empty")
    return ids


class GroundTruthViewSets(Sequence):
    """Ground-truth view sets of a G-Objaverse-layout dataset, each read from disk when accessed."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> ViewSet:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} objects")
        item = self.dataset.load(index % len(self))  # no silent skipping: a broken ground truth is an error
        return ViewSet(name=item["object_id"], images=((item["images"] + 1) / 2).clamp(0, 1), cameras=item["cameras"],
                       fovy=item["fovy"], prompt=item["caption"], alphas=item["alphas"],
                       background=tuple(self.dataset.background.tolist()))


def ground_truth_view_sets(root: str | Path, split: str = "test", background="grey", resolution: int | None = None,
                           num_views: int = 24, limit: int | None = None) -> GroundTruthViewSets:
    """Ground-truth renders of the objects of a split (G-Objaverse layout), composited on `background`
    (the evaluated model's), at `resolution` (default: the renders' own); the prompt is the caption."""
    from videomv.data.gobjaverse import VIEW_DIR, GObjaverseDataset, view_files

    objects = read_split(root, split)[:limit]
    if resolution is None:  # the renders' own size
        first = view_files(Path(root) / objects[0] / VIEW_DIR, 0)[0]
        try:
            with Image.open(first) as img:
                resolution = img.size[1]
        except OSError as err:
            raise ValueError(f"cannot read ground-truth render {first}: {err}") from None
    return GroundTruthViewSets(GObjaverseDataset(root, objects=objects, num_views=num_views, resolution=resolution,
                                                 background=background))
