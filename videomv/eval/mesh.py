"""Triangle meshes for geometry evaluation: marching cubes, surface sampling, normalisation,
voxelisation, Chamfer distance, volume IoU, and mesh files.

Mesh files are read and written with trimesh (.obj .ply .glb .gltf .off .stl, textures ignored
here), after size checks for untrusted files (`check_mesh_file`). Surface sampling is trimesh's.
Voxelisation stays here: trimesh voxelises on its own grid (surface voxels, then filling) and its
point-in-mesh test needs an optional ray backend, while the protocol needs the occupancy of fixed
grid points, which ray parity gives exactly and fast.

Evaluation protocol (as SyncDreamer/Wonder3D evaluate image-to-3D):
- normalisation: each mesh is centred on its axis-aligned bounding box and scaled so that the box's
  longest side is 1 (`normalize_mesh`); `mesh_metrics(normalize="gt")` instead applies the ground
  truth's transform to both, keeping the prediction's scale error.
- Chamfer distance: points sampled area-uniformly on both surfaces; the mean Euclidean
  (not squared) distance to the nearest point of the other set, averaged over the two directions:
  (mean_a min_b |a - b| + mean_b min_a |a - b|) / 2.
- volume IoU: both meshes voxelised on the same grid (occupancy of voxel centres by ray parity along
  x, y and z with a majority vote) and |A and B| / |A or B|.
Meshes hold numpy arrays: vertices (V, 3) float64, faces (F, 3) int64.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videomv.io import atomic_write

from videomv.data.meshes import MESH_SUFFIXES
MAX_MESH_BYTES = int(os.environ.get("VIDEOMV_MAX_MESH_BYTES", 1 << 30))  # 1 GiB
MAX_MESH_ELEMENTS = 100_000_000  # vertices or faces declared by a PLY header

IOU_RESOLUTION = 64
IOU_BOUND = 0.55  # normalised meshes lie in [-0.5, 0.5]^3; a small margin keeps the grid's faces empty


def _np(x, dtype) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


@dataclass
class Mesh:
    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self):
        self.vertices = _np(self.vertices, np.float64)
        self.faces = _np(self.faces, np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"mesh vertices: expected shape (V, 3), got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"mesh faces: expected triangles of shape (F, 3), got {self.faces.shape}")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError(f"mesh faces: indices must lie in [0, {len(self.vertices)}), got [{self.faces.min()}, {self.faces.max()}]")
        if not np.isfinite(self.vertices).all():
            raise ValueError("mesh vertices contain NaN or inf")

    def triangles(self) -> np.ndarray:
        """(F, 3, 3) corner positions."""
        return self.vertices[self.faces]

    def face_areas(self) -> np.ndarray:
        t = self.triangles()
        return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=-1)

    def signed_volume(self) -> float:
        """Enclosed volume (divergence theorem); positive when faces wind counter-clockwise seen from outside."""
        t = self.triangles()
        return float(np.einsum("fi,fi->f", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6.0)

    def transformed(self, center: np.ndarray, scale: float) -> "Mesh":
        return Mesh((self.vertices - center) * scale, self.faces.copy())

    def to_trimesh(self):
        import trimesh

        return trimesh.Trimesh(self.vertices, self.faces, process=False)


# --------------------------------------------------------------------------------------------- #
# Extraction and sampling
# --------------------------------------------------------------------------------------------- #


def extract_mesh(field, level: float, bound: float) -> Mesh:
    """Marching cubes on a (R, R, R) field sampled at `linspace(-bound, bound, R)` per axis (see
    `videomv.eval.fields.grid_points`); inside is where field > level. The field is padded so that
    surfaces touching the grid's border are closed (a field above `level` everywhere gives the grid's
