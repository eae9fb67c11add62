#!/usr/bin/env python
"""Does the text model use its prompt? Its training loss on toy objects at fixed timesteps, with
each object's own caption, another object's caption and the empty prompt, and on the stacked
objects with their own caption and with its parts swapped (see `videomv/toy/bar.py:prompt_losses`).

    python tools/probe_prompt_use.py --split train --limit 16 --timesteps 50 400 800 999
"""

from __future__ import annotations

import argparse

from videomv.toy.bar import prompt_losses
from videomv.toy.cli import add_text_probe_args, text_probe_inputs
from videomv.toy.references import toy_object_for
from videomv.toy.world import order_shows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_text_probe_args(p, split="train", timesteps=[50, 200, 400, 600, 800, 950, 999])
    args = p.parse_args(argv)
    objects, model = text_probe_inputs(p, args)
    rows = prompt_losses(model, args.data_root, objects, args.timesteps, args.seed)
    stacked = sum(order_shows(toy_object_for(args.data_root, o).recipe) for o in objects)
    print(f"training loss of {args.model} on {len(objects)} {args.split} objects, {stacked} of them stacked")
    print("| t | own caption | another caption | empty prompt | stacked: own caption | stacked: parts swapped |")
    print("|---|---|---|---|---|---|")
    for t, r in rows.items():
        print(f"| {t} | {r['own']:.4f} | {r['other']:.4f} | {r['empty']:.4f} | {r['stacked_own']:.4f} "
              f"| {r['stacked_swapped']:.4f} |")


if __name__ == "__main__":
    main()
