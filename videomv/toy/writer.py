"""Write the toy world to disk in the G-Objaverse layout, in parallel.

<out>/<dir_id>/<obj_id>/campos_512_v4/<view:05d>/<view:05d>.png (RGBA 8-bit) and <view:05d>.json
<out>/captions.json          {"<dir_id>/<obj_id>": caption}
<out>/{train,val,test}.txt   one "<dir_id>/<obj_id>" per line
<out>/toyworld.json          generator settings
"""

from __future__ import annotations

import json
import os
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from videomv.data.gobjaverse import VIEW_DIR, view_files
from videomv.geometry import c2w_to_gobjaverse_json
from videomv.io import atomic_write_text

from . import world as toyworld

OBJECTS_PER_DIR = 1000
GENERATOR = "videomv.toy.world"  # written to toyworld.json; "videomv.data.toyworld" in older folders
GENERATORS = (GENERATOR, "videomv.data.toyworld")
LAYOUT = f"<dir_id>/<obj_id>/{VIEW_DIR}/<view:05d>/<view:05d>.png"
OLD_LAYOUT = f"<dir_id>/<obj_id>/{VIEW_DIR}/<view:05d>/00000.png"


def object_key(index: int) -> str:
    """'<dir_id>/<obj_id>' of toy object `index`."""
    return f"{index // OBJECTS_PER_DIR}/toy_{index:06d}"


def write_object(out: Path, seed: int, index: int, resolution: int, num_views: int = toyworld.NUM_VIEWS) -> tuple[str, str]:
    """Render and write one object; returns (key, caption)."""
    obj = toyworld.sample_object(seed, index)
    c2w, elevations, azimuths = toyworld.orbit_for(obj, num_views)
    images = toyworld.to_uint8(toyworld.render_object(obj, c2w, resolution, toyworld.FOVY))
    key = object_key(index)
    for v in range(num_views):
        png, meta_file = view_files(out / key / VIEW_DIR, v)
        png.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[v], mode="RGBA").save(png, compress_level=1)
        meta = c2w_to_gobjaverse_json(c2w[v], toyworld.FOVY)
        meta.update(elevation=float(elevations[v]), azimuth=float(azimuths[v]), radius=toyworld.RADIUS)
        meta_file.write_text(json.dumps(meta))
    return key, obj.caption


