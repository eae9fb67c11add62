#!/usr/bin/env python
"""Generate consistent views (and 3D Gaussians) from a text prompt or an image.

    python scripts/sample.py --prompt "a red cube on top of a blue cylinder" --out outputs/cube
    python scripts/sample.py --image object.png --out outputs/object

Without --model the embedded toy models in data/embedded/ are used. Every input is checked before the
model loads: bad input exits with code 2, one line on stderr, and writes nothing. An interrupt
(Ctrl-C) exits with code 130 and writes nothing either.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from pathlib import Path

from videomv.inputs import InputError, check_device, check_model_folder, check_out, check_steps

# Heavy modules (torch, diffusers) are imported after the arguments are parsed, so that --help and
# argument errors answer at once.

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = {"text": REPO / "data" / "embedded" / "t2mv", "image": REPO / "data" / "embedded" / "i2mv"}
MAX_VIEWS = 96  # four times the 24 views the models are trained on; time and memory grow with the views
MIN_RADIUS = 0.01
# One intra-op thread: the embedded models' many small ops gain little from more, and on a small
# machine shared with other work extra threads stall each other.
DEFAULT_THREADS = 1


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """One line on stderr (a library's message may span several), exit code 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(str(message).split())} (see --help)\n")


def build_parser() -> Parser:
    p = Parser(prog=Path(__file__).name, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", help="text prompt (text -> views)")
    source.add_argument("--image", type=Path, help="square object image, RGBA composited on white (image -> views)")
    p.add_argument("--model", type=Path, help="a trained VideoMV folder (default: the embedded toy model)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default outputs/<time>); must be new or empty")
    p.add_argument("--num-views", type=int, default=None,
                   help=f"views on the default orbit, 4 to {MAX_VIEWS} (default: the model's, 24)")
    p.add_argument("--elevation", type=float, default=None, help="orbit elevation in degrees (default: the model's)")
    p.add_argument("--radius", type=float, default=None, help="orbit radius (default: the model's)")
    p.add_argument("--cameras", type=Path, help="JSON camera file: a list of at most "
                   f"{MAX_VIEWS} 4x4 OpenGL c2w looking at the origin, or of {{elevation, azimuth, radius}}; "
                   "overrides --num-views/--elevation/--radius")
    p.add_argument("--steps", type=int, default=None,
                   help="denoising steps, 1 to 1000 (default: the model's; 20 for a sampler it does not name)")
    p.add_argument("--sampler", choices=("ddim", "dpmsolver++"), default=None,
                   help="ddim, or dpmsolver++ (second order, 20-25 steps) on the same noise schedule (default: the model's)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-3d-aware", action="store_true", help="plain sampling, no reconstruction in the loop")
    p.add_argument("--branches", choices=("both", "guided"), default="both",
                   help="reconstruct both guidance branches (the release) or only the guided z0")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help=f"CPU threads for torch (default: $OMP_NUM_THREADS when set, else {DEFAULT_THREADS}); "
                   "the thread count can change the last bit of results")
    p.add_argument("--mesh", action="store_true",
                   help="also write a textured mesh (mesh.glb, mesh.obj + texture); needs pip install -e '.[mesh]'")
    p.add_argument("--turntable", type=int, nargs="?", const=256, default=None, metavar="PIXELS",
                   help="also write turntable.mp4, the 3D result on an orbit, PIXELS per side (default 256)")
    return p


# ---------------------------------------------------------------------------------------------- #
# parse -> validate: everything that can be checked without the model's weights
# ---------------------------------------------------------------------------------------------- #


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check the values alone (no file system, no torch)."""
    p = build_parser()
    args = p.parse_args(argv)
    if args.prompt is not None and not args.prompt.strip():
        p.error("--prompt: the prompt is empty")
    if args.num_views is not None and not 4 <= args.num_views <= MAX_VIEWS:
        p.error(f"--num-views must be in [4, {MAX_VIEWS}], got {args.num_views}")
    if args.elevation is not None and not -90 < args.elevation < 90:
        p.error(f"--elevation must be in (-90, 90) degrees, got {args.elevation}")
    if args.radius is not None and not (math.isfinite(args.radius) and args.radius >= MIN_RADIUS):
        p.error(f"--radius must be at least {MIN_RADIUS}, got {args.radius}")
    if args.steps is not None and not 1 <= args.steps <= 1000:
        p.error(f"--steps must be in [1, 1000], got {args.steps}")
    if args.guidance is not None and not (math.isfinite(args.guidance) and args.guidance >= 0):
        p.error(f"--guidance must be a non-negative number, got {args.guidance}")
    if args.turntable is not None and not 16 <= args.turntable <= 4096:
        p.error(f"--turntable must be in [16, 4096] pixels, got {args.turntable}")
    if args.threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        args.threads = int(env) if env.isdigit() and int(env) > 0 else DEFAULT_THREADS
    if args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if args.model is None:
        args.model = EMBEDDED["text" if args.prompt is not None else "image"]
    if args.out is None:
        args.out = REPO / "outputs" / time.strftime("%Y%m%d-%H%M%S")
    return args


def validate(args: argparse.Namespace) -> dict:
    """Check every input against the file system and this machine, before the model loads.
    Returns what the later steps need: settings, device, cameras (or None), image (or None)."""
    settings = check_model_folder(args.model, "text" if args.prompt is not None else "image")
    if (args.mesh or args.turntable) and not (args.model / "reconstructor").is_dir():
        raise InputError(f"--mesh/--turntable: {args.model} has no reconstructor, so no 3D result")
    if args.mesh:
        missing = [name for name in ("xatlas", "skimage") if importlib.util.find_spec(name) is None]
        if missing:
            raise InputError(f"--mesh needs {' and '.join(missing)}: pip install -e '.[mesh]'")
    check_out(args.out)
    import torch

    torch.set_num_threads(args.threads)
    device = check_device(args.device)
    from videomv.geometry import load_trajectory

    cameras = load_trajectory(args.cameras, max_cameras=MAX_VIEWS) if args.cameras else None
    from videomv.sampling.ddim import steps_for

    own_sampler = settings.get("sampler", "ddim")
    sampler = args.sampler or own_sampler
    check_steps(args.model, args.steps or steps_for(sampler, own_sampler, settings["num_inference_steps"]), sampler)
    image = None
    if args.image is not None:
        from videomv.sampling.export import load_condition_image

        image = load_condition_image(args.image, settings["resolution"])
    return dict(settings=settings, device=device, cameras=cameras, image=image)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def input_warnings(args: argparse.Namespace, model, image) -> None:
    """What is accepted but probably not meant: a prompt longer than the text encoder reads, an
    image whose border is not the model's background."""
    if args.prompt is not None:
        tokenizer = model.pipeline.tokenizer
        tokens = tokenizer(args.prompt, add_special_tokens=False, verbose=False)["input_ids"]
        kept = tokenizer.model_max_length - 2  # start and end tokens take two places
        if len(tokens) > kept:
            tail = tokenizer.decode(tokens[max(0, kept - 6):kept]).strip()
            warn(f"--prompt is {len(tokens)} tokens long; the text encoder reads the first {kept} "
                 f"(up to \"...{tail}\") and ignores the rest")
    if image is not None:
        from videomv.sampling.export import border_off_background

        background = model.settings.background
        if border_off_background(image, background) > 0.05:
            shade = "white" if min(background) == 1.0 else f"RGB {tuple(round(255 * b) for b in background)}"
            warn(f"--image {args.image}: its border is not the background ({shade}) and it has no transparent "
                 "background; the model expects one object on that background (remove the background first)")


# ---------------------------------------------------------------------------------------------- #
# load -> sample -> save
# ---------------------------------------------------------------------------------------------- #


def run(argv=None) -> tuple[str, dict]:
    """parse -> validate -> load -> sample -> save; returns a summary line and the written paths."""
    args = parse_args(argv)
    try:
        checked = validate(args)
    except (InputError, ValueError) as err:
        build_parser().error(str(err))

    from videomv.sampling.export import save_generation
    from videomv.sampling.system import VideoMV

    try:
        model = VideoMV.from_pretrained(args.model, device=checked["device"])
    except (FileNotFoundError, OSError, ValueError) as err:
        build_parser().error(f"--model: cannot load {args.model}: {err}")
    cameras = checked["cameras"]
    if cameras is None:
        cameras = model.default_cameras(args.num_views, args.elevation, args.radius)
    input_warnings(args, model, checked["image"])

    start = time.perf_counter()
    output = model(prompt=args.prompt, image=checked["image"], cameras=cameras, num_inference_steps=args.steps,
                   guidance_scale=args.guidance, seed=args.seed, three_d_aware=not args.no_3d_aware,
                   branches=args.branches, sampler=args.sampler)
    seconds = time.perf_counter() - start
    written = save_generation(output, args.out, extra_settings={
        "model": str(args.model), "image": str(args.image) if args.image else None,
        "cameras_file": str(args.cameras) if args.cameras else None, "device": checked["device"],
        "threads": args.threads, "seconds": round(seconds, 2)})
    if args.mesh or args.turntable:
        from videomv.mesh.outputs import save_3d_outputs

        try:
            written.update(save_3d_outputs(output, args.out, mesh=args.mesh, turntable_resolution=args.turntable))
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"the views are in {args.out}; the mesh/turntable step did not finish") from None
    return f"{len(output.images)} views in {seconds:.1f} s -> {args.out}", written


def main(argv=None) -> int:
    try:
        summary, written = run(argv)
    except KeyboardInterrupt as interrupt:
        # save_generation moves a complete folder into place or removes its temporary one.
        print(f"\ninterrupted, {str(interrupt) or 'nothing written'}", file=sys.stderr)
        return 130
    print(summary)
    for name, path in written.items():
        print(f"  {name:9s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
