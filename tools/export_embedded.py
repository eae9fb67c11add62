#!/usr/bin/env python
"""Assemble a VideoMV model folder (what `scripts/sample.py --model` and `VideoMV.from_pretrained`
load) from a stage-1 run's exported pipeline and a stage-2 run's reconstructor.

    python tools/export_embedded.py --task text --pipeline runs/toy_t2mv/final \\
        --reconstructor runs/toy_recon_ft/reconstructor --out data/embedded/t2mv --resolution 64 --dtype fp16

A thin command line over `VideoMV.from_parts` and `VideoMV.save_pretrained`: configs lose their
`_name_or_path`, a tokenizer identical to the bundled CLIP tokenizer is left out, and with
--share-with, components byte-identical to another model folder's become relative symlinks.
--out must be a new (or empty) folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from videomv import VideoMV
from videomv.models.conditioning import UNCONDITIONAL_IMAGE
from videomv.sampling.ddim import ddim_with
from videomv.sampling.model_folder import compatible_vae, require_empty_destination
from videomv.sampling.system import load_pipeline, task_of

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("text", "image"), required=True)
    p.add_argument("--pipeline", type=Path, required=True, help="stage-1 pipeline folder (<run>/final)")
    p.add_argument("--reconstructor", type=Path, help="stage-2 reconstructor folder (<run>/reconstructor)")
    p.add_argument("--out", type=Path, required=True, help="the model folder to write (must not exist or be empty)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="storage precision (loaded as fp32)")
    p.add_argument("--resolution", type=int, required=True, help="image size the model generates")
    p.add_argument("--elevation", type=float, help="default orbit elevation (task default if omitted)")
    p.add_argument("--radius", type=float, help="default orbit radius (task default if omitted)")
    p.add_argument("--fovy", type=float, help="vertical field of view in degrees (task default if omitted)")
    p.add_argument("--guidance", type=float, help="default guidance scale (task default if omitted)")
    p.add_argument("--sampler", choices=("ddim", "dpmsolver++"), help="the model's sampler (default: ddim)")
    p.add_argument("--steps", type=int, help="the model's sampling steps (task default if omitted)")
    p.add_argument("--vae", type=Path, help="a VAE folder replacing the pipeline's; it must have the same encoder "
                                            "and scaling (e.g. from a decoder-only run)")
    p.add_argument("--timestep-spacing", choices=("leading", "trailing", "linspace"),
                   help="DDIM timestep spacing of the exported model (default: the pipeline's)")
    p.add_argument("--unconditional-image", choices=UNCONDITIONAL_IMAGE,
                   help="image model: what guidance drops of the image (default: the CLIP embedding; 'image' for "
                        "models trained with data.unconditional_image=image)")
    p.add_argument("--clean-input-view", action="store_true",
                   help="image model trained with model.clean_input_view: view 0 is the input image throughout")
    p.add_argument("--share-with", type=Path, help="model folder whose identical components are linked, not copied")
    args = p.parse_args(argv)
    if args.share_with is not None and not args.share_with.is_dir():
        p.error(f"--share-with: {args.share_with} is not a folder")
    try:
        require_empty_destination(args.out, "--out")
    except FileExistsError as err:
        p.error(str(err))

    pipeline = load_pipeline(args.pipeline)
    if task_of(pipeline) != args.task:
        p.error(f"--pipeline {args.pipeline} is a {task_of(pipeline)} pipeline, not --task {args.task}")
    if args.vae is not None:
        pipeline.vae = compatible_vae(pipeline.vae, args.vae)
    if args.timestep_spacing is not None:
        pipeline.scheduler = ddim_with(pipeline.scheduler.config, timestep_spacing=args.timestep_spacing)
    given = dict(elevation=args.elevation, radius=args.radius, guidance_scale=args.guidance, fovy=args.fovy,
                 num_inference_steps=args.steps, sampler=args.sampler, unconditional_image=args.unconditional_image,
                 clean_input_view=args.clean_input_view or None)
    settings = dict(resolution=args.resolution, **{k: v for k, v in given.items() if v is not None})
    model = VideoMV.from_parts(pipeline=pipeline, reconstructor=args.reconstructor, settings=settings)
    model.save_pretrained(args.out, dtype=DTYPES[args.dtype], share_with=args.share_with)
    for component in sorted(args.out.iterdir()):
        if component.is_symlink():
            print(f"{component.name}/ -> {os.readlink(component)} (identical)")
    if not (args.out / "tokenizer").exists():
        print("tokenizer/ left out: it is the bundled CLIP tokenizer")
    size = sum((Path(d) / f).stat().st_size for d, _, files in os.walk(args.out) for f in files)
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB, linked components not counted)")


if __name__ == "__main__":
    main()
