#!/usr/bin/env python
"""How well the image model keeps its input image along the denoising loop: PSNR against ground
truth of the conditional x0 estimate at chosen loop indices (decoded), for the input view itself
and for all views, with few and with all 24 frames (see `videomv/toy/bar.py:x0_estimates`).
`--decoder` decodes with another VAE folder of the same latent space (e.g. the text model's).

    python tools/probe_image_steps.py --limit 4 --frames 8 24
    python tools/probe_image_steps.py --limit 8 --frames 24 --steps 0 1 3 6 10 19 --decoder data/embedded/t2mv/vae
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from tqdm.auto import tqdm

from videomv.toy.bar import mean_psnr, x0_estimates
from videomv.toy.cli import add_toy_objects_args, toy_objects
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[1]


def decoder_from(path: Path, model):
    """(B, C, F, h, w) scaled latents -> (B, F, 3, H, W) in [0, 1], with the VAE folder at `path`."""
    from diffusers import AutoencoderKL

    from videomv.models.latents import vae_decode

    vae = AutoencoderKL.from_pretrained(str(path)).to(model.pipeline.device)
    scale = model.pipeline.vae.config.scaling_factor  # the latents are the model's, scaled by its factor
    return lambda z: (vae_decode(vae, z.to(vae.dtype), scale) + 1) / 2


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_toy_objects_args(p, limit=4)
    p.add_argument("--model", type=Path, default=REPO / "data" / "embedded" / "i2mv", help="an image model folder")
    p.add_argument("--frames", type=int, nargs="+", default=[8, 24], help="numbers of orbit views to sample")
    p.add_argument("--steps", type=int, nargs="+", default=[0], help="loop indices (0: the first, noisiest step)")
    p.add_argument("--decoder", type=Path, default=None, help="a VAE folder to decode with (default: the model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    objects = toy_objects(p, args)
    model = VideoMV.from_pretrained(args.model)
    decode = decoder_from(args.decoder, model) if args.decoder else None
    print("| object | frames | step | input view dB | all views dB |")
    print("|---|---|---|---|---|")
    means = {(f, i): ([], []) for f in args.frames for i in sorted(set(args.steps))}
    for o in tqdm(objects, desc="objects"):
        for f in args.frames:
            estimates, truth = x0_estimates(model, args.data_root, o, args.steps, f, args.seed, decode)
            for i, x0 in sorted(estimates.items()):
                first, every = mean_psnr(x0[:1], truth[:1]), mean_psnr(x0, truth)
                means[f, i][0].append(first)
                means[f, i][1].append(every)
                print(f"| {o} | {f} | {i} | {first:.2f} | {every:.2f} |")
    for (f, i), (first, every) in means.items():
        print(f"mean over {len(objects)} objects, {f} frames, step {i}: input view {statistics.mean(first):.2f} dB, "
              f"all views {statistics.mean(every):.2f} dB")


if __name__ == "__main__":
    main()
