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


def add_text_probe_args(p: argparse.ArgumentParser, split: str, timesteps: list[int]) -> None:
    """The toy objects' arguments and --model / --timesteps / --seed / --threads of the tools that
    probe a text model at fixed timesteps (tools/probe_prompt_use.py, tools/probe_cross_attention.py)."""
    add_toy_objects_args(p, split=split)
    p.add_argument("--model", type=Path, default=REPO / "data" / "embedded" / "t2mv", help="a text model folder")
    p.add_argument("--timesteps", type=int, nargs="+", default=timesteps)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)


def text_probe_inputs(p: argparse.ArgumentParser, args):
    """(object ids, model) for `add_text_probe_args`' arguments, after setting the thread count;
    timesteps outside the model's schedule are a usage error."""
    import torch

    from videomv.sampling.system import VideoMV

    torch.set_num_threads(args.threads)
    objects = toy_objects(p, args)
    model = VideoMV.from_pretrained(args.model)
    last = model.pipeline.scheduler.config.num_train_timesteps - 1
    bad = [t for t in args.timesteps if not 0 <= t <= last]
    if bad:
        p.error(f"--timesteps: expected values in [0, {last}], got {bad}")
    return objects, model


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
