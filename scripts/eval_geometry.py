#!/usr/bin/env python
"""Geometry of multi-view results against reference shapes (paper Table 3): extract a mesh from the
views (visual hull of silhouettes) or from 3D Gaussians (density grid + marching cubes), then Chamfer
distance and volume IoU against the reference mesh.

    python scripts/eval_geometry.py --data-root data/toy_world_64 --source gt --method hull --out runs/t3_gt
    python scripts/eval_geometry.py --data-root data/toy_world_64 --source model --method gaussians --out runs/t3_aware
    python scripts/eval_geometry.py --data-root data/toy_world_64 --source views --views-dir runs/t2_aware/views --out runs/t3
    python scripts/eval_geometry.py --data-root data/gso_e5 --meshes gso/ --source model --out runs/t3_gso

Sources: gt = the ground-truth renders (silhouettes from their alpha: the method's upper bound);
model = generate with an image VideoMV conditioned on view 0; views = generations saved by
scripts/eval_i2mv.py (<views-dir>/<dir_id>__<obj_id>/). Generated views have no alpha: their
silhouettes are the pixels differing from the background colour by more than --threshold.
Methods: hull; gaussians = the model's Gaussians when it has a reconstructor, else Gaussians fitted
to the views. References: for a toy world (toyworld.json in --data-root; the default root is built
on first use) the marching-cubes mesh of the analytic occupancy; otherwise the mesh of each object in
--meshes (the files or GSO folders tools/render_objects.py rendered, found by object name and
normalised into the unit cube as the renders were).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from videomv.eval.cli import EMBEDDED, add_common_args, check_common, command_line, load_model
from videomv.toy.cli import DEFAULT_ROOT as TOY_ROOT
from videomv.toy.cli import prepare_data_root

COLUMNS = ["item", "source", "method", "chamfer", "volume_iou"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", "--objects", dest="data_root", type=Path, default=TOY_ROOT,
                   help="G-Objaverse-layout root with <split>.txt (default: the toy world, built on first use)")
    p.add_argument("--split", default="test")
    p.add_argument("--source", choices=("gt", "model", "views"), default="gt")
    p.add_argument("--method", choices=("hull", "gaussians"), default="hull")
    p.add_argument("--model", type=Path, default=EMBEDDED["image"], help="image VideoMV folder for --source model")
    p.add_argument("--views-dir", type=Path, help="saved generations for --source views")
    p.add_argument("--meshes", type=Path, nargs="+", help="reference meshes (files or folders) of a rendered, non-toy root")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps for --source model")
    p.add_argument("--no-3d-aware", action="store_true")
    p.add_argument("--threshold", type=float, default=0.05, help="background-difference threshold for silhouettes")
    p.add_argument("--grid", type=int, default=64, help="extraction grid resolution")
    p.add_argument("--bound", type=float, default=None, help="half side of the extraction grid (default: 0.75 "
                   "for toy worlds, 0.9 for meshes in the unit cube)")
    p.add_argument("--level", type=float, default=0.5, help="Gaussian density level for marching cubes")
    p.add_argument("--reference-resolution", type=int, default=128, help="grid of the toy reference meshes")
    p.add_argument("--normalize", choices=("gt", "each"), default="gt",
                   help="gt: both meshes by the reference's unit-box normalisation; each: each by its own")
    p.add_argument("--fit-iters", type=int, default=300, help="Gaussian fitting when the source has no Gaussians")
    p.add_argument("--fit-gaussians", type=int, default=2000)
    add_common_args(p)
    args = p.parse_args(argv)
    check_common(p, args, "eval_geometry")
    args.data_root = prepare_data_root(args.data_root)
    if not args.data_root.is_dir():
        p.error(f"--data-root: {args.data_root} is not a folder")
    from videomv.eval.geometry_eval import BOUND
    from videomv.toy.references import ToyReferences, is_toy_dataset

    toy = is_toy_dataset(args.data_root)
    if not toy and not args.meshes:
        p.error(f"--meshes: {args.data_root} is not a toy world, so the reference meshes must be given")
    try:
        if toy:
            args.references = ToyReferences(args.data_root, args.reference_resolution)
        else:
            from videomv.eval.references import MeshReferences

            args.references = MeshReferences(args.meshes)
    except ValueError as err:
        p.error(f"--meshes: {err}")
    args.bound = args.bound or (BOUND if toy else 0.9)
    args.meshes = [str(m) for m in args.meshes] if args.meshes else None
    if args.source == "views" and (args.views_dir is None or not args.views_dir.is_dir()):
        p.error("--source views needs --views-dir, a folder of saved generations")
    if not 0 < args.threshold < 1:
        p.error(f"--threshold must be in (0, 1), got {args.threshold}")
    if args.grid < 8 or args.reference_resolution < 8:
        p.error("--grid and --reference-resolution must be >= 8")
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    from tqdm.auto import tqdm

    from videomv.eval import geometry_eval as geo
    from videomv.eval.i2mv import generate_views
    from videomv.eval.nvs import FitSettings
    from videomv.eval.report import write_table
    from videomv.eval.view_sets import ViewSet, ground_truth_view_sets, load_view_set

    p = args.parser
    model = load_model(p, args.model, "image", args.device, not args.no_3d_aware) if args.source == "model" else None
    background = model.settings.background if model is not None else (1.0, 1.0, 1.0)
    try:
        references = ground_truth_view_sets(args.data_root, args.split, background, limit=args.limit)
    except ValueError as err:
        p.error(str(err))
    fit = FitSettings(resolution=references[0].resolution, num_gaussians=args.fit_gaussians, iters=args.fit_iters,
                      seed=args.seed)
    rows = []
    for ref in tqdm(references, desc="geometry"):
        try:
            reference_mesh = args.references(ref.name)
        except ValueError as err:
            p.error(str(err))
        gaussians = None
        if args.source == "gt":
            views, masks = ref, ref.alphas[:, 0]
        else:
            if args.source == "model":
                output = generate_views(model, ref, args.steps, args.seed, not args.no_3d_aware)
                views = ViewSet(ref.name, output.images.clamp(0, 1), output.cameras, model.settings.fovy,
                                background=model.settings.background)
                gaussians = output.gaussians
            else:
                views = load_view_set(args.views_dir / ref.name.replace("/", "__"), name=ref.name)
            masks = geo.silhouettes_from_background(views.images, views.background, args.threshold)
        try:
            if args.method == "hull":
                mesh = geo.hull_mesh(masks, views.cameras, views.fovy, args.grid, args.bound)
            else:
                if gaussians is None:
                    gaussians = geo.fit_view_gaussians(views, masks, fit)
                mesh = geo.gaussian_mesh(gaussians, args.grid, args.bound, level=args.level)
        except ValueError as err:  # nothing to extract: an empty prediction
            print(f"{ref.name}: no surface extracted ({err})", file=sys.stderr)
            rows.append({"item": ref.name, "source": args.source, "method": args.method, "chamfer": "no surface",
                         "volume_iou": 0.0})
            continue
        metrics = geo.geometry_metrics(mesh, reference_mesh, resolution=args.grid, normalize=args.normalize,
                                       seed=args.seed)
        rows.append({"item": ref.name, "source": args.source, "method": args.method, **metrics})
    settings = {"command": command_line("scripts/eval_geometry.py", argv), **{k: str(v) if isinstance(v, Path) else v
                for k, v in vars(args).items() if k not in ("parser", "references")}}
    paths = write_table(args.out, "table3", rows, COLUMNS, settings=settings)
    print(paths["markdown"].read_text(), end="")
    print(f"-> {paths['markdown']}, {paths['csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
