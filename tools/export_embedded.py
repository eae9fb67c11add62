#!/usr/bin/env python
"""Assemble a VideoMV model folder (what `scripts/sample.py --model` and `VideoMV.from_pretrained`
load) from a stage-1 run's exported pipeline and a stage-2 run's reconstructor.

    python tools/export_embedded.py --task text --pipeline runs/toy_t2mv/final \\
        --reconstructor runs/toy_recon_ft/reconstructor --out data/embedded/t2mv --resolution 64 --dtype fp16

Configs lose their `_name_or_path` (a path on the exporting machine). A tokenizer identical to the
bundled CLIP tokenizer is left out (loading falls back to it), and with --share-with, components
byte-identical to another model folder's become relative symlinks.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from videomv.models.conditioning import is_bundled_clip_tokenizer
from videomv.recon import Reconstructor
from videomv.sampling import I2MVPipeline, T2MVPipeline
from videomv.sampling.ddim import ddim_with
from videomv.sampling.system import VideoMV, VideoMVSettings

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("text", "image"), required=True)
    p.add_argument("--pipeline", type=Path, required=True, help="stage-1 pipeline folder (<run>/final)")
    p.add_argument("--reconstructor", type=Path, help="stage-2 reconstructor folder (<run>/reconstructor)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp16", help="storage precision (loaded as fp32)")
    p.add_argument("--resolution", type=int, required=True, help="image size the model generates")
    p.add_argument("--elevation", type=float, help="default orbit elevation (task default if omitted)")
    p.add_argument("--radius", type=float, help="default orbit radius (task default if omitted)")
    p.add_argument("--fovy", type=float, default=49.1)
    p.add_argument("--guidance", type=float, help="default guidance scale (task default if omitted)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--vae", type=Path, help="a VAE folder replacing the pipeline's; it must have the same encoder "
                                            "and scaling (e.g. from a decoder-only run)")
    p.add_argument("--timestep-spacing", choices=("leading", "trailing", "linspace"),
                   help="DDIM timestep spacing of the exported model (default: the pipeline's)")
    p.add_argument("--share-with", type=Path, help="model folder whose identical components are linked, not copied")
    args = p.parse_args(argv)
    if args.share_with is not None and not args.share_with.is_dir():
        p.error(f"--share-with: {args.share_with} is not a folder")

    pipeline_cls = T2MVPipeline if args.task == "text" else I2MVPipeline
    pipeline = pipeline_cls.from_pretrained(args.pipeline)
    if args.vae is not None:
        pipeline.vae = replacement_vae(pipeline.vae, args.vae)
    if args.timestep_spacing is not None:
        pipeline.scheduler = ddim_with(pipeline.scheduler.config, timestep_spacing=args.timestep_spacing)
    pipeline = pipeline.to(DTYPES[args.dtype])
    recon = Reconstructor.from_pretrained(args.reconstructor, dtype=DTYPES[args.dtype]) if args.reconstructor else None
    overrides = {k: v for k, v in dict(elevation=args.elevation, radius=args.radius,
                                       guidance_scale=args.guidance).items() if v is not None}
    settings = VideoMVSettings.for_task(args.task, resolution=args.resolution, fovy=args.fovy,
                                        num_inference_steps=args.steps, **overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        VideoMV(pipeline, recon, settings).save_pretrained(tmp)
        drop_source_paths(tmp)
        if is_bundled_clip_tokenizer(pipeline.tokenizer):
            shutil.rmtree(tmp / "tokenizer")
            print("tokenizer/ left out: it is the bundled CLIP tokenizer")
        if args.share_with is not None:
            link_identical_components(tmp, args.share_with, final=args.out)
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum((Path(d) / f).stat().st_size for d, _, files in os.walk(args.out) for f in files)
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB, linked components not counted)")


def replacement_vae(current: AutoencoderKL, path: Path) -> AutoencoderKL:
    """The VAE at `path`, if it maps images to the same latents as `current` (same encoder weights
    and scaling factor): the diffusion model was trained in that latent space."""
    vae = AutoencoderKL.from_pretrained(str(path))
    if vae.config.scaling_factor != current.config.scaling_factor:
        raise ValueError(f"--vae {path}: scaling_factor {vae.config.scaling_factor} != the pipeline's "
                         f"{current.config.scaling_factor}")
    ours, theirs = current.state_dict(), vae.state_dict()
    encoder = [k for k in ours if k.startswith(("encoder.", "quant_conv."))]
    changed = [k for k in encoder if k not in theirs or not torch.equal(ours[k], theirs[k].to(ours[k].dtype))]
    if changed:
        raise ValueError(f"--vae {path}: its encoder differs from the pipeline's ({len(changed)} tensors, e.g. "
                         f"{changed[0]}), so the model's latents would not match")
    return vae


def drop_source_paths(folder: Path) -> None:
    """Remove the `_name_or_path` entries (where this machine loaded each part from) from the configs."""
    for config in folder.rglob("*.json"):
        data = json.loads(config.read_text())
        if isinstance(data, dict) and "_name_or_path" in data:
            del data["_name_or_path"]
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], []):
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def link_identical_components(folder: Path, other: Path, final: Path) -> None:
    """Replace each component folder of `folder` that is byte-identical to `other`'s by a relative
    symlink, valid once `folder` is renamed to `final`."""
    for component in sorted(d for d in folder.iterdir() if d.is_dir()):
        twin = other / component.name
        if twin.is_dir() and same_tree(component, twin):
            shutil.rmtree(component)
            target = os.path.relpath(twin.resolve(), final.resolve())
            component.symlink_to(target, target_is_directory=True)
            print(f"{component.name}/ -> {target} (identical)")


if __name__ == "__main__":
    main()
