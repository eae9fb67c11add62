""".ply I/O in the layout of the original 3D Gaussian Splatting code, which splat viewers read.

Stored values are pre-activation: colour as the SH degree-0 coefficient (rgb - 0.5) / C0, opacity as a
logit, scales as logs; rotations are (w, x, y, z). Normals are written as zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from ..io import atomic_write
from .gaussian_set import GaussianSet

SH_C0 = 0.28209479177387814
PLY_PROPERTIES = (
    ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    + [f"scale_{i}" for i in range(3)]
    + [f"rot_{i}" for i in range(4)]
)
_EPS = 1e-7


def save_ply(gaussians: GaussianSet, path: str | Path, min_opacity: float = 0.0) -> int:
    """Write `gaussians` (dropping those with opacity < min_opacity) atomically. Returns the count written."""
    g = gaussians.detach().to(device="cpu", dtype=torch.float64)
    keep = g.opacities[:, 0] >= min_opacity
    g = g[keep]
    opacity = g.opacities.clamp(_EPS, 1 - _EPS)
    columns = torch.cat(
        [
            g.means,
            torch.zeros_like(g.means),
            (g.colors - 0.5) / SH_C0,
            torch.log(opacity / (1 - opacity)),
            torch.log(g.scales.clamp_min(1e-12)),
            torch.nn.functional.normalize(g.rotations, dim=-1),
        ],
        dim=-1,
    ).numpy().astype(np.float32)
    vertices = np.empty(len(columns), dtype=[(name, "f4") for name in PLY_PROPERTIES])
    for i, name in enumerate(PLY_PROPERTIES):
        vertices[name] = columns[:, i]

    atomic_write(path, lambda tmp: PlyData([PlyElement.describe(vertices, "vertex")]).write(str(tmp)))
    return len(columns)


def load_ply(path: str | Path, dtype: torch.dtype = torch.float32, device="cpu") -> GaussianSet:
    """Read a 3DGS-layout .ply (extra properties such as higher-order SH f_rest_* are ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Gaussian .ply file {path} does not exist")
    ply = PlyData.read(str(path))
    if "vertex" not in ply:
        raise ValueError(f"{path}: no 'vertex' element; not a Gaussian splat .ply")
    vertex = ply["vertex"]
    present = {p.name for p in vertex.properties}
    needed = [p for p in PLY_PROPERTIES if p not in ("nx", "ny", "nz")]
    missing = [p for p in needed if p not in present]
    if missing:
        raise ValueError(
            f"{path}: vertex element lacks Gaussian properties {missing} "
            f"(expected the 3D Gaussian Splatting layout {needed}); has {sorted(present)}"
        )

    def column(*names):
        return torch.from_numpy(np.stack([np.asarray(vertex[n], dtype=np.float64) for n in names], axis=-1))

    gaussians = GaussianSet(
        means=column("x", "y", "z"),
        scales=torch.exp(column("scale_0", "scale_1", "scale_2")),
        rotations=torch.nn.functional.normalize(column("rot_0", "rot_1", "rot_2", "rot_3"), dim=-1),
        opacities=torch.sigmoid(column("opacity")),
        colors=(column("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5).clamp(0.0, 1.0),
    )
    return gaussians.to(dtype=dtype, device=device)
