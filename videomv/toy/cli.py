"""Command-line pieces of the toy tools (tools/toy_model_bar.py, tools/probe_*.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_ROOT = REPO / "data" / "toy_world_64"


def add_toy_objects_args(p: argparse.ArgumentParser, split: str = "test", limit: int = 16) -> None:
    """--data-root / --split / --limit of the toy-model tools."""
    p.add_argument("--data-root", "--root", dest="data_root", type=Path, default=DEFAULT_ROOT, help="toy dataset folder")
    p.add_argument("--split", default=split)
    p.add_argument("--limit", type=int, default=limit)


def toy_objects(p: argparse.ArgumentParser, args) -> list[str]:
    """The first --limit object ids of the --split list of --data-root, or a usage error saying how to build it."""
    from videomv.eval.view_sets import read_split

    if args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    try:
        return read_split(args.data_root, args.split)[: args.limit]
    except ValueError as e:
        p.error(f"--data-root: {e}; build the toy world with tools/make_toy_dataset.py")


# The toy world the embedded models were trained on (configs/toy_*.yaml, data.toy).
DEFAULT_TOY = {"num_objects": 2000, "resolution": 64, "seed": 0}


def prepare_data_root(root: Path) -> Path:
    """The evaluation scripts' --data-root: the default toy root is built on first use (2000
    objects at 64 px, as the embedded models were trained); any toy world written in the older file
    naming is renamed in place. Other folders are returned unchanged."""
    from .references import is_toy_dataset
    from .writer import LAYOUT, OLD_LAYOUT, ensure_toy_dataset, migrate_layout

    root = Path(root)
    if root.resolve() == DEFAULT_ROOT.resolve() and not (root / "toyworld.json").is_file():
        return ensure_toy_dataset(root, DEFAULT_TOY)
    if is_toy_dataset(root) and json.loads((root / "toyworld.json").read_text()).get("layout", OLD_LAYOUT) != LAYOUT:
        migrate_layout(root)
    return root
