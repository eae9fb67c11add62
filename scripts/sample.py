#!/usr/bin/env python
"""Generate consistent views (and 3D Gaussians) from a text prompt or an image.

    python scripts/sample.py --prompt "a red cube on top of a blue cylinder" --out outputs/cube
    python scripts/sample.py --image object.png --out outputs/object

Without --model the embedded toy models in data/embedded/ are used.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = {"text": REPO / "data" / "embedded" / "t2mv", "image": REPO / "data" / "embedded" / "i2mv"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text prompt (text -> views)")
    source.add_argument("--image", type=Path, help="square object image, RGBA composited on white (image -> views)")
    p.add_argument("--model", type=Path, help="a trained VideoMV folder (default: the embedded toy model)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/<time>); must be new or empty")
    p.add_argument("--num-views", type=int, default=None, help="views on the default orbit (default: the model's, 24)")
    p.add_argument("--elevation", type=float, default=None, help="orbit elevation in degrees (default: the model's)")
    p.add_argument("--radius", type=float, default=None, help="orbit radius (default: the model's)")
    p.add_argument("--cameras", type=Path, help="JSON camera file: a list of 4x4 OpenGL c2w, or of "
                   "{elevation, azimuth, radius}; overrides --num-views/--elevation/--radius")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: the model's, 50)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-3d-aware", action="store_true", help="plain sampling, no reconstruction in the loop")
    p.add_argument("--branches", choices=("both", "guided"), default="both",
                   help="reconstruct both guidance branches (the release) or only the guided z0")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mesh", action="store_true", help="also write a textured mesh (mesh.glb, mesh.obj + texture)")
    p.add_argument("--turntable", type=int, nargs="?", const=256, default=None, metavar="PIXELS",
                   help="also write turntable.mp4, the 3D result on an orbit, PIXELS per side (default 256)")
    args = p.parse_args(argv)

    if args.prompt is not None and not args.prompt.strip():
        p.error("--prompt: the prompt is empty")
    if args.num_views is not None and args.num_views < 4:
        p.error(f"--num-views must be at least 4, got {args.num_views}")
    if args.elevation is not None and not -90 < args.elevation < 90:
        p.error(f"--elevation must be in (-90, 90) degrees, got {args.elevation}")
    if args.radius is not None and not (math.isfinite(args.radius) and args.radius > 0):
        p.error(f"--radius must be positive, got {args.radius}")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        p.error(f"--steps must be in [1, 1000], got {args.steps}")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        p.error(f"--guidance must be a non-negative number, got {args.guidance}")
    if args.turntable is not None and not 16 <= args.turntable <= 4096:
        p.error(f"--turntable must be in [16, 4096] pixels, got {args.turntable}")
    if args.model is None:
        args.model = EMBEDDED["text" if args.prompt is not None else "image"]
    if not args.model.is_dir():
        p.error(f"--model: {args.model} is not a folder")
    if args.out is None:
        args.out = REPO / "outputs" / time.strftime("%Y%m%d-%H%M%S")
    elif args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        p.error(f"--out: {args.out} exists and is not an empty folder")
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from videomv.geometry import load_trajectory
    from videomv.sampling.export import load_condition_image, save_generation
    from videomv.sampling.system import VideoMV

    try:
        model = VideoMV.from_pretrained(args.model, device=args.device)
    except (FileNotFoundError, OSError, ValueError) as err:
        args.parser.error(f"--model: cannot load {args.model}: {err}")
    task = model.settings.task
    if (task == "text") != (args.prompt is not None):
        args.parser.error(f"--model: {args.model} is a {task} model; give --{'prompt' if task == 'text' else 'image'}")
    if (args.mesh or args.turntable) and model.reconstructor is None:
        args.parser.error(f"--mesh/--turntable: {args.model} has no reconstructor, so no 3D result")
    try:
        cameras = load_trajectory(args.cameras) if args.cameras else model.default_cameras(
            args.num_views, args.elevation, args.radius)
        image = load_condition_image(args.image, model.settings.resolution) if args.image else None
    except ValueError as err:
        args.parser.error(str(err))

    start = time.perf_counter()
    output = model(prompt=args.prompt, image=image, cameras=cameras, num_inference_steps=args.steps,
                   guidance_scale=args.guidance, seed=args.seed, three_d_aware=not args.no_3d_aware,
                   branches=args.branches)
    seconds = time.perf_counter() - start
    written = save_generation(output, args.out, extra_settings={
        "model": str(args.model), "image": str(args.image) if args.image else None,
        "cameras_file": str(args.cameras) if args.cameras else None, "device": args.device,
        "seconds": round(seconds, 2)})
    if args.mesh or args.turntable:
        from videomv.mesh.outputs import save_3d_outputs

        written.update(save_3d_outputs(output, args.out, mesh=args.mesh, turntable_resolution=args.turntable))
    print(f"{len(output.images)} views in {seconds:.1f} s -> {args.out}")
    for name, path in written.items():
        print(f"  {name:9s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
