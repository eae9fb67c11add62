""".ply I/O in the layout of the original 3D Gaussian Splatting code, which splat viewers read.

Stored values are pre-activation: colour as the SH degree-0 coefficient (rgb - 0.5) / C0, opacity as a
logit, scales as logs; rotations are (w, x, y, z). Normals are written as zeros.

A .ply may come from anywhere, so its header is checked against the file's size before anything is
allocated: a header declaring more elements than the file can hold is refused.
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
MAX_HEADER_BYTES = 1 << 16
PLY_TYPE_SIZES = {
    "char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
    "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8,
}


def check_ply_header(path: str | Path) -> dict[str, int]:
    """Read a .ply header and check that the file is large enough for what it declares (at least the
    fixed-size part of every row in a binary file, at least two bytes per value in an ASCII one).
    Returns {element name: count}; raises ValueError naming the file otherwise."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(MAX_HEADER_BYTES)
    if not head.startswith(b"ply"):
        raise ValueError(f"{path}: not a .ply file (it does not start with 'ply')")
    end = head.find(b"end_header")
    newline = head.find(b"\n", end)
    if end < 0 or newline < 0:
        raise ValueError(f"{path}: no end_header within the first {MAX_HEADER_BYTES} bytes; not a valid .ply")
    body_size = path.stat().st_size - (newline + 1)
    fmt, counts, row_bytes, row_values, element = None, {}, {}, {}, None
    for number, raw in enumerate(head[:end].decode("ascii", errors="replace").splitlines(), 1):
        words = raw.split()
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        bad = ValueError(f"{path}: header line {number} {raw.strip()!r} is not valid .ply")
        if words[0] == "format" and len(words) == 3:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3:
            if not words[2].isdigit():
                raise bad
            element = words[1]
            counts[element], row_bytes[element], row_values[element] = int(words[2]), 0, 0
        elif words[0] == "property" and element is not None:
            size = PLY_TYPE_SIZES.get(words[2] if words[1:2] == ["list"] else words[1]) if len(words) >= 3 else None
            if size is None:
                raise bad
            row_bytes[element] += size  # a list counts its length field only: it may be empty
            row_values[element] += 1
        else:
            raise bad
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unknown .ply format {fmt!r}")
    per_row = row_values if fmt == "ascii" else row_bytes
    needed = sum(counts[e] * per_row[e] * (2 if fmt == "ascii" else 1) for e in counts)
    if needed > body_size + 1:
        declared = ", ".join(f"{counts[e]} {e}" for e in counts)
        raise ValueError(f"{path}: the header declares {declared} (at least {needed} bytes) but the file holds "
                         f"{body_size} bytes after it; truncated or damaged")
    return counts


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
    check_ply_header(path)
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
