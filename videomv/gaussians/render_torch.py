"""Pure-PyTorch differentiable EWA splatting (CPU or GPU), following 3D Gaussian Splatting's math.

Pipeline: project every Gaussian into each view (OpenCV view space, pixel centres at integer + 0.5),
build its 2D covariance J W Sigma W^T J^T + 0.3 I, cull it behind the near plane, outside the image or
when it can never reach alpha 1/255; sort by depth; list, per tile (8x8 pixels by default), the
Gaussians whose bounding box touches the tile; composite front to back with alpha = min(0.99, o * g),
skipping alpha < 1/255 and stopping once transmittance would fall below 1e-4, exactly as 3DGS does.
Depth is composited like colour: sum of weight * view-space z.

The bounding box of a Gaussian spans the pixels where o * g can reach 1/255, so the tiled result
equals the dense reference `render_dense` (every Gaussian on every pixel) up to rounding.
All tile lists are walked together in blocks of Gaussians (padded to the block size); after each
block, tiles whose pixels have all terminated, or whose list is exhausted, drop out. Within a
block the Gaussian exponent is one matrix product (a quadratic form in tile-centred pixel
coordinates), and transmittance is a cumulative sum of log(1 - alpha). Everything is plain
autograd, so gradients reach means, scales, rotations, opacities and colours.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .gaussian_set import GaussianSet

TILE = 8  # tile side in pixels; 8 wastes fewer pixel-Gaussian pairs than 16 on CPU
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
T_MIN = 1e-4
LOG_T_MIN = math.log(T_MIN)
EPS2D = 0.3  # low-pass dilation of the 2D covariance, as in 3DGS


@dataclass
class Projected:
    """Per-view, per-Gaussian screen-space quantities, shapes (V, N, ...)."""

    means2d: torch.Tensor  # (V, N, 2) pixel coordinates (x right, y down)
    conics: torch.Tensor  # (V, N, 3) inverse 2D covariance (a, b, c): [[a, b], [b, c]]
    cov2d: torch.Tensor  # (V, N, 3) 2D covariance (xx, xy, yy) incl. dilation
    depths: torch.Tensor  # (V, N) view-space depth (positive in front of the camera)
    valid: torch.Tensor  # (V, N) bool: in front of the near plane, can be visible in the image
    extents: torch.Tensor  # (V, N, 2) half widths of the screen-space bounding box, pixels


def opencv_world_to_camera(c2w: torch.Tensor) -> torch.Tensor:
    """Project (OpenGL) c2w (V, 4, 4) -> OpenCV world-to-camera (V, 4, 4)."""
    c2w_cv = c2w.clone()
    c2w_cv[..., :3, 1:3] = -c2w_cv[..., :3, 1:3]
    rot = c2w_cv[..., :3, :3].transpose(-1, -2)
    w2c = torch.zeros_like(c2w_cv)
    w2c[..., :3, :3] = rot
    w2c[..., :3, 3] = -(rot @ c2w_cv[..., :3, 3:4]).squeeze(-1)
    w2c[..., 3, 3] = 1.0
    return w2c


def focal_lengths(fovy_deg: float, height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) for square pixels and the principal point at the image centre."""
    fy = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
    return fy, fy, width / 2, height / 2


