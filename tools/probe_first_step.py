#!/usr/bin/env python
"""How well the image model keeps its input image at the noisiest step: PSNR of the conditional
x0 estimate of the first DDIM step (decoded) against ground truth, for the input view itself and
for all views, with few and with all 24 frames (see `videomv/toy/bar.py:first_step_views`).

    python tools/probe_first_step.py --limit 4 --frames 8 24
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from videomv.toy.bar import first_step_views, mean_psnr
from videomv.toy.cli import add_toy_objects_args, toy_objects
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_objects_args(p, limit=4)
    p.add_argument("--model", type=Path, default=REPO / "data" / "embedded" / "i2mv", help="an image model folder")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 24], help="numbers of orbit views to sample")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    objects = toy_objects(p, args)
    model = VideoMV.from_pretrained(args.model)
    print("| object | frames | input view dB | all views dB |")
    print("|---|---|---|---|")
    means = {f: ([], []) for f in args.frames}
    for o in tqdm(objects, desc="objects"):
        for f in args.frames:
            x0, truth = first_step_views(model, args.data_root, o, f, args.seed)
            first, every = mean_psnr(x0[:1], truth[:1]), mean_psnr(x0, truth)
            means[f][0].append(first)
            means[f][1].append(every)
            print(f"| {o} | {f} | {first:.2f} | {every:.2f} |")
    for f, (first, every) in means.items():
        print(f"mean over {len(objects)} objects, {f} frames: input view {statistics.mean(first):.2f} dB, "
              f"all views {statistics.mean(every):.2f} dB")


if __name__ == "__main__":
    main()
