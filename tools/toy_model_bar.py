#!/usr/bin/env python
"""Check the embedded toy models against their bar on unseen toy test objects (see
`videomv/toy/bar.py`): text -> views close >= half the floor-ceiling PSNR gap with neighbouring
views no more than 2x as different as ground truth's; image -> views >= 20 dB.

    python tools/toy_model_bar.py --data-root data/toy_world_64 --limit 16
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from videomv.toy.bar import gap_closed, image_bar_psnr, text_bar_row
from videomv.toy.cli import add_toy_objects_args, toy_objects
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_objects_args(p)
    p.add_argument("--text-model", type=Path, default=REPO / "data" / "embedded" / "t2mv")
    p.add_argument("--image-model", type=Path, default=REPO / "data" / "embedded" / "i2mv")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: each model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-3d-aware", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    objects = toy_objects(p, args)
    aware = not args.no_3d_aware

    if (args.text_model / "videomv.json").is_file():
        model = VideoMV.from_pretrained(args.text_model)
        rows = [text_bar_row(model, args.data_root, o, args.seed, three_d_aware=aware, steps=args.steps,
                             guidance_scale=args.guidance)
                for o in tqdm(objects, desc="text -> views")]
        print("| object | caption | generated dB | floor dB | ceiling dB | gap closed | neighbour diff gen / truth |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r.object_id} | {r.caption} | {r.generated:.2f} | {r.floor:.2f} | {r.ceiling:.2f} | "
                  f"{r.gap_closed:.2f} | {r.neighbour_generated:.4f} / {r.neighbour_truth:.4f} |")
        generated, floor, ceiling = (statistics.mean(getattr(r, k) for r in rows) for k in ("generated", "floor", "ceiling"))
        gap = gap_closed(generated, floor, ceiling)
        ratio = statistics.mean(r.neighbour_generated for r in rows) / statistics.mean(r.neighbour_truth for r in rows)
        print(f"\ntext -> views over {len(rows)} objects: generated {generated:.2f} dB, floor {floor:.2f} dB, "
              f"ceiling {ceiling:.2f} dB; gap closed {gap:.2f} (bar >= 0.5: {'pass' if gap >= 0.5 else 'FAIL'}); "
              f"neighbour-difference ratio "
              f"{ratio:.2f} (bar <= 2: {'pass' if ratio <= 2 else 'FAIL'})")
    else:
        print(f"no text model at {args.text_model}")

    if (args.image_model / "videomv.json").is_file():
        model = VideoMV.from_pretrained(args.image_model)
        scores = [image_bar_psnr(model, args.data_root, o, args.seed, three_d_aware=aware, steps=args.steps,
                                 guidance_scale=args.guidance)
                  for o in tqdm(objects, desc="image -> views")]
        print("\n| object | image -> views dB |")
        print("|---|---|")
        for o, s in zip(objects, scores):
            print(f"| {o} | {s:.2f} |")
        mean = statistics.mean(scores)
        print(f"\nimage -> views over {len(scores)} objects: {mean:.2f} dB (bar >= 20: {'pass' if mean >= 20 else 'FAIL'})")
    else:
        print(f"no image model at {args.image_model}")


if __name__ == "__main__":
    main()
