"""Geometry of generated views against a reference shape (the paper's Table 3 protocol).

A mesh is extracted from the views in one of two ways:
- "hull": the visual hull of the views' silhouettes (a point is kept when it projects inside every
  silhouette), then marching cubes at 0.5. Silhouettes are the alpha channel for renders; generated
  views have no alpha, so a pixel counts as foreground when any channel differs from the known
  background colour by more than `threshold` (an object part of the background's colour is carved
  away; keep the threshold above the generator's background noise).
- "gaussians": the opacity-weighted density of a 3D Gaussian model on a grid, marching cubes at
  `level` (the Gaussians of a 3D-aware generation, or Gaussians fitted to the views).
Chamfer distance and volume IoU are computed by `mesh_metrics`. The views' cameras are the
reference's, so the extracted mesh already lives in the reference's frame: by default both meshes
are mapped by the normalisation of the reference (unit bounding box), which keeps the prediction's
scale and position errors; "each" (each mesh to its own unit box, as for reconstructions in an
unknown frame) is available. "each" punishes a visual hull's typical excess (e.g. the unseen
underside below an elevated orbit) twice, by also shrinking the whole prediction. For toy objects the reference is the marching-cubes mesh of the analytic
occupancy (`toyworld.occupancy`) on a fine grid.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from videomv.data import toyworld

from .fields import gaussian_density_grid, grid_points, visual_hull
from .mesh import Mesh, extract_mesh, mesh_metrics

BOUND = 0.75  # half side of the extraction grid; toy objects lie inside a sphere of radius 0.6
MESH_METHODS = ("hull", "gaussians")


def toy_reference_mesh(obj: toyworld.ToyObject, resolution: int = 128, bound: float = BOUND) -> Mesh:
    """Marching cubes of the object's analytic occupancy on a `resolution`^3 grid."""
    inside = toyworld.occupancy(obj, grid_points(resolution, bound))
    return extract_mesh(inside.float(), 0.5, bound)


def toy_object_for(root: str | Path, object_id: str) -> toyworld.ToyObject:
    """Recreate a toy object from its dataset folder's settings (`toyworld.json`) and its id."""
    settings_file = Path(root) / "toyworld.json"
    try:
        settings = json.loads(settings_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{settings_file}: cannot read the toy world settings ({err}); is {root} a toy dataset?") from None
    match = re.fullmatch(r"\d+/toy_(\d+)", object_id)
    if settings.get("generator") != "videomv.data.toyworld" or match is None:
        raise ValueError(f"{object_id} in {root} is not a toy-world object (expected '<dir>/toy_<index>')")
    return toyworld.sample_object(int(settings["seed"]), int(match.group(1)))


def silhouettes_from_background(images: torch.Tensor, background, threshold: float = 0.05) -> torch.Tensor:
    """(V, 3, H, W) views on a plain background -> (V, H, W) {0, 1} foreground masks."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (V, 3, H, W), got {tuple(images.shape)}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    bg = torch.as_tensor(background, dtype=images.dtype).view(1, 3, 1, 1)
    return ((images - bg).abs().amax(1) > threshold).float()


def hull_mesh(masks: torch.Tensor, cameras: torch.Tensor, fovy: float, resolution: int = 64,
              bound: float = BOUND) -> Mesh:
    """Visual hull of (V, H, W) silhouettes, as a mesh."""
    return extract_mesh(visual_hull(masks, cameras, fovy_deg=fovy, resolution=resolution, bound=bound), 0.5, bound)


def gaussian_mesh(gaussians, resolution: int = 64, bound: float = BOUND, level: float = 0.5) -> Mesh:
    """Marching cubes of a GaussianSet's density grid at `level`."""
    field = gaussian_density_grid(gaussians.means, gaussians.scales, gaussians.rotations, gaussians.opacities,
                                  resolution=resolution, bound=bound)
    return extract_mesh(field, level, bound)


def geometry_metrics(pred: Mesh, reference: Mesh, num_points: int = 20_000, resolution: int = 64,
                     normalize: str = "gt", seed: int = 0) -> dict:
    """{"chamfer", "volume_iou"} after normalisation ("gt": the reference's, "each": each mesh's own)."""
    return mesh_metrics(pred, reference, num_points=num_points, resolution=resolution, normalize=normalize, seed=seed)


def reference_mesh_for(root: str | Path, object_id: str, reference_dir: str | Path | None = None,
                       resolution: int = 128) -> Mesh:
    """The reference shape of an object: `<reference_dir>/<object_id>.obj|.ply` when given, else the
    analytic toy-world shape (the root must be a toy dataset)."""
    from .mesh import load_obj, load_ply

    if reference_dir is not None:
        for suffix, loader in ((".obj", load_obj), (".ply", load_ply)):
            path = Path(reference_dir) / f"{object_id}{suffix}"
            if path.is_file():
                return loader(path)
        raise ValueError(f"no reference mesh {object_id}.obj or .ply in {reference_dir}")
    return toy_reference_mesh(toy_object_for(root, object_id), resolution)


def fit_view_gaussians(views, masks: torch.Tensor, fit):
    """Gaussians fitted to all views of a ViewSet, with its silhouettes as alpha targets."""
    from videomv.gaussians import fit_gaussians

    return fit_gaussians(views.images, views.cameras, views.fovy, num_gaussians=fit.num_gaussians, iters=fit.iters,
                         background=views.background, seed=fit.seed, masks=masks[:, None], loss=fit.loss,
                         init_radius=fit.init_radius, init_scale=fit.init_scale, views_per_step=fit.views_per_step,
                         lr=fit.lr, backend="torch", progress=False)