def project(
    gaussians: GaussianSet,
    c2w: torch.Tensor,
    fovy_deg: float,
    height: int,
    width: int,
    near_plane: float = 0.01,
) -> Projected:
    fx, fy, cx, cy = focal_lengths(fovy_deg, height, width)
    w2c = opencv_world_to_camera(c2w.to(gaussians.means))
    rot, trans = w2c[:, :3, :3], w2c[:, :3, 3]
    means_c = torch.einsum("vij,nj->vni", rot, gaussians.means) + trans[:, None, :]
    x, y, z = means_c.unbind(-1)
    # Columns of R_w2c R_q S: the Gaussian's axes in camera space; Sigma_c = A A^T.
    axes = gaussians.rotation_matrices() * gaussians.scales[:, None, :]  # (N, 3, 3)
    a_cam = torch.einsum("vij,njk->vnik", rot, axes)  # (V, N, 3, 3)

    # Jacobian of the perspective projection, evaluated at a position clamped to 1.3x the field
    # of view (as 3DGS does) so that Gaussians far outside the image stay well conditioned.
    z_safe = torch.where(z > near_plane, z, torch.full_like(z, near_plane))
    lim_x = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_y = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_xn = cx / fx + 0.3 * (0.5 * width / fx)
    lim_yn = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z_safe * (x / z_safe).clamp(-lim_xn, lim_x)
    ty = z_safe * (y / z_safe).clamp(-lim_yn, lim_y)
    # J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]];  rows of J A:
    ja_x = (fx / z_safe)[..., None] * (a_cam[..., 0, :] - (tx / z_safe)[..., None] * a_cam[..., 2, :])
    ja_y = (fy / z_safe)[..., None] * (a_cam[..., 1, :] - (ty / z_safe)[..., None] * a_cam[..., 2, :])
    cxx = (ja_x * ja_x).sum(-1) + EPS2D
    cxy = (ja_x * ja_y).sum(-1)
    cyy = (ja_y * ja_y).sum(-1) + EPS2D
    det = (cxx * cyy - cxy * cxy).clamp_min(1e-12)
    conics = torch.stack([cyy / det, -cxy / det, cxx / det], dim=-1)
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)

    with torch.no_grad():
        # Pixels where o * exp(-d^2/2) >= 1/255 lie within d <= sqrt(2 ln(255 o)) Mahalanobis units;
        # the ellipse's axis-aligned half widths are that times sqrt(cov_xx), sqrt(cov_yy). One
        # pixel of margin keeps the tiled and dense renderers identical under rounding.
        opacity = gaussians.opacities[:, 0].detach()
        reach = torch.sqrt(2.0 * torch.log((255.0 * opacity).clamp_min(1.0)))
        extents = torch.stack([cxx.sqrt(), cyy.sqrt()], dim=-1).detach() * reach[None, :, None] + 1.0
        m2d = means2d.detach()
        valid = (
            (z > near_plane)
            & (opacity >= ALPHA_MIN)[None]
            & (m2d[..., 0] + extents[..., 0] > 0)
            & (m2d[..., 0] - extents[..., 0] < width)
            & (m2d[..., 1] + extents[..., 1] > 0)
            & (m2d[..., 1] - extents[..., 1] < height)
        )
    return Projected(means2d, conics, torch.stack([cxx, cxy, cyy], -1), z, valid, extents)


def _power_direct(pix, means2d, conics):
    """Gaussian exponent -0.5 d^T Sigma^-1 d for every pixel and Gaussian: (B, P, K).
    pix (B, P, 2); means2d (B, K, 2); conics (B, K, 3)."""
    dx = pix[:, :, None, 0] - means2d[:, None, :, 0]
    dy = pix[:, :, None, 1] - means2d[:, None, :, 1]
    a, b, c = conics[:, None, :, 0], conics[:, None, :, 1], conics[:, None, :, 2]
    return -0.5 * (a * dx * dx + c * dy * dy) - b * dx * dy


def _power_quadratic(monomials, means2d, conics):
    """The same exponent as one matrix product: a quadratic form in the pixel coordinates.

    monomials (P, 6) = (x^2, x y, y^2, x, y, 1) of pixel coordinates relative to a tile centre;
    means2d (B, K, 2) relative to the same centre (keeps the expansion well conditioned).
    """
    a, b, c = conics.unbind(-1)
    mx, my = means2d.unbind(-1)
    coef = torch.stack(
        [-0.5 * a, -b, -0.5 * c, a * mx + b * my, c * my + b * mx, -0.5 * (a * mx * mx + c * my * my) - b * mx * my],
        dim=1,
    )  # (B, 6, K)
    return monomials @ coef


def _monomials(pix):
    x, y = pix.unbind(-1)
    return torch.stack([x * x, x * y, y * y, x, y, torch.ones_like(x)], dim=-1)


def _composite(power, opacities, features, log_t0, done0):
    """Front-to-back compositing of K depth-sorted Gaussians over P pixels, batched over B.

    power (B, P, K) Gaussian exponents; opacities (B, K); features (B, K, C);
    log_t0 (B, P) log transmittance before these Gaussians; done0 (B, P) bool, pixel terminated.
    Returns accumulated features (B, P, C), log transmittance after them (B, P), and done (B, P).
    """
    # 3DGS skips power > 0, which only rounding can produce; clamping is the same up to rounding.
    alpha = (opacities[:, None, :] * torch.exp(power.clamp(max=0.0))).clamp(max=ALPHA_MAX)
    alpha = alpha.masked_fill(alpha.detach() < ALPHA_MIN, 0.0)
    log_1m = torch.log1p(-alpha)
    log_t_incl = log_t0[..., None] + torch.cumsum(log_1m, dim=-1)
    # 3DGS stops before the Gaussian that would bring transmittance below T_MIN; T is monotone,
    # so the kept Gaussians form a prefix, and a pixel that stopped stays stopped.
    below = log_t_incl.detach() < LOG_T_MIN
    dropped = below | done0[..., None]
    weights = (alpha * torch.exp(log_t_incl - log_1m)).masked_fill(dropped, 0.0)
    accum = weights @ features
    log_t = log_t0 + log_1m.masked_fill(dropped, 0.0).sum(-1)
    return accum, log_t, done0 | below[..., -1]


