"""Command-line pieces shared by the evaluation scripts (scripts/eval_*.py)."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = {"text": REPO / "data" / "embedded" / "t2mv", "image": REPO / "data" / "embedded" / "i2mv"}


def add_metric_args(p: argparse.ArgumentParser, clip: bool = False) -> None:
    g = p.add_argument_group("metric weights (local files only; a metric without weights is reported unavailable)")
    g.add_argument("--lpips-weights", type=Path, help="folder with the VGG16 backbone and LPIPS linear layers "
                   "(default: $VIDEOMV_LPIPS_WEIGHTS, the torch hub cache)")
    g.add_argument("--raft-weights", type=Path, help="torchvision RAFT weights file (default: $VIDEOMV_RAFT_WEIGHTS, "
                   "the torch hub cache; without it flow comes from Farneback)")
    if clip:
        g.add_argument("--clip-checkpoint", type=Path, help="open_clip checkpoint (default: $VIDEOMV_CLIP_WEIGHTS)")
        g.add_argument("--clip-model", default="ViT-B-32", help="open_clip model name of the checkpoint")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/<name>-<time>); new or empty")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items")
    p.add_argument("--seed", type=int, default=0, help="sampling and fitting seed")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's). On a busy "
                   "machine 1 is often much faster for the small tensors of toy-size fitting")


def check_common(p: argparse.ArgumentParser, args, default_name: str) -> None:
    if args.threads is not None:
        if args.threads < 1:
            p.error(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    if getattr(args, "steps", None) is not None and not 1 <= args.steps <= 1000:
        p.error(f"--steps must be in [1, 1000], got {args.steps}")
    if args.out is None:
        args.out = REPO / "outputs" / f"{default_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    elif args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        p.error(f"--out: {args.out} exists and is not an empty folder")


def load_model(p: argparse.ArgumentParser, path: Path, task: str, device: str, three_d_aware: bool = False):
    from videomv.sampling.system import VideoMV

    if not path.is_dir():
        p.error(f"--model: {path} is not a folder (train the embedded toy model or pass --model)")
    try:
        model = VideoMV.from_pretrained(path, device=device)
    except (FileNotFoundError, OSError, ValueError) as err:
        p.error(f"--model: cannot load {path}: {err}")
    if model.settings.task != task:
        p.error(f"--model: {path} is a {model.settings.task} model; this evaluation needs a {task} model")
    if three_d_aware and model.reconstructor is None:
        p.error(f"--model: {path} has no reconstructor, so no 3D-aware sampling; pass --no-3d-aware")
    return model


def load_suite(args, need_clip: bool = False):
    from .suite import MetricSuite

    return MetricSuite.load(lpips_dir=args.lpips_weights, clip_checkpoint=getattr(args, "clip_checkpoint", None),
                            clip_model=getattr(args, "clip_model", "ViT-B-32"), raft_weights=args.raft_weights,
                            need_clip=need_clip, device=args.device)


def command_line(script: str, argv) -> str:
    """The command that reproduces this run."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return " ".join(["python", script] + [shlex.quote(str(a)) for a in argv])