cube). Faces wind outward."""
    from skimage.measure import marching_cubes

    field = _np(field, np.float32)
    if field.ndim != 3 or min(field.shape) < 2 or len(set(field.shape)) != 1:
        raise ValueError(f"field: expected a cubic (R, R, R) grid with R >= 2, got {field.shape}")
    if not field.max() > level:
        raise ValueError(f"field: no value above level {level} (field range [{field.min():.4g}, {field.max():.4g}]), no surface")
    res = field.shape[0]
    padded = np.pad(field, 1, constant_values=min(float(field.min()), level) - 1.0)
    spacing = 2.0 * bound / (res - 1)
    verts, faces, _, _ = marching_cubes(padded, level=level)
    mesh = Mesh(-bound + (verts - 1.0) * spacing, faces)
    if mesh.signed_volume() < 0:
        mesh.faces = mesh.faces[:, ::-1].copy()
    return mesh


def sample_surface(mesh: Mesh, count: int, seed: int = 0) -> np.ndarray:
    """`count` points uniformly distributed over the surface area (trimesh's area-weighted
    sampling), reproducible with `seed`."""
    import trimesh

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not len(mesh.faces) or mesh.face_areas().sum() <= 0:
        raise ValueError("sample_surface: mesh has no area")
    points, _ = trimesh.sample.sample_surface(mesh.to_trimesh(), count, seed=seed)
    return np.asarray(points, dtype=np.float64)


def normalization(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, scale) that centre the bounding box and make its longest side 1."""
    lo, hi = vertices.min(0), vertices.max(0)
    extent = float((hi - lo).max())
    if extent <= 0:
        raise ValueError("normalization: mesh has zero extent")
    return (lo + hi) / 2, 1.0 / extent


def normalize_mesh(mesh: Mesh) -> Mesh:
    center, scale = normalization(mesh.vertices)
    return mesh.transformed(center, scale)


# --------------------------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------------------------- #