def _features(gaussians: GaussianSet, proj: Projected) -> torch.Tensor:
    """(V, N, 4): colour and depth, composited together."""
    v = proj.depths.shape[0]
    return torch.cat([gaussians.colors.expand(v, -1, -1), proj.depths[..., None]], dim=-1)


def _finish(accum, log_t, background, v, height, width):
    """accum (V, H, W, 4), log_t (V, H, W) -> output dict of (V, C, H, W) tensors."""
    transmittance = torch.exp(log_t)[:, None]
    rgb = accum[..., :3].permute(0, 3, 1, 2) + transmittance * background.view(1, 3, 1, 1)
    return {"rgb": rgb, "alpha": 1.0 - transmittance, "depth": accum[..., 3:].permute(0, 3, 1, 2)}


def _pixel_centres(height, width, like):
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=like.dtype, device=like.device),
        torch.arange(width, dtype=like.dtype, device=like.device),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1) + 0.5  # (H, W, 2)


# ---------------------------------------------------------------------------------------------- #
# Dense reference
# ---------------------------------------------------------------------------------------------- #


def render_dense(
    gaussians: GaussianSet,
    c2w: torch.Tensor,
    fovy_deg: float,
    height: int,
    width: int,
    background: torch.Tensor,
    near_plane: float = 0.01,
    pixel_chunk: int = 1024,
) -> dict:
    """Every valid Gaussian on every pixel, no tiles: the reference for the tiled renderer."""
    proj = project(gaussians, c2w, fovy_deg, height, width, near_plane)
    feats = _features(gaussians, proj)
    pix = _pixel_centres(height, width, gaussians.means).reshape(1, -1, 2)
    accums, log_ts = [], []
    for v in range(c2w.shape[0]):
        idx = torch.nonzero(proj.valid[v]).squeeze(1)
        idx = idx[torch.argsort(proj.depths[v, idx].detach(), stable=True)]
        acc_v, log_t_v = [], []
        for start in range(0, pix.shape[1], pixel_chunk):
            p = pix[:, start : start + pixel_chunk]
            zero = torch.zeros(p.shape[:2], dtype=p.dtype, device=p.device)
            power = _power_direct(p, proj.means2d[v, idx][None], proj.conics[v, idx][None])
            acc, log_t, _ = _composite(power, gaussians.opacities[idx, 0][None], feats[v, idx][None], zero, zero.bool())
            acc_v.append(acc[0])
            log_t_v.append(log_t[0])
        accums.append(torch.cat(acc_v))
        log_ts.append(torch.cat(log_t_v))
    v = c2w.shape[0]
    accum = torch.stack(accums).reshape(v, height, width, 4)
    log_t = torch.stack(log_ts).reshape(v, height, width)
    return _finish(accum, log_t, background, v, height, width)


# ---------------------------------------------------------------------------------------------- #
# Tiled renderer
# ---------------------------------------------------------------------------------------------- #