def split_indices(num_objects: int, fractions: tuple[float, float, float], seed: int) -> dict[str, list[int]]:
    """Disjoint train/val/test index lists covering range(num_objects), shuffled by `seed`."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not abs(sum(fractions) - 1) < 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng([seed, 2**31 - 1]).permutation(num_objects).tolist()
    n_val = int(round(num_objects * fractions[1]))
    n_test = int(round(num_objects * fractions[2]))
    n_train = num_objects - n_val - n_test
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
    }


def _init_worker():
    torch.set_num_threads(1)


def _write_star(args):
    return write_object(*args)


def build_dataset(
    out: str | Path,
    num_objects: int,
    resolution: int,
    seed: int = 0,
    num_views: int = toyworld.NUM_VIEWS,
    split: tuple[float, float, float] = (0.9, 0.05, 0.05),
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Render `num_objects` toy objects into `out`; returns the settings written to toyworld.json.
    Existing files are overwritten; objects left over from an earlier, larger build are not removed
    (they are absent from captions.json and the split lists)."""
    if num_objects < 1:
        raise ValueError(f"num_objects must be >= 1, got {num_objects}")
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    splits = split_indices(num_objects, tuple(split), seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, num_objects))
    jobs = [(out, seed, i, resolution, num_views) for i in range(num_objects)]
    captions = {}
    bar = tqdm(total=num_objects, desc="toy objects", unit="obj", disable=not progress)
    if workers == 1:
        _init_worker()
        results = map(_write_star, jobs)
        pool = None
    else:
        pool = Pool(workers, initializer=_init_worker)
        results = pool.imap_unordered(_write_star, jobs, chunksize=max(1, min(16, num_objects // (8 * workers))))
    try:
        for key, caption in results:
            captions[key] = caption
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    captions = {object_key(i): captions[object_key(i)] for i in range(num_objects)}
    (out / "captions.json").write_text(json.dumps(captions, indent=0))
    for name, indices in splits.items():
        (out / f"{name}.txt").write_text("".join(object_key(i) + "\n" for i in indices))
    settings = {
        "generator": GENERATOR,
        "version": toyworld.VERSION,
        "seed": seed,
        "num_objects": num_objects,
        "resolution": resolution,
        "num_views": num_views,
        "fovy": toyworld.FOVY,
        "radius": toyworld.RADIUS,
        "elevation_range": list(toyworld.ELEVATION_RANGE),
        "supersample": 2,
        "split": list(split),
        "objects_per_dir": OBJECTS_PER_DIR,
        "layout": LAYOUT,
    }
    (out / "toyworld.json").write_text(json.dumps(settings, indent=1))
    return settings


def extended_train_list(extra: int) -> str:
    """File name of the train list that `extend_train_split` writes for `extra` more objects."""
    return f"train_plus{extra}.txt"


def extend_train_split(root, extra: int, workers: int | None = None, progress: bool = True) -> Path:
    """Render `extra` more objects (indices num_objects .. num_objects + extra - 1) into a built toy
    world and write `train_plus<extra>.txt`: train.txt plus those new objects whose caption does not
    occur in the val or test split without also occurring in train.txt. So the captions the bar
    counts as never seen in training stay unseen, and val/test are untouched. Returns the list's path."""
    root = Path(root)
    if extra < 1:
        raise ValueError(f"extra_train_objects must be >= 1, got {extra}")
    settings = json.loads((root / "toyworld.json").read_text())
    start, seed = int(settings["num_objects"]), int(settings["seed"])
    captions = json.loads((root / "captions.json").read_text())
    split = {name: (root / f"{name}.txt").read_text().split() for name in ("train", "val", "test")}
    train_captions = {captions[o] for o in split["train"]}
    held_out = {captions[o] for name in ("val", "test") for o in split[name]} - train_captions
    workers = max(1, min(workers or os.cpu_count() or 1, extra))
    jobs = [(root, seed, i, int(settings["resolution"]), int(settings["num_views"])) for i in range(start, start + extra)]
    new = {}
    with Pool(workers, initializer=_init_worker) as pool:
        for key, caption in tqdm(pool.imap_unordered(_write_star, jobs, chunksize=16), total=extra,
                                 desc="extra toy objects", unit="obj", disable=not progress):
            new[key] = caption
    kept = [object_key(i) for i in range(start, start + extra) if new[object_key(i)] not in held_out]
    captions.update({object_key(i): new[object_key(i)] for i in range(start, start + extra)})
    atomic_write_text(root / "captions.json", json.dumps(captions, indent=0))
    return atomic_write_text(root / extended_train_list(extra), "".join(o + "\n" for o in split["train"] + kept))


def ensure_toy_dataset(root, toy_cfg) -> Path:
    """Build the toy world at `root` unless it is already there (`toyworld.json` and `train.txt`
    mark a finished build; one written in the older file naming is renamed in place, see
    `migrate_layout`). `toy_cfg` is the config's `data.toy` section (a mapping with
    num_objects, resolution and optionally seed, split, workers). A finished build at another
    resolution is an error rather than a silent mismatch."""
    root = Path(root)
    settings_file = root / "toyworld.json"
    if settings_file.is_file() and (root / "train.txt").is_file():
        settings = json.loads(settings_file.read_text())
        if int(settings.get("resolution", -1)) != int(toy_cfg["resolution"]):
            raise ValueError(
                f"toy world at {str(root)!r} was rendered at {settings.get('resolution')} px but the config asks "
                f"for data.toy.resolution={toy_cfg['resolution']}: point data.root elsewhere or delete it")
        if settings.get("layout", OLD_LAYOUT) != LAYOUT:
            migrate_layout(root)
    else:
        split = tuple(float(x) for x in toy_cfg.get("split", (0.9, 0.05, 0.05)))
        build_dataset(root, int(toy_cfg["num_objects"]), int(toy_cfg["resolution"]), seed=int(toy_cfg.get("seed", 0)),
                      split=split, workers=toy_cfg.get("workers"))
    extra = int(toy_cfg.get("extra_train_objects", 0) or 0)
    if extra and not (root / extended_train_list(extra)).is_file():
        extend_train_split(root, extra, workers=toy_cfg.get("workers"))
    return root


def migrate_layout(root) -> int:
    """Rename a toy world written in the older naming (`<v:05d>/00000.png`) to the published one
    (`<v:05d>/<v:05d>.png`), in place; returns the number of views renamed."""
    root = Path(root)
    settings_file = root / "toyworld.json"
    settings = json.loads(settings_file.read_text())
    renamed = 0
    for view_dir in tqdm(sorted(root.glob(f"*/*/{VIEW_DIR}/[0-9]*")), desc="renaming toy views", unit="view"):
        for suffix in (".png", ".json"):
            old, new = view_dir / f"00000{suffix}", view_dir / f"{view_dir.name}{suffix}"
            if old != new and old.is_file() and not new.exists():
                old.rename(new)
                renamed += suffix == ".png"
    settings["layout"] = LAYOUT
    settings_file.write_text(json.dumps(settings, indent=1))
    return renamed


def build_configured_world(cfg) -> None:
    """The training scripts' ``prepare`` hook: with ``data.toy`` set, build the toy world at
    ``data.root`` unless it is there already."""
    if cfg.data.get("toy"):
        from videomv.train.config import resolve_path  # the config's paths are relative to the repository

        ensure_toy_dataset(resolve_path(cfg.data.root), cfg.data.toy)
