#!/usr/bin/env python
"""Render meshes into the published G-Objaverse layout with Blender (pip install bpy, Python 3.11):

    python tools/render_objects.py --meshes <folders or files> --out <root> \
        --num-views 24 --resolution 512 --elevation-range 5 30 --seed 0 [--engine cycles]

Meshes: .glb .gltf .obj .ply .off .stl files, and Google Scanned Objects folders
(<name>/meshes/model.obj with <name>/materials/textures/texture.png). Each is normalised into the
unit cube and rendered on a 24-view orbit at one random elevation in the range; objects already
rendered are not rendered again, broken meshes are skipped and listed in <out>/skipped.json.
Writes captions.json (from file names unless --captions), train/val/test.txt and
render_settings.json. See videomv/render/objects.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--meshes", type=Path, nargs="+", required=True, help="mesh files and/or folders of them")
    p.add_argument("--out", type=Path, required=True, help="dataset root (created; resumed when it exists)")
    p.add_argument("--num-views", type=int, default=24)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--elevation-range", type=float, nargs=2, default=(5.0, 30.0), metavar=("LOW", "HIGH"))
    p.add_argument("--radius", type=float, default=2.0, help="camera distance (the unit cube's centre is the target)")
    p.add_argument("--fov", type=float, default=49.1, help="vertical field of view, degrees")
    p.add_argument("--engine", choices=("workbench", "cycles"), default="workbench",
                   help="workbench: fast, flat studio lighting; cycles: path traced on the CPU")
    p.add_argument("--samples", type=int, default=32, help="Cycles samples per pixel")
    p.add_argument("--seed", type=int, default=0, help="elevations and the split")
    p.add_argument("--dir-id", default="0", help="the <dir_id> folder objects are written under")
    p.add_argument("--split", type=float, nargs=3, default=(0.9, 0.05, 0.05), metavar=("TRAIN", "VAL", "TEST"))
    p.add_argument("--captions", type=Path, help="JSON {name or '<dir_id>/<name>': caption}")
    p.add_argument("--limit", type=int, default=None, help="render only the first N meshes (by name)")
    p.add_argument("--threads", type=int, default=None, help="Blender render threads (default: all cores)")
    args = p.parse_args(argv)
    from videomv.data.meshes import find_meshes
    from videomv.render import RenderSettings

    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    try:
        args.settings = RenderSettings(args.num_views, args.resolution, tuple(args.elevation_range), args.radius,
                                       args.fov, args.engine, args.samples, args.seed, args.dir_id, tuple(args.split),
                                       args.threads)
        args.found = find_meshes(args.meshes)
    except ValueError as err:
        p.error(str(err))
    if args.limit is not None:
        if args.limit < 1:
            p.error(f"--limit must be >= 1, got {args.limit}")
        args.found = dict(list(args.found.items())[: args.limit])
    args.caption_map = None
    if args.captions is not None:
        try:
            args.caption_map = json.loads(args.captions.read_text())
        except (OSError, json.JSONDecodeError) as err:
            p.error(f"--captions: cannot read {args.captions}: {err}")
        if not isinstance(args.caption_map, dict):
            p.error(f"--captions: {args.captions} must hold a JSON object name -> caption")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from videomv.render import render_objects
    from videomv.render.blender import import_bpy

    try:
        bpy = import_bpy()
    except ImportError as err:
        print(err, file=sys.stderr)
        return 2
    del bpy  # imported here only to fail early with the install hint
    summary = render_objects(args.found, args.out, args.settings, args.caption_map)
    times = list(summary.seconds.values())
    per_object = sum(times) / len(times) if times else 0.0
    print(f"{len(summary.rendered)} rendered, {len(summary.reused)} already there, {len(summary.skipped)} skipped"
          + (f"; {per_object:.2f} s per object, {per_object / args.num_views:.3f} s per view" if times else ""))
    for name, reason in summary.skipped.items():
        print(f"  skipped {name}: {reason}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
