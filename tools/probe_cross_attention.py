#!/usr/bin/env python
"""Where does the text model's cross-attention look? Per layer, the share of attention on the
start token, the caption's words, the end token and the padding, and the mean entropy of one
location's attention against uniform attention over all 77 tokens, on toy objects' views noised
to fixed timesteps (see `videomv/eval/cross_attention.py`); then how much of each colour word's and
shape noun's attention falls on its part's latent positions, against uniform attention's share
(`videomv/train/grounding.py`).

    python tools/probe_cross_attention.py --model data/embedded/t2mv --limit 16 --timesteps 999 500 100
"""

from __future__ import annotations

import argparse

from videomv.eval.cross_attention import TOKEN_ROLES
from videomv.toy.bar import cross_attention_by_timestep, grounding_by_timestep
from videomv.toy.cli import add_text_probe_args, text_probe_inputs


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_text_probe_args(p, split="test", timesteps=[999, 500, 100])
    args = p.parse_args(argv)
    objects, model = text_probe_inputs(p, args)
    tables = cross_attention_by_timestep(model, args.data_root, objects, args.timesteps, args.seed)
    print(f"cross-attention of {args.model} on {len(objects)} {args.split} objects (own captions)")
    for t, rows in tables.items():
        print(f"\nt = {t}\n\n| layer | " + " | ".join(TOKEN_ROLES) + " | entropy / uniform |")
        print("|---|" + "---|" * (len(TOKEN_ROLES) + 1))
        for r in rows:
            shares = " | ".join(f"{r.shares[k]:.3f}" for k in TOKEN_ROLES)
            print(f"| {r.layer} | {shares} | {r.entropy:.2f} / {r.uniform:.2f} |")
    grounding = grounding_by_timestep(model, args.data_root, objects, args.timesteps, args.seed)
    print("\nshare of a word's attention on its part (all layers)\n\n| t | on its part | uniform attention |\n|---|---|---|")
    for t, (inside, uniform) in grounding.items():
        print(f"| {t} | {inside:.3f} | {uniform:.3f} |")


if __name__ == "__main__":
    main()
