#!/usr/bin/env python
"""How well a VAE's latent space keeps the toy palette's colours apart, for diffusion models that
err in it: each palette colour's nearest other colour in the scaled latents
(`videomv/toy/latent_space.py`), and the part scores of the ground truth's round trip with smooth Gaussian noise of each --noise
size (varying over --noise-cell latent pixels) added to the scaled latents before decoding
(`vae_round_trip_row`; noise 0 is the bar's ceiling).

    python tools/probe_vae_latents.py --vae runs/t2mv_phase12/vae runs/toy_vae_robust/vae --noise 0 0.2 0.4 --limit 32

Each VAE is swapped into --model (default the embedded text model), whose background and
resolution the probe uses.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from tqdm.auto import tqdm

from videomv.sampling.system import VideoMV
from videomv.toy.bar import part_summary, vae_round_trip_row
from videomv.toy.cli import add_toy_objects_args, prepare_data_root, toy_objects
from videomv.toy.latent_space import nearest_colours, palette_latents

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_objects_args(p, limit=32)
    p.add_argument("--model", type=Path, default=REPO / "data" / "embedded" / "t2mv")
    p.add_argument("--vae", type=Path, nargs="+", required=True, help="saved AutoencoderKL folders")
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.2, 0.4],
                   help="std of the Gaussian noise added to the scaled latents")
    p.add_argument("--noise-cell", type=int, default=4,
                   help="the noise varies over this many latent pixels (1: independent per latent pixel)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.noise_cell < 1:
        p.error(f"--noise-cell: expected an integer >= 1, got {args.noise_cell}")
    if any(s < 0 for s in args.noise):
        p.error(f"--noise: expected sizes >= 0, got {args.noise}")
    for path in args.vae:
        if not (path / "config.json").is_file():
            p.error(f"--vae {path}: not a saved AutoencoderKL folder (no config.json)")
    torch.set_num_threads(args.threads)
    args.data_root = prepare_data_root(args.data_root)
    objects = toy_objects(p, args)
    model = VideoMV.from_pretrained(args.model)
    dtype = model.pipeline.unet.dtype

    print("| VAE | noise | PSNR dB | parts in their colour, in place | parts drawn | layouts right |")
    print("|---|---|---|---|---|---|")
    palettes = []
    for path in args.vae:
        model.pipeline.vae = AutoencoderKL.from_pretrained(path, torch_dtype=dtype).eval()
        palettes.append((path, nearest_colours(palette_latents(model))))
        for noise in args.noise:
            rows = [vae_round_trip_row(model, args.data_root, o, noise, args.seed + i, args.noise_cell)
                    for i, o in enumerate(tqdm(objects, desc=f"{path.name} noise {noise}"))]
            in_place, layouts = part_summary(rows, "in_place")
            present, _ = part_summary(rows, "present")
            print(f"| {path} | {noise:g} | {statistics.mean(r.psnr for r in rows):.2f} | {in_place} | {present} | "
                  f"{layouts} |", flush=True)

    print("\nEach palette colour's nearest other colour in the scaled latents (distance):")
    colours = list(palettes[0][1])
    print("| VAE | " + " | ".join(colours) + " | smallest |")
    print("|---|" + "---|" * (len(colours) + 1))
    for path, nearest in palettes:
        cells = [f"{other} {d:.2f}" for other, d in nearest.values()]
        print(f"| {path} | " + " | ".join(cells) + f" | {min(d for _, d in nearest.values()):.2f} |")


if __name__ == "__main__":
    main()
