"""A small z-buffer rasteriser for textured or vertex-coloured triangle meshes (previews and the
turntable video; not differentiable). Shading: the base colour times ambient + diffuse Lambert
light from a fixed direction above the camera's right shoulder."""

from __future__ import annotations

import numpy as np
import torch

from videomv.eval.fields import project_points
from videomv.geometry import check_c2w, intrinsics_from_fov

AMBIENT, DIFFUSE = 0.45, 0.55


def _base_colours(mesh, face_ids: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """(P, 3) base colour in [0, 1] at barycentric points of faces: texture lookup (nearest texel)
    or interpolated vertex colours; grey without either."""
    visual = mesh.visual
    if visual.kind == "texture" and getattr(visual, "uv", None) is not None:
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            tex = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
            uv = (bary[:, :, None] * np.asarray(visual.uv)[mesh.faces[face_ids]]).sum(1)
            h, w = tex.shape[:2]
            col = np.clip((uv[:, 0] * w).astype(np.int64), 0, w - 1)
            row = np.clip(((1 - uv[:, 1]) * h).astype(np.int64), 0, h - 1)
            return tex[row, col]
    if visual.kind == "vertex":
        vc = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255
        return (bary[:, :, None] * vc[mesh.faces[face_ids]]).sum(1)
    return np.full((len(face_ids), 3), 0.7, np.float32)


def render_mesh(mesh, c2w: torch.Tensor, fovy: float, size: int, background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """(V, 3, size, size) renders in [0, 1] of a trimesh from project c2w poses (V, 4, 4)."""
    c2w = check_c2w(torch.as_tensor(c2w, dtype=torch.float32).cpu())
    if c2w.ndim != 3:
        raise ValueError(f"c2w: expected (V, 4, 4), got {tuple(c2w.shape)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    k = intrinsics_from_fov(fovy, size, size)
    vertices = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
    faces = np.asarray(mesh.faces)
    normals = np.asarray(mesh.face_normals, dtype=np.float32)
    out = np.empty((len(c2w), size, size, 3), np.float32)
    for v in range(len(c2w)):
        pix, depth = (t[0].numpy().astype(np.float64) for t in project_points(vertices, c2w[v : v + 1], k))
        tri, tz = pix[faces], depth[faces]  # (F, 3, 2), (F, 3)
        keep = (tz > 1e-3).all(1)
        fidx = np.nonzero(keep)[0]
        tri, tz = tri[keep], tz[keep]
        lo = np.ceil(tri.min(1) - 0.5).astype(np.int64).clip(0, size)
        hi = np.floor(tri.max(1) - 0.5).astype(np.int64).clip(-1, size - 1)
        nx, ny = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0), np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
        n = nx * ny
        f = np.repeat(np.arange(len(fidx)), n)
        local = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
        px = lo[f, 0] + local % np.maximum(nx[f], 1)
        py = lo[f, 1] + local // np.maximum(nx[f], 1)
        a, b, c = tri[f, 0], tri[f, 1], tri[f, 2]
        qx, qy = px + 0.5, py + 0.5
        det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
        safe = np.where(np.abs(det) < 1e-12, 1.0, det)
        w1 = ((qx - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (qy - a[:, 1])) / safe
        w2 = ((b[:, 0] - a[:, 0]) * (qy - a[:, 1]) - (qx - a[:, 0]) * (b[:, 1] - a[:, 1])) / safe
        w0 = 1 - w1 - w2
        hit = (np.abs(det) >= 1e-12) & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        f, px, py, bary = f[hit], px[hit], py[hit], np.stack([w0, w1, w2], -1)[hit]
        # perspective-correct: interpolate 1/z linearly in screen space
        inv_z = (bary / tz[f]).sum(1)
        bary = bary / tz[f] / inv_z[:, None]
        z = 1.0 / inv_z
        flat = py * size + px
        zbuf = np.full(size * size, np.inf)
        np.minimum.at(zbuf, flat, z)
        front = z <= zbuf[flat]
        flat, f, bary = flat[front], f[front], bary[front]
        image = np.empty((size * size, 3), np.float32)
        image[:] = background
        face = fidx[f]
        light = c2w[v, :3, :3].numpy() @ np.array([0.4, 0.6, 0.7])
        light /= np.linalg.norm(light)
        shade = AMBIENT + DIFFUSE * np.clip(normals[face] @ light, 0, None)
        image[flat] = np.clip(_base_colours(mesh, face, bary) * shade[:, None], 0, 1)
        out[v] = image.reshape(size, size, 3)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