def nearest_distances(query: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Euclidean distance from each query point to its nearest reference point."""
    from scipy.spatial import cKDTree

    query, reference = _np(query, np.float64), _np(reference, np.float64)
    for name, pts in (("query", query), ("reference", reference)):
        if pts.ndim != 2 or pts.shape[1] != 3 or not len(pts):
            raise ValueError(f"{name} points: expected a non-empty (N, 3) array, got {pts.shape}")
    return cKDTree(reference).query(query, k=1)[0]


def chamfer_distance(points_a, points_b) -> float:
    """Symmetric Chamfer distance: mean nearest-neighbour L2 distance, averaged over both directions."""
    return float((nearest_distances(points_a, points_b).mean() + nearest_distances(points_b, points_a).mean()) / 2)


def _parity_along(tri: np.ndarray, axis: np.ndarray, k: int, jitter: tuple[float, float]) -> np.ndarray:
    """Inside test of grid points by counting surface crossings of rays parallel to axis k
    (from -inf up to the point). Returns (R, R, R) bool indexed (x, y, z)."""
    res = len(axis)
    u_ax, v_ax = [a for a in range(3) if a != k]
    step = axis[1] - axis[0]
    ju, jv = jitter[0] * step, jitter[1] * step
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    tu, tv = tri[..., u_ax], tri[..., v_ax]
    i0 = np.clip(np.ceil((tu.min(1) - axis[0] - ju) / step), 0, res).astype(np.int64)
    i1 = np.clip(np.floor((tu.max(1) - axis[0] - ju) / step), -1, res - 1).astype(np.int64)
    j0 = np.clip(np.ceil((tv.min(1) - axis[0] - jv) / step), 0, res).astype(np.int64)
    j1 = np.clip(np.floor((tv.max(1) - axis[0] - jv) / step), -1, res - 1).astype(np.int64)
    ni, nj = np.maximum(i1 - i0 + 1, 0), np.maximum(j1 - j0 + 1, 0)
    counts = np.zeros((res, res, res + 1), dtype=np.int32)  # (column u, column v, crossings below index)
    per_face = ni * nj
    cumulative = np.cumsum(per_face)
    start, budget = 0, 4_000_000  # (face, column) candidates per chunk, to bound memory
    while start < len(tri):
        base = cumulative[start - 1] if start else 0
        end = max(start + 1, int(np.searchsorted(cumulative, base + budget, side="right")))
        faces = np.arange(start, min(end, len(tri)))
        start = end
        n = per_face[faces]
        if n.sum() == 0:
            continue
        fid = np.repeat(faces, n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        ci = i0[fid] + local // nj[fid]
        cj = j0[fid] + local % nj[fid]
        pu, pv = axis[ci] + ju, axis[cj] + jv
        # 2D barycentric coordinates of the column in the projected triangle.
        au, av, bu, bv, cu, cv = a[fid, u_ax], a[fid, v_ax], b[fid, u_ax], b[fid, v_ax], c[fid, u_ax], c[fid, v_ax]
        det = (bu - au) * (cv - av) - (cu - au) * (bv - av)
        w1 = ((pu - au) * (cv - av) - (cu - au) * (pv - av)) / np.where(det == 0, 1, det)
        w2 = ((bu - au) * (pv - av) - (pu - au) * (bv - av)) / np.where(det == 0, 1, det)
        w0 = 1 - w1 - w2
        hit = (det != 0) & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        depth = w0 * a[fid, k] + w1 * b[fid, k] + w2 * c[fid, k]
        idx = np.searchsorted(axis, depth[hit], side="left")  # first grid index above the crossing
        np.add.at(counts, (ci[hit], cj[hit], idx), 1)
    inside = (np.cumsum(counts, axis=2)[..., :res] % 2) == 1  # indexed (u, v, k)
    return np.moveaxis(inside, 2, k)


def voxelize(mesh: Mesh, resolution: int = IOU_RESOLUTION, bound: float = IOU_BOUND) -> np.ndarray:
    """(R, R, R) bool occupancy of the grid points `linspace(-bound, bound, R)` per axis (indexed
    x, y, z) inside a closed mesh: ray parity along each axis, majority of the three. Rays are
    offset by a tiny fraction of a voxel so they miss vertices and edges."""
    if resolution < 2 or bound <= 0:
        raise ValueError(f"voxelize: need resolution >= 2 and bound > 0, got {resolution}, {bound}")
    axis = np.linspace(-bound, bound, resolution)
    tri = mesh.triangles()
    jitters = ((1.234e-4, 3.21e-5), (2.71e-5, 1.618e-4), (9.87e-5, 4.56e-5))
    votes = sum(_parity_along(tri, axis, k, jitters[k]).astype(np.int8) for k in range(3))
    return votes >= 2


def volume_iou(occ_a, occ_b) -> float:
    occ_a, occ_b = _np(occ_a, bool), _np(occ_b, bool)
    if occ_a.shape != occ_b.shape:
        raise ValueError(f"occupancy grids differ in shape: {occ_a.shape} vs {occ_b.shape}")
    union = np.logical_or(occ_a, occ_b).sum()
    if union == 0:
        raise ValueError("volume_iou: both occupancy grids are empty")
    return float(np.logical_and(occ_a, occ_b).sum() / union)


def mesh_metrics(
    pred: Mesh,
    gt: Mesh,
    num_points: int = 100_000,
    resolution: int = IOU_RESOLUTION,
    normalize: str = "each",
    seed: int = 0,
) -> dict[str, float]:
    """Chamfer distance and volume IoU of two meshes in a common frame.

    normalize: "each" (each mesh to a unit bounding box, default), "gt" (both with the ground
    truth's transform), or "none" (raw coordinates; the IoU grid then spans the union's box)."""
    if normalize == "each":
        pred, gt = normalize_mesh(pred), normalize_mesh(gt)
        bound = IOU_BOUND
    elif normalize == "gt":
        center, scale = normalization(gt.vertices)
        pred, gt = pred.transformed(center, scale), gt.transformed(center, scale)
        bound = max(IOU_BOUND, 1.05 * float(np.abs(pred.vertices).max()))
    elif normalize == "none":
        bound = 1.05 * float(max(np.abs(pred.vertices).max(), np.abs(gt.vertices).max()))
    else:
        raise ValueError(f"normalize must be 'each', 'gt' or 'none', got {normalize!r}")
    chamfer = chamfer_distance(sample_surface(pred, num_points, seed), sample_surface(gt, num_points, seed + 1))
    iou = volume_iou(voxelize(pred, resolution, bound), voxelize(gt, resolution, bound))
    return {"chamfer": chamfer, "volume_iou": iou}


# --------------------------------------------------------------------------------------------- #
# Files
# --------------------------------------------------------------------------------------------- #


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def check_mesh_file(path: str | Path, max_bytes: int | None = None) -> Path:
    """Refuse a mesh file before parsing it when it is missing, of an unknown type, larger than
    `max_bytes` (default `MAX_MESH_BYTES`, env VIDEOMV_MAX_MESH_BYTES), or a PLY whose header declares
    more elements than the file can hold (so no allocation is sized by an untrusted header)."""
    path = Path(path)
    max_bytes = MAX_MESH_BYTES if max_bytes is None else max_bytes
    if not path.is_file():
        raise ValueError(f"mesh file {path} does not exist")
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"mesh file {path}: unsupported type {path.suffix!r}; expected one of {MESH_SUFFIXES}")
    size = path.stat().st_size
    if size > max_bytes:
        raise ValueError(f"mesh file {path} is {size} bytes, above the limit of {max_bytes} (VIDEOMV_MAX_MESH_BYTES)")
    if path.suffix.lower() == ".ply":
        _check_ply_header(path, size)
    return path


def _check_ply_header(path: Path, size: int) -> None:
    with open(path, "rb") as f:
        head = f.read(65536)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise ValueError(f"mesh file {path}: not a PLY file with a header of at most 64 KiB")
    body = size - (head.index(b"\n", end) + 1 if b"\n" in head[end:] else end + 10)
    lines = head[:end].decode("ascii", "replace").splitlines()
    binary = any(line.startswith("format binary") for line in lines)
    needed, elements = 0, []
    for line in lines:
        words = line.split()
        if words[:1] == ["element"] and len(words) == 3:
            if not re.fullmatch(r"\d{1,20}", words[2]):
                raise ValueError(f"mesh file {path}: bad element count {words[2]!r}")
            elements.append([words[1], int(words[2]), 0])
        elif words[:1] == ["property"] and elements and len(words) >= 3:
            # smallest size of one value: binary, the type's (a list: its count); ascii, "0 "
            elements[-1][2] += (_PLY_SIZES.get(words[2], 1) if binary else 2)
    for name, count, per_item in elements:
        if count > MAX_MESH_ELEMENTS:
            raise ValueError(f"mesh file {path}: header declares {count} {name} elements, above the limit of "
                             f"{MAX_MESH_ELEMENTS}")
        needed += count * max(per_item, 1)
    if needed > body:
        raise ValueError(f"mesh file {path}: header declares elements that need at least {needed} bytes, but the "
                         f"file holds {body} bytes after its header")


def load_mesh(path: str | Path, max_bytes: int | None = None) -> Mesh:
    """Vertices and triangles of a mesh file (all parts of a scene, with their transforms), read
    with trimesh after `check_mesh_file`. Raises ValueError naming the file when it cannot be read."""
    import trimesh

    path = check_mesh_file(path, max_bytes)
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for malformed files
        raise ValueError(f"cannot read mesh file {path}: {type(err).__name__}: {err}") from None
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))))
    if not len(faces):
        raise ValueError(f"mesh file {path} holds no triangles")
    return Mesh(np.asarray(loaded.vertices, dtype=np.float64), faces)


def save_mesh(path: str | Path, mesh: Mesh) -> None:
    """Write a mesh file, its type from the suffix (see `MESH_SUFFIXES`), atomically."""
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise ValueError(f"mesh file {path}: unsupported type {path.suffix!r}; expected one of {MESH_SUFFIXES}")
    data = mesh.to_trimesh().export(file_type=path.suffix.lower()[1:])
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data if isinstance(data, bytes) else data.encode()))


def save_obj(path: str | Path, mesh: Mesh) -> None:
    save_mesh(Path(path), mesh)


def save_ply(path: str | Path, mesh: Mesh) -> None:
    save_mesh(Path(path), mesh)


def load_obj(path: str | Path) -> Mesh:
    return load_mesh(path)


def load_ply(path: str | Path) -> Mesh:
    return load_mesh(path)
