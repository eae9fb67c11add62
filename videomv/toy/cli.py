"""Command-line pieces of the toy tools (tools/toy_model_bar.py, tools/probe_*.py)."""

from __future__ import annotations

import argparse
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
