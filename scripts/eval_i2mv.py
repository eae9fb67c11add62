#!/usr/bin/env python
"""Image -> multi-view against ground truth (paper Table 2): condition on view 0 of each object (RGBA
on the model's background, white), generate at the object's own orbit cameras, and compare with
the ground-truth renders by PSNR/SSIM/LPIPS (+ flow-warping RMSE of the generated frames).

    python scripts/eval_i2mv.py --data-root data/toy_world_64 --subset all every3 az45 --out runs/t2_aware
    python scripts/eval_i2mv.py --data-root data/gso_e5 --split test --no-3d-aware --out runs/t2_base

The default toy root (data/toy_world_64) is built on first use. Real objects: render them first
with tools/render_objects.py (e.g. Google Scanned Objects at elevation 5: --elevation-range 5 5).

Subsets: all; every3 = frames 0,3,...,21 (SyncDreamer's 16-view ring); az45 = frames at azimuth
multiples of 45 degrees (Zero123), found from the cameras. One generation is scored on every subset
given; each gets <out>/table2_<subset>.md/.csv. Generations go to <out>/views/<object>/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videomv.eval.cli import EMBEDDED, add_common_args, add_metric_args, check_common, command_line, load_model, load_suite
from videomv.eval.subsets import SUBSETS
from videomv.toy.cli import DEFAULT_ROOT as TOY_ROOT
from videomv.toy.cli import prepare_data_root


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", "--objects", dest="data_root", type=Path, default=TOY_ROOT,
                   help="G-Objaverse-layout root with <split>.txt (default: the toy world, built on first use)")
    p.add_argument("--split", default="test", help="object list <data-root>/<split>.txt (default test)")
    p.add_argument("--model", type=Path, default=EMBEDDED["image"], help="image VideoMV folder (default: data/embedded/i2mv)")
    p.add_argument("--subset", nargs="+", choices=SUBSETS, default=["all"], help="view subset(s) to score")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--no-3d-aware", action="store_true", help="plain sampling (VideoMV base)")
    add_common_args(p)
    add_metric_args(p)
    args = p.parse_args(argv)
    check_common(p, args, "eval_i2mv")
    args.data_root = prepare_data_root(args.data_root)
    if not args.data_root.is_dir():
        p.error(f"--data-root: {args.data_root} is not a folder")
    args.subset = list(dict.fromkeys(args.subset))
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from videomv.eval.i2mv import TABLE2_COLUMNS, evaluate_i2mv
    from videomv.eval.report import write_table
    from videomv.eval.view_sets import ground_truth_view_sets

    p = args.parser
    model = load_model(p, args.model, "image", args.device, not args.no_3d_aware)
    try:
        references = ground_truth_view_sets(args.data_root, args.split, model.settings.background,
                                            resolution=model.settings.resolution, limit=args.limit)
    except ValueError as err:
        p.error(str(err))
    suite = load_suite(args)
    steps = args.steps or model.settings.num_inference_steps
    tables = evaluate_i2mv(model, references, args.subset, suite, steps, args.seed, not args.no_3d_aware,
                           save_dir=args.out / "views")
    settings = {"command": command_line("scripts/eval_i2mv.py", argv), "data_root": str(args.data_root),
                "split": args.split, "model": str(args.model), "steps": steps, "seed": args.seed,
                "three_d_aware": not args.no_3d_aware, "limit": args.limit, "condition": "view 0 on the model background",
                "model_settings": vars(model.settings), "flow_method": suite.flow_method, "flow_cyclic": True}
    for subset, rows in tables.items():
        paths = write_table(args.out, f"table2_{subset}", rows, TABLE2_COLUMNS, notes=suite.notes,
                            settings={**settings, "subset": subset})
        print(paths["markdown"].read_text(), end="")
        print(f"-> {paths['markdown']}, {paths['csv']}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
