"""Colours for a mesh from posed views: visibility-aware projection, per vertex or baked into a UV
texture (atlas from xatlas).

A surface point takes the average of its bilinearly sampled colour in the views that see it,
weighted by cos(angle between its normal and the direction to the camera)^2. A view sees a point
when the point faces the camera and its depth is within `tolerance` of the view's depth buffer; the
depth buffer is the nearest depth per pixel of dense points sampled on the mesh (a point z-buffer;
the sampling density is chosen so every pixel the mesh covers gets several points). Points no view
sees take the colour of the nearest point that one does.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from videomv.eval.fields import project_points
from videomv.geometry import check_c2w, intrinsics_from_fov


def check_views(images: torch.Tensor, cameras: torch.Tensor):
    images = torch.as_tensor(images, dtype=torch.float32).cpu()
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected (V, 3, H, W) in [0, 1], got {tuple(images.shape)}")
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"images: expected square views, got {images.shape[-2]}x{images.shape[-1]}")
    cameras = check_c2w(torch.as_tensor(cameras, dtype=torch.float32).cpu(), "cameras")
    if cameras.shape != (images.shape[0], 4, 4):
        raise ValueError(f"cameras: expected ({images.shape[0]}, 4, 4) to match the images, got {tuple(cameras.shape)}")
    return images, cameras


def depth_buffers(mesh, cameras: torch.Tensor, fovy: float, size: int, samples_per_pixel: float = 4.0, seed: int = 0):
    """(V, size, size) nearest depth per pixel of points sampled on the mesh (inf where none)."""
    import trimesh

    k = intrinsics_from_fov(fovy, size, size)
    # pixel footprint at the nearest distance, from the camera's distance to the mesh's centre
    distance = max(1e-3, float(cameras[:, :3, 3].norm(dim=-1).min()) - float(np.linalg.norm(mesh.extents)) / 2)
    pixel = distance / float(k[1, 1])
    count = int(min(2_000_000, max(10_000, samples_per_pixel * mesh.area / pixel**2)))
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    points = torch.from_numpy(np.concatenate([points, mesh.vertices])).float()
    pix, depth = project_points(points, cameras, k)
    buffers = torch.full((len(cameras), size * size), float("inf"))
    ij = pix.floor().long()
    ok = (ij >= 0).all(-1) & (ij < size).all(-1) & (depth > 0)
    for v in range(len(cameras)):
        flat = ij[v, ok[v], 1] * size + ij[v, ok[v], 0]
        buffers[v].scatter_reduce_(0, flat, depth[v, ok[v]], reduce="amin")
    return buffers.view(-1, size, size)


def project_colors(points: np.ndarray, normals: np.ndarray, images: torch.Tensor, cameras: torch.Tensor, fovy: float,
                   buffers: torch.Tensor, tolerance: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    """(P, 3) colours in [0, 1] of surface points with unit normals, and a (P,) bool mask of points
    some view sees (the others are 0)."""
    h, w = images.shape[-2:]
    pts = torch.tensor(np.asarray(points), dtype=torch.float32)
    nrm = F.normalize(torch.tensor(np.asarray(normals), dtype=torch.float32), dim=-1)
    k = intrinsics_from_fov(fovy, h, w)
    pix, depth = project_points(pts, cameras, k)  # (V, P, 2), (V, P)
    grid = torch.stack([2 * pix[..., 0] / w - 1, 2 * pix[..., 1] / h - 1], -1)[:, None]  # (V, 1, P, 2)
    colors = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0]  # (V, 3, P)
    # sampled in normalised coordinates, so the depth buffers may have another size than the images
    zbuf = F.grid_sample(buffers.clamp(max=1e6)[:, None], grid, mode="nearest", padding_mode="border",
                         align_corners=False)[:, 0, 0]  # (V, P)
    to_cam = F.normalize(cameras[:, None, :3, 3] - pts[None], dim=-1)  # (V, P, 3)
    cos = (to_cam * nrm[None]).sum(-1)
    inside = (grid[:, 0].abs() <= 1).all(-1) & (depth > 0)
    visible = inside & (cos > 0.05) & (depth <= zbuf + tolerance)
    weight = torch.where(visible, cos.clamp_min(0) ** 2, torch.zeros_like(cos))  # (V, P)
    total = weight.sum(0)
    rgb = (colors * weight[:, None]).sum(0) / total.clamp_min(1e-8)
    seen = total > 0
    return rgb.T.clamp(0, 1).numpy() * seen.numpy()[:, None], seen.numpy()


def fill_unseen(points: np.ndarray, colors: np.ndarray, seen: np.ndarray, default=(0.5, 0.5, 0.5)) -> np.ndarray:
    """Unseen points take the colour of the nearest seen point (`default` when none is seen)."""
    from scipy.spatial import cKDTree

    colors = colors.copy()
    if not seen.any():
        colors[:] = default
    elif not seen.all():
        _, nearest = cKDTree(points[seen]).query(points[~seen])
        colors[~seen] = colors[seen][nearest]
    return colors


def vertex_colors(mesh, images, cameras, fovy: float, tolerance: float = 0.03) -> np.ndarray:
    """(V, 3) vertex colours in [0, 1] of a trimesh from posed views."""
    images, cameras = check_views(images, cameras)
    buffers = depth_buffers(mesh, cameras, fovy, images.shape[-1])
    rgb, seen = project_colors(mesh.vertices, mesh.vertex_normals, images, cameras, fovy, buffers, tolerance)
    return fill_unseen(np.asarray(mesh.vertices), rgb, seen)


def rasterize_uv(uvs: np.ndarray, faces: np.ndarray, size: int):
    """Texel centres covered by the UV triangles: (face id (T,), barycentric (T, 3), texel row (T,),
    texel column (T,)). UV (0, 0) is the image's bottom-left corner, as glTF/OBJ read it."""
    tri = uvs[faces] * size  # (F, 3, 2) in texel units, v up
    lo = np.floor(tri.min(1) - 0.5).astype(np.int64).clip(0, size - 1)
    hi = np.ceil(tri.max(1) - 0.5).astype(np.int64).clip(0, size - 1)
    nu, nv = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    n = nu * nv
    fid = np.repeat(np.arange(len(faces)), n)
    local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    cu = lo[fid, 0] + local % nu[fid]
    cv = lo[fid, 1] + local // nu[fid]
    p = np.stack([cu + 0.5, cv + 0.5], -1)
    a, b, c = tri[fid, 0], tri[fid, 1], tri[fid, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    safe = np.where(np.abs(det) < 1e-12, 1.0, det)
    w1 = ((p[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1])) / safe
    w2 = ((b[:, 0] - a[:, 0]) * (p[:, 1] - a[:, 1]) - (p[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])) / safe
    w0 = 1 - w1 - w2
    eps = -1e-6
    hit = (np.abs(det) >= 1e-12) & (w0 >= eps) & (w1 >= eps) & (w2 >= eps)
    bary = np.stack([w0, w1, w2], -1)[hit]
    row = size - 1 - cv[hit]  # image rows grow downwards
    return fid[hit], bary, row, cu[hit]


def bake_texture(mesh, images, cameras, fovy: float, texture_size: int = 512, tolerance: float = 0.03, padding: int = 4):
    """UV-parametrise `mesh` with xatlas and bake the views into a texture.

    Returns (vertices (V', 3), faces (F, 3), uvs (V', 2), texture (S, S, 3) uint8); vertices are the
    input's, split along the atlas seams. Texels outside every chart take the nearest chart texel's
    colour (`padding` texels around the charts; the rest stays the mean colour), so bilinear lookups
    at chart borders stay clean."""
    import xatlas
    from scipy.ndimage import distance_transform_edt

    images, cameras = check_views(images, cameras)
    if texture_size < 16:
        raise ValueError(f"texture_size must be >= 16, got {texture_size}")
    vmapping, faces, uvs = xatlas.parametrize(np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.uint32))
    vertices = np.asarray(mesh.vertices)[vmapping]
    faces = faces.astype(np.int64)
    fid, bary, row, col = rasterize_uv(uvs, faces, texture_size)
    tri = vertices[faces[fid]]  # (T, 3, 3)
    points = (bary[:, :, None] * tri).sum(1)
    normals = np.asarray(mesh.face_normals)[fid]  # xatlas keeps the face order
    buffers = depth_buffers(mesh, cameras, fovy, images.shape[-1])
    rgb, seen = project_colors(points, normals, images, cameras, fovy, buffers, tolerance)
    rgb = fill_unseen(points, rgb, seen)
    texture = np.zeros((texture_size, texture_size, 3), np.float32)
    filled = np.zeros((texture_size, texture_size), bool)
    texture[row, col], filled[row, col] = rgb, True
    if filled.any():
        distance, (ri, ci) = distance_transform_edt(~filled, return_indices=True)
        near = distance <= padding
        texture[near] = texture[ri[near], ci[near]]
        texture[~near] = rgb.mean(0)
    return vertices, faces, uvs, (texture * 255).round().astype(np.uint8)