def _tile_lists(proj: Projected, tiles_y: int, tiles_x: int, tile: int = TILE):
    """Depth-ordered lists of (view * N + gaussian) ids per global tile (view * tiles + tile).

    Returns (ids, starts, counts): the lists concatenated, and each tile's offset and length.
    """
    v, n = proj.depths.shape
    order = torch.argsort(proj.depths.detach(), dim=1, stable=True)  # (V, N) front to back
    valid = torch.gather(proj.valid, 1, order)
    flat = (order + torch.arange(v, device=order.device)[:, None] * n)[valid]  # view-major, depth order
    m2d = proj.means2d.detach().reshape(-1, 2)[flat]
    ext = proj.extents.reshape(-1, 2)[flat]
    lo = torch.floor((m2d - ext) / tile).long()
    hi = torch.floor((m2d + ext) / tile).long()
    x0, x1 = lo[:, 0].clamp(0, tiles_x - 1), hi[:, 0].clamp(0, tiles_x - 1)
    y0, y1 = lo[:, 1].clamp(0, tiles_y - 1), hi[:, 1].clamp(0, tiles_y - 1)
    wx = x1 - x0 + 1
    per = wx * (y1 - y0 + 1)
    owner = torch.repeat_interleave(torch.arange(len(flat), device=flat.device), per)
    local = torch.arange(len(owner), device=flat.device) - torch.repeat_interleave(torch.cumsum(per, 0) - per, per)
    view = flat[owner] // n
    tile_id = view * (tiles_y * tiles_x) + (y0[owner] + local // wx[owner]) * tiles_x + x0[owner] + local % wx[owner]
    tile_sorted, perm = torch.sort(tile_id, stable=True)  # stable: depth order survives within a tile
    ids = flat[owner[perm]]
    counts = torch.bincount(tile_sorted, minlength=v * tiles_y * tiles_x)
    starts = torch.cumsum(counts, 0) - counts
    return ids, starts, counts


def render_tiled(
    gaussians: GaussianSet,
    c2w: torch.Tensor,
    fovy_deg: float,
    height: int,
    width: int,
    background: torch.Tensor,
    near_plane: float = 0.01,
    tile: int = TILE,
    block: int = 64,
    max_elements: int = 1 << 20,
) -> dict:
    """Tiled renderer (see module docstring). Lists are walked `block` Gaussians at a time;
    `max_elements` bounds pixels x Gaussians per step."""
    v, n = c2w.shape[0], len(gaussians)
    tiles_y, tiles_x = -(-height // tile), -(-width // tile)
    num_tiles = v * tiles_y * tiles_x
    proj = project(gaussians, c2w, fovy_deg, height, width, near_plane)
    ids, starts, counts = _tile_lists(proj, tiles_y, tiles_x, tile)

    means2d = proj.means2d.reshape(v * n, 2)
    conics = proj.conics.reshape(v * n, 3)
    opacities = gaussians.opacities[:, 0].repeat(v)
    feats = _features(gaussians, proj).reshape(v * n, 4)

    # Pixel centres relative to their tile's centre, (P, 2), their monomials, and each tile's centre.
    ly, lx = torch.meshgrid(torch.arange(tile), torch.arange(tile), indexing="ij")
    local_pix = torch.stack([lx, ly], -1).reshape(-1, 2).to(means2d) + 0.5 - tile / 2
    monomials = _monomials(local_pix)
    tile_index = torch.arange(num_tiles, device=ids.device) % (tiles_y * tiles_x)
    centre = torch.stack([tile_index % tiles_x, tile_index // tiles_x], -1).to(means2d) * tile + tile / 2

    npix = tile * tile
    busy = torch.nonzero(counts).squeeze(1)
    nbusy = len(busy)
    centre = centre[busy]
    tile_start, tile_count = starts[busy], counts[busy]
    kmax = int(tile_count.max()) if nbusy else 0
    acc = torch.zeros(nbusy, npix, 4, dtype=means2d.dtype, device=means2d.device)
    log_t = torch.zeros(nbusy, npix, dtype=means2d.dtype, device=means2d.device)
    done = torch.zeros(nbusy, npix, dtype=torch.bool, device=means2d.device)
    zero = torch.zeros((), dtype=opacities.dtype, device=opacities.device)
    chunk = max(1, max_elements // (npix * block))
    # Walk all lists together, `block` Gaussians at a time, on the tiles that still have Gaussians
    # left and a pixel not yet terminated.
    for k0 in range(0, kmax, block):
        active = torch.nonzero((tile_count > k0) & ~done.all(1)).squeeze(1)
        if len(active) == 0:
            break
        slot = k0 + torch.arange(block, device=ids.device)
        for rows in active.split(chunk):
            present = slot[None, :] < tile_count[rows, None]
            gid = ids[torch.where(present, tile_start[rows, None] + slot[None, :], torch.zeros_like(slot))]
            op = torch.where(present, opacities[gid], zero)
            power = _power_quadratic(monomials, means2d[gid] - centre[rows, None, :], conics[gid])
            a, lt, dn = _composite(power, op, feats[gid], log_t[rows], done[rows])
            acc = acc.index_add(0, rows, a)
            log_t = log_t.index_copy(0, rows, lt)
            done = done.index_copy(0, rows, dn)

    acc_all = torch.zeros(num_tiles, npix, 4, dtype=means2d.dtype, device=means2d.device)
    log_t_all = torch.zeros(num_tiles, npix, dtype=means2d.dtype, device=means2d.device)
    if nbusy:
        acc_all = acc_all.index_copy(0, busy, acc)
        log_t_all = log_t_all.index_copy(0, busy, log_t)

    def untile(x, c):
        x = x.reshape(v, tiles_y, tiles_x, tile, tile, c).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(v, tiles_y * tile, tiles_x * tile, c)[:, :height, :width]

    return _finish(untile(acc_all, 4), untile(log_t_all, 1)[..., 0], background, v, height, width)
