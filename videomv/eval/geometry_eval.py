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
underside below an elevated orbit) twice, by also shrinking the whole prediction.

References come from a provider, a callable object id -> Mesh: `MeshReferences` for real meshes
(videomv.eval.references), the toy world's analytic shapes for toy datasets (videomv.toy.references).
"""

from __future__ import annotations

import torch

from .fields import gaussian_density_grid, visual_hull
from .mesh import Mesh, extract_mesh, mesh_metrics

BOUND = 0.75  # half side of the extraction grid; toy objects lie inside a sphere of radius 0.6 (real meshes in the unit cube need 0.87)
MESH_METHODS = ("hull", "gaussians")


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


def fit_view_gaussians(views, masks: torch.Tensor, fit):
    """Gaussians fitted to all views of a ViewSet, with its silhouettes as alpha targets."""
    from videomv.gaussians import fit_gaussians

    return fit_gaussians(views.images, views.cameras, views.fovy, num_gaussians=fit.num_gaussians, iters=fit.iters,
                         background=views.background, seed=fit.seed, masks=masks[:, None], loss=fit.loss,
                         init_radius=fit.init_radius, init_scale=fit.init_scale, views_per_step=fit.views_per_step,
                         lr=fit.lr, backend="torch", progress=False)
