#!/usr/bin/env python
"""Text -> multi-view consistency (paper Table 1): fit 3D Gaussians to views 0,2,4,... of each 24-view
set, report PSNR/SSIM/LPIPS at views 1,3,5,..., CLIP score and flow-warping RMSE (f = 1, 6).

    python scripts/eval_t2mv.py --limit 10 --out runs/t1_aware     # prompts: data/prompts/t3bench_prompt_single.txt
    python scripts/eval_t2mv.py --prompts prompts.txt --no-3d-aware --out runs/t1_base
    python scripts/eval_t2mv.py --views-dir runs/t1_aware/views --out runs/t1_again
    python scripts/eval_t2mv.py --data-root data/toy_world_64 --out runs/t1_gt

Without a source the 100 T3Bench single-object prompts shipped in data/prompts/ are generated. The
default toy root (data/toy_world_64) is built on first use.

Writes <out>/table1.md, table1.csv (one row per item and a mean row), table1_settings.json and, when
generating, the view sets in <out>/views/<item>/ (readable again with --views-dir).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videomv.eval.cli import EMBEDDED, REPO, add_common_args, add_metric_args, check_common, command_line, load_model, load_suite

DEFAULT_PROMPTS = REPO / "data" / "prompts" / "t3bench_prompt_single.txt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--prompts", type=Path, help="text file, one prompt per line: generate and evaluate "
                        "(default when no source is given: data/prompts/t3bench_prompt_single.txt)")
    source.add_argument("--views-dir", type=Path, help="evaluate existing view sets (subfolders with views/*.png + cameras.json)")
    source.add_argument("--data-root", "--ground-truth", dest="data_root", type=Path, metavar="ROOT",
                        help="evaluate the ground-truth renders of a G-Objaverse-layout split (upper bound)")
    p.add_argument("--model", type=Path, default=None, help="text VideoMV folder (default: data/embedded/t2mv)")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's)")
    p.add_argument("--no-3d-aware", action="store_true", help="plain sampling (VideoMV base)")
    p.add_argument("--split", default="test", help="split of --data-root (default test)")
    p.add_argument("--background", default=None, help="background for --data-root renders: grey (default, as "
                   "the text model), white, black or r,g,b")
    g = p.add_argument_group("Gaussian fitting")
    g.add_argument("--fit-iters", type=int, default=300)
    g.add_argument("--fit-gaussians", type=int, default=2000)
    g.add_argument("--fit-resolution", type=int, default=64, help="views are resized to this for fitting and scoring")
    g.add_argument("--fit-views-per-step", type=int, default=4)
    add_common_args(p)
    add_metric_args(p, clip=True)
    args = p.parse_args(argv)
    check_common(p, args, "eval_t2mv")
    if args.fit_iters < 0 or args.fit_gaussians < 1 or args.fit_resolution < 11 or args.fit_views_per_step < 1:
        p.error("--fit-iters must be >= 0, --fit-gaussians >= 1, --fit-resolution >= 11, --fit-views-per-step >= 1")
    if args.prompts is None and args.views_dir is None and args.data_root is None:
        args.prompts = DEFAULT_PROMPTS
    if args.prompts is not None and not args.prompts.is_file():
        p.error(f"--prompts: {args.prompts} is not a file")
    if args.data_root is not None:
        from videomv.toy.cli import prepare_data_root

        args.data_root = prepare_data_root(args.data_root)
    for name in ("views_dir", "data_root"):
        path = getattr(args, name)
        if path is not None and not path.is_dir():
            p.error(f"--{name.replace('_', '-')}: {path} is not a folder")
    if args.prompts is not None and args.model is None:
        args.model = EMBEDDED["text"]
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from videomv.data.common import parse_background
    from videomv.eval.generation import generate_text_view_sets, read_prompts
    from videomv.eval.nvs import TABLE1_COLUMNS, FitSettings, evaluate_view_sets, protocol_settings
    from videomv.eval.report import write_table
    from videomv.eval.view_sets import ground_truth_view_sets, load_view_sets

    p = args.parser
    fit = FitSettings(resolution=args.fit_resolution, num_gaussians=args.fit_gaussians, iters=args.fit_iters,
                      views_per_step=args.fit_views_per_step, seed=args.seed)
    settings = {"command": command_line("scripts/eval_t2mv.py", argv), "seed": args.seed, "limit": args.limit}
    try:
        if args.prompts is not None:
            prompts = read_prompts(args.prompts)[: args.limit]
            model = load_model(p, args.model, "text", args.device, not args.no_3d_aware)
            steps = args.steps or model.settings.num_inference_steps
            settings.update(source="generated", prompts=str(args.prompts), model=str(args.model), steps=steps,
                            three_d_aware=not args.no_3d_aware, guidance_scale=model.settings.guidance_scale,
                            model_settings=vars(model.settings))
            view_sets = generate_text_view_sets(model, prompts, args.out / "views", steps, args.seed,
                                                not args.no_3d_aware, extra_settings={"model": str(args.model)})
        elif args.views_dir is not None:
            view_sets = load_view_sets(args.views_dir, args.limit)
            settings.update(source="views", views_dir=str(args.views_dir))
        else:
            background = parse_background(args.background or "grey").tolist()
            view_sets = ground_truth_view_sets(args.data_root, args.split, background, limit=args.limit)
            settings.update(source="ground_truth", root=str(args.data_root), split=args.split, background=background)
    except ValueError as err:
        p.error(str(err))

    suite = load_suite(args, need_clip=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = evaluate_view_sets(view_sets, suite, fit)
    settings.update(protocol_settings(fit, suite, cyclic=True))
    paths = write_table(args.out, "table1", rows, TABLE1_COLUMNS, notes=suite.notes, settings=settings)
    print(paths["markdown"].read_text(), end="")
    print(f"-> {paths['markdown']}, {paths['csv']}, {paths['settings']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
