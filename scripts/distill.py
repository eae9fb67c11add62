#!/usr/bin/env python
"""Text -> 3D Gaussians by multi-view score distillation from a VideoMV text model (paper Sec. 5.2).

    python scripts/distill.py --prompt "a red sphere" --out outputs/sds_sphere
    python scripts/distill.py --prompt "a red sphere" steps=400 guidance=30 t_schedule=random views=8

Settings are `videomv.distill.DistillConfig` fields: a YAML file (--config) and/or key=value
overrides. Writes gaussians.ply, views/, grid.png, reference_grid.png, turntable.mp4,
history.json and config.yaml. Without --model the embedded toy text model is used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from videomv.inputs import InputError, check_device, check_model_folder, check_out

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", required=True, help="text prompt")
    p.add_argument("--model", type=Path, default=REPO / "data" / "embedded" / "t2mv", help="a VideoMV text model folder")
    p.add_argument("--config", type=Path, help="YAML file of DistillConfig fields")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/sds-<time>); new or empty")
    p.add_argument("--seed", type=int, default=None, help="overrides the config's seed")
    p.add_argument("--video-resolution", type=int, default=256, help="turntable video size in pixels")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="DistillConfig overrides")
    args = p.parse_args(argv)

    from videomv.distill import load_config

    if not args.prompt.strip():
        p.error("--prompt: the prompt is empty")
    if args.config is not None and not args.config.is_file():
        p.error(f"--config: {args.config} is not a file")
    if not 16 <= args.video_resolution <= 4096:
        p.error(f"--video-resolution must be in [16, 4096], got {args.video_resolution}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    try:
        args.cfg = load_config(args.config, overrides)
    except ValueError as err:
        p.error(str(err))
    if args.out is None:
        args.out = REPO / "outputs" / time.strftime("sds-%Y%m%d-%H%M%S")
    try:
        check_model_folder(args.model, "text")
        check_out(args.out)
        args.device = check_device(args.device)
    except InputError as err:
        p.error(str(err))
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from videomv.distill import distill
    from videomv.distill.outputs import save_distillation
    from videomv.sampling.system import VideoMV

    try:
        model = VideoMV.from_pretrained(args.model, device=args.device)
    except (FileNotFoundError, OSError, ValueError) as err:
        args.parser.error(f"--model: cannot load {args.model}: {err}")
    result = distill(model, args.prompt, args.cfg)
    written = save_distillation(result, args.cfg, args.out, settings={"prompt": args.prompt, "model": str(args.model)},
                                video_resolution=args.video_resolution, fovy=model.settings.fovy,
                                background=model.settings.background)
    first, last = result.history[0]["psnr"], result.history[-1]["psnr"]
    print(f"{args.cfg.steps} steps, {result.seconds_per_step:.2f} s/step; proxy PSNR {first:.2f} -> {last:.2f} dB "
          f"-> {args.out}")
    for path in written.values():
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
