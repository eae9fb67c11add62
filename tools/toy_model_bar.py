#!/usr/bin/env python
"""Check the embedded toy models against their bar on unseen toy test objects (see
`videomv/toy/bar.py`): text -> views close >= half the floor-ceiling PSNR gap with neighbouring
views no more than 2x as different as ground truth's; image -> views >= 20 dB. With them, the
per-part colour and layout scores (`videomv/toy/parts.py`), each over all test objects and apart
for objects whose caption occurs in the train split ("seen") and whose caption never does ("unseen"),
and for each arrangement of parts, and the same scores of each model's VAE round trip of the ground
truth (their ceiling).

    python tools/toy_model_bar.py --data-root data/toy_world_64 --limit 32 --seeds 2
    python tools/toy_model_bar.py --data-root data/toy_world_64 --captions unseen --limit 4
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from videomv.sampling.system import VideoMV
from videomv.toy.bar import (gap_closed, image_bar_row, part_summary, text_bar_row, training_captions,
                             vae_round_trip_row)
from videomv.toy.cli import add_toy_objects_args, prepare_data_root, toy_objects
from videomv.toy.references import toy_object_for
from videomv.toy.world import ARRANGEMENTS

REPO = Path(__file__).resolve().parents[1]


def groups(rows, seen_captions, root):
    """(name, rows) for all rows, those whose caption is in / never in the train split, then each
    arrangement of parts that the rows' objects hold (single, two_tone, stacked, side_by_side, row)."""
    arrangement = {r.object_id: toy_object_for(root, r.object_id).recipe[0] for r in rows}
    by_arrangement = [(name, [r for r in rows if arrangement[r.object_id] == name]) for name in ARRANGEMENTS]
    return [("all", rows), ("seen", [r for r in rows if r.caption in seen_captions]),
            ("unseen", [r for r in rows if r.caption not in seen_captions])] + [g for g in by_arrangement if g[1]]


def print_image_scores(rows, seen, root, count: str) -> None:
    """The image-style table (PSNR, parts in place and drawn, layouts) of `rows` per caption group."""
    print(f"| group | {count} | PSNR dB | parts in their colour, in place | parts drawn in their colour | layouts right |")
    print("|---|---|---|---|---|---|")
    for name, group in groups(rows, seen, root):
        if not group:
            print(f"| {name} | 0 | | | | |")
            continue
        in_place, layout = part_summary(group, "in_place")
        present, _ = part_summary(group, "present")
        print(f"| {name} | {len(group)} | {statistics.mean(r.psnr for r in group):.2f} | {in_place} | {present} | {layout} |")


