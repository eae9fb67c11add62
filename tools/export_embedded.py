#!/usr/bin/env python
"""Assemble a VideoMV model folder (what `scripts/sample.py --model` and `VideoMV.from_pretrained`
load) from a stage-1 run's exported pipeline and a stage-2 run's reconstructor.

    python tools/export_embedded.py --task text --pipeline runs/toy_t2mv/final \\
        --reconstructor runs/toy_recon_ft/reconstructor --out data/embedded/t2mv --resolution 64 --dtype fp16
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import torch

from videomv.recon import Reconstructor
from videomv.sampling import I2MVPipeline, T2MVPipeline
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
    args = p.parse_args(argv)

    pipeline_cls = T2MVPipeline if args.task == "text" else I2MVPipeline
    pipeline = pipeline_cls.from_pretrained(args.pipeline).to(DTYPES[args.dtype])
    recon = Reconstructor.from_pretrained(args.reconstructor, dtype=DTYPES[args.dtype]) if args.reconstructor else None
    overrides = {k: v for k, v in dict(elevation=args.elevation, radius=args.radius,
                                       guidance_scale=args.guidance).items() if v is not None}
    settings = VideoMVSettings.for_task(args.task, resolution=args.resolution, fovy=args.fovy,
                                        num_inference_steps=args.steps, **overrides)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.", dir=args.out.parent))
    try:
        VideoMV(pipeline, recon, settings).save_pretrained(tmp)
        if args.out.exists():
            shutil.rmtree(args.out)
        tmp.rename(args.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
