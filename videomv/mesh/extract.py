"""Geometry of a GaussianSet as a closed triangle mesh.

The Gaussians of a reconstruction sit on the object's surface (small, flat, semi-transparent), so
their density is a thin shell, not a solid. The solid is recovered by carving with the Gaussians'
own renders instead: from a ring of cameras around the object, a grid point is outside when it
projects where the rendered alpha is low, or lies in front of the rendered surface (expected depth
= composited depth / alpha) by more than a margin. The occupancy of a point is the minimum over
views of the rendered alpha where it is not in front of the surface, 0 where it is; marching cubes
at 0.5 on that field (lightly smoothed) gives the surface. Concavities seen by some carving view are
kept, unlike a silhouette-only visual hull.

Only cameras at or above the horizon carve by default: a reconstruction from an orbit above the
object has an unobserved (often open) underside, and a view from below would look through it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from videomv.eval.fields import grid_points, project_points
from videomv.eval.mesh import extract_mesh
from videomv.gaussians import GaussianSet, render
from videomv.geometry import intrinsics_from_fov, orbit_cameras


@dataclass
class CarveSettings:
    """resolution: grid points per axis; bound: half side of the grid cube (world units; None:
    from the Gaussians, see `fitted`);
    elevations / azimuths: the carving cameras' rings (degrees; `azimuths` views per ring) at
    `radius`, field of view `fovy`, rendered at `image_size`; depth_margin: how far in front of the
    rendered surface a point must be to be carved (world units); alpha_level: rendered alpha
    below which a pixel is background; smooth: Gaussian filter sigma on the field, in voxels."""

    resolution: int = 80
    bound: float | None = None
    elevations: tuple = (0.0, 20.0, 40.0, 60.0)
    azimuths: int = 16
    radius: float = 2.0
    fovy: float = 49.1
    image_size: int = 112
    depth_margin: float = 0.15
    alpha_level: float = 0.5
    smooth: float = 0.7

    def __post_init__(self):
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {self.resolution}")
        if self.bound is not None and (self.bound <= 0 or self.radius <= self.bound * 3**0.5):
            raise ValueError(f"need bound > 0 and radius > bound * sqrt(3) (cameras outside the grid), got "
                             f"bound {self.bound}, radius {self.radius}")
        if not self.elevations or any(not -90 < e < 90 for e in self.elevations):
            raise ValueError(f"elevations must be a non-empty list of angles in (-90, 90), got {self.elevations}")
        if self.azimuths < 3:
            raise ValueError(f"azimuths must be >= 3 views per ring, got {self.azimuths}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if self.depth_margin < 0 or not 0 < self.alpha_level < 1 or self.smooth < 0:
            raise ValueError("depth_margin and smooth must be >= 0 and alpha_level in (0, 1)")

    def fitted(self, gaussians: GaussianSet) -> "CarveSettings":
        """These settings with `bound` set when None: 1.15 times the 99.5th percentile of the largest
        absolute coordinate of the Gaussians with opacity >= 0.05 (a few floaters do not grow the
        grid), at least 0.1; the camera radius grows to stay outside."""
        if self.bound is not None:
            return self
        visible = gaussians.means[gaussians.opacities[:, 0] >= 0.05]
        if not len(visible):
            raise ValueError("no surface: no Gaussian has opacity >= 0.05")
        bound = max(0.1, 1.15 * float(torch.quantile(visible.abs().amax(-1), 0.995)))
        return replace(self, bound=bound, radius=max(self.radius, 2.0 * 3**0.5 * bound))

    def cameras(self) -> torch.Tensor:
        return torch.cat([orbit_cameras(self.azimuths, e, self.radius, start_azimuth=7.5 * i)
                          for i, e in enumerate(self.elevations)])


def carved_occupancy(gaussians: GaussianSet, settings: CarveSettings | None = None, progress: bool = False) -> torch.Tensor:
    """(R, R, R) field in [0, 1] (indexed x, y, z on `grid_points(R, bound)`); see the module doc."""
    gaussians = gaussians.detach().to("cpu", torch.float32)
    s = (settings or CarveSettings()).fitted(gaussians)
    cameras = s.cameras()
    points = grid_points(s.resolution, s.bound).reshape(-1, 3)
    field = torch.ones(points.shape[0])
    k = intrinsics_from_fov(s.fovy, s.image_size, s.image_size)
    for view in tqdm(range(len(cameras)), desc="carve", disable=not progress):
        c2w = cameras[view : view + 1]
        with torch.no_grad():
            out = render(gaussians, c2w, s.fovy, s.image_size, s.image_size, background=(0.0, 0.0, 0.0), backend="torch")
        alpha = out["alpha"][0, 0]
        surface = torch.where(alpha > 1e-3, out["depth"][0, 0] / alpha.clamp_min(1e-3), torch.full_like(alpha, 1e3))
        pix, depth = project_points(points, c2w, k)
        grid = (2 * pix[0] / s.image_size - 1)[None, None]  # (1, 1, P, 2), x then y
        a = F.grid_sample(alpha[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0, 0]
        # nearest surface depth: bilinear blends across depth edges would carve behind silhouettes
        d_surf = F.grid_sample(surface[None, None], grid, mode="nearest", padding_mode="border", align_corners=False)[0, 0, 0]
        in_front = depth[0] < d_surf - s.depth_margin
        value = torch.where(in_front, torch.zeros_like(a), a / s.alpha_level * 0.5).clamp(max=1.0)
        field = torch.minimum(field, value)
    field = field.view(s.resolution, s.resolution, s.resolution)
    if s.smooth > 0:
        from scipy.ndimage import gaussian_filter

        field = torch.from_numpy(gaussian_filter(field.numpy(), s.smooth, mode="constant"))
    return field


def clean_mesh(vertices: np.ndarray, faces: np.ndarray, min_fraction: float = 0.05):
    """A trimesh with unreferenced/duplicate vertices and degenerate faces removed, keeping the
    connected components whose area is at least `min_fraction` of the largest one's."""
    import trimesh

    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    parts = mesh.split(only_watertight=False)
    if len(parts) > 1:
        areas = np.array([p.area for p in parts])
        mesh = trimesh.util.concatenate([p for p, a in zip(parts, areas) if a >= min_fraction * areas.max()])
    return mesh


def gaussians_to_geometry(gaussians: GaussianSet, settings: CarveSettings | None = None, min_fraction: float = 0.05,
                          progress: bool = False):
    """The carved surface of `gaussians` as a cleaned `trimesh.Trimesh` (faces wound outward)."""
    s = (settings or CarveSettings()).fitted(gaussians.detach().to("cpu", torch.float32))
    field = carved_occupancy(gaussians, s, progress)
    try:
        mesh = extract_mesh(field, 0.5, s.bound)
    except ValueError as err:
        raise ValueError(f"no surface: the Gaussians' renders cover no part of the grid ({err})") from None
    return clean_mesh(mesh.vertices, mesh.faces, min_fraction)