def print_round_trip(model, name: str, root, objects, seen) -> None:
    """The VAE round trip of the objects' ground truth, scored as samples are: the ceiling of the
    part scores for this model."""
    rows = [vae_round_trip_row(model, root, o) for o in tqdm(objects, desc=f"{name} VAE round trip")]
    print(f"\n{name} model's VAE round trip of the ground truth (the ceiling of its part scores):")
    print_image_scores(rows, seen, root, "objects")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_objects_args(p)
    p.add_argument("--text-model", type=Path, default=REPO / "data" / "embedded" / "t2mv")
    p.add_argument("--image-model", type=Path, default=REPO / "data" / "embedded" / "i2mv")
    p.add_argument("--steps", type=int, default=None, help="denoising steps (default: the model's, or the sampler's)")
    p.add_argument("--sampler", choices=("ddim", "dpmsolver++"), default=None, help="default: each model's")
    p.add_argument("--guidance", type=float, default=None, help="guidance scale (default: each model's)")
    p.add_argument("--seed", type=int, default=0, help="first sampling seed")
    p.add_argument("--seeds", type=int, default=1, help="number of sampling seeds per object (--seed, --seed + 1, ...)")
    p.add_argument("--captions", choices=("all", "seen", "unseen"), default="all",
                   help="score only objects whose caption occurs (seen) or never occurs (unseen) in the train split")
    p.add_argument("--no-3d-aware", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    torch.set_num_threads(args.threads)
    args.data_root = prepare_data_root(args.data_root)  # the default toy world is built on first use
    objects = toy_objects(p, argparse.Namespace(**{**vars(args), "limit": 2**31}))
    seen = training_captions(args.data_root)
    if args.captions != "all":
        objects = [o for o in objects if (toy_object_for(args.data_root, o).caption in seen) == (args.captions == "seen")]
    objects = objects[: args.limit]
    if not objects:
        p.error(f"--captions {args.captions}: no such object in the {args.split} split of {args.data_root}")
    runs = [(o, args.seed + k) for o in objects for k in range(args.seeds)]
    aware = not args.no_3d_aware
    kwargs = {"three_d_aware": aware, "steps": args.steps, "guidance_scale": args.guidance, "sampler": args.sampler}

    if (args.text_model / "videomv.json").is_file():
        model = VideoMV.from_pretrained(args.text_model)
        rows = [text_bar_row(model, args.data_root, o, seed, **kwargs) for o, seed in tqdm(runs, desc="text -> views")]
        print("| object | seed | caption | generated dB | floor dB | ceiling dB | gap closed | neighbour diff gen / truth "
              "| parts drawn | layout |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for (o, seed), r in zip(runs, rows):
            print(f"| {r.object_id} | {seed} | {r.caption} | {r.generated:.2f} | {r.floor:.2f} | {r.ceiling:.2f} | "
                  f"{r.gap_closed:.2f} | {r.neighbour_generated:.4f} / {r.neighbour_truth:.4f} | "
                  f"{sum(r.parts.present)}/{len(r.parts.present)} | {r.parts.layout} |")
        print(f"\ntext -> views over {len(objects)} objects x {args.seeds} seeds:")
        print("| group | runs | generated dB | gap closed | neighbour ratio | parts drawn in their colour | layouts right |")
        print("|---|---|---|---|---|---|---|")
        for name, group in groups(rows, seen, args.data_root):
            if not group:
                print(f"| {name} | 0 | | | | | |")
                continue
            generated, floor, ceiling = (statistics.mean(getattr(r, k) for r in group) for k in ("generated", "floor", "ceiling"))
            ratio = statistics.mean(r.neighbour_generated for r in group) / statistics.mean(r.neighbour_truth for r in group)
            colour, layout = part_summary(group, "present")
            print(f"| {name} | {len(group)} | {generated:.2f} | {gap_closed(generated, floor, ceiling):.2f} | {ratio:.2f} | "
                  f"{colour} | {layout} |")
        generated, floor, ceiling = (statistics.mean(getattr(r, k) for r in rows) for k in ("generated", "floor", "ceiling"))
        gap = gap_closed(generated, floor, ceiling)
        ratio = statistics.mean(r.neighbour_generated for r in rows) / statistics.mean(r.neighbour_truth for r in rows)
        print_round_trip(model, "text", args.data_root, objects, seen)
        print(f"\ntext bar: gap closed {gap:.2f} (>= 0.5: {'pass' if gap >= 0.5 else 'FAIL'}); neighbour-difference ratio "
              f"{ratio:.2f} (<= 2: {'pass' if ratio <= 2 else 'FAIL'})")
    else:
        print(f"no text model at {args.text_model}")

    if (args.image_model / "videomv.json").is_file():
        model = VideoMV.from_pretrained(args.image_model)
        rows = [image_bar_row(model, args.data_root, o, seed, **kwargs) for o, seed in tqdm(runs, desc="image -> views")]
        print("\n| object | seed | caption | image -> views dB | parts in place / drawn | layout |")
        print("|---|---|---|---|---|---|")
        for (o, seed), r in zip(runs, rows):
            print(f"| {o} | {seed} | {r.caption} | {r.psnr:.2f} | {sum(r.parts.in_place)} / {sum(r.parts.present)} "
                  f"of {len(r.parts.present)} | {r.parts.layout} |")
        print(f"\nimage -> views over {len(objects)} objects x {args.seeds} seeds:")
        print_image_scores(rows, seen, args.data_root, "runs")
        print_round_trip(model, "image", args.data_root, objects, seen)
        mean = statistics.mean(r.psnr for r in rows)
        print(f"\nimage bar: {mean:.2f} dB (>= 20: {'pass' if mean >= 20 else 'FAIL'})")
    else:
        print(f"no image model at {args.image_model}")


if __name__ == "__main__":
    main()
