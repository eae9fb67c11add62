#!/usr/bin/env python
"""Does a text model's encoder bind each colour to its part? A linear probe on the encoder's state
at each part's shape noun predicts the part's colour; it is fitted on the captions of the training
list and scored on captions drawn from the toy world's grammar (`world.sample_recipe`, its own seed)
that never occur in that list (see `videomv/toy/binding.py`). The same probe on the token embeddings
(before any layer) is the floor.

    python tools/probe_text_binding.py --models data/embedded/t2mv runs/t2mv_phase9 --fit-list train_plus4000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from videomv.eval.view_sets import read_split
from videomv.models.conditioning import TextConditioner
from videomv.toy.binding import binding_score
from videomv.toy.cli import DEFAULT_ROOT
from videomv.toy.references import toy_object_for
from videomv.toy.world import caption_from_recipe, sample_recipe


def recipes_by_caption(root: Path, split: str) -> dict[str, tuple]:
    return {obj.caption: obj.recipe for obj in (toy_object_for(root, o) for o in read_split(root, split))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", "--root", dest="data_root", type=Path, default=DEFAULT_ROOT, help="toy dataset folder")
    p.add_argument("--models", type=Path, nargs="+", required=True, help="text model folders (with text_encoder/)")
    p.add_argument("--fit-list", default="train", help="the object list the models trained on (e.g. train_plus4000)")
    p.add_argument("--samples", type=int, default=4000, help="recipes drawn from the grammar (before removing seen ones)")
    p.add_argument("--seed", type=int, default=1, help="seed of the drawn recipes")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        seen = recipes_by_caption(args.data_root, args.fit_list)
    except ValueError as e:
        p.error(f"--data-root / --fit-list: {e}")
    if args.samples < 1:
        p.error(f"--samples must be >= 1, got {args.samples}")
    rng = np.random.default_rng(args.seed)
    drawn = {caption_from_recipe(r): r for r in (sample_recipe(rng) for _ in range(args.samples))}
    unseen = [r for caption, r in drawn.items() if caption not in seen]
    print(f"probe fitted on the {len(seen)} captions of {args.fit_list}, scored on {len(unseen)} captions drawn "
          f"from the grammar (seed {args.seed}) and never in it\n")
    print("| model | encoder layers | states | fit | unseen: first part | unseen: later parts |")
    print("|---|---|---|---|---|---|")
    for folder in args.models:
        if not (folder / "text_encoder" / "config.json").is_file():
            p.error(f"--models: {folder} has no text_encoder/config.json")
        conditioner = TextConditioner.from_pretrained(str(folder)).float().eval()
        layers = conditioner.text_encoder.config.num_hidden_layers
        for layer in ("embeddings", "output"):
            s = binding_score(conditioner, list(seen.values()), unseen, layer)
            print(f"| {folder} | {layers} | {layer} | {s.fit:.1%} | {s.unseen_first:.1%} ({s.unseen_first_count}) | "
                  f"{s.unseen_later:.1%} ({s.unseen_later_count}) |")


if __name__ == "__main__":
    main()
