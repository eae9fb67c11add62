"""The reconstructor's canonical frame and the way back to the project world.

LGM sees its input cameras only relative to the first input view: view 0 is moved to (0, 0, r)
with identity rotation (r = `cam_radius`, 1.5), and the Gaussians it predicts live in that
canonical frame, clamped to [-1, 1]^3. With `rescale`, the world is first scaled by
s = r / |t0| (t0: view 0's position) so that view 0 sits exactly at distance r, whatever the
camera distance of the inputs (e.g. 2.0 for the text model's orbit).

World -> canonical is the similarity  y = s R0^T (x - t0) + r e_z  (R0: view 0's rotation).
Its inverse, canonical -> world, is returned as a 4x4 matrix M = [R0 / s | t0 - R0 r e_z / s];
Gaussians go back with  mean' = M mean,  scale' = scale / s,  quaternion' = q(R0) * quaternion,
opacity and colour unchanged. The canonical cameras do not change when the whole input rig is
moved rigidly (without `rescale`) or rotated and scaled about the world origin (with `rescale`,
which assumes the object sits at the origin), so the reconstruction follows the rig exactly.

Quaternions are (w, x, y, z), real part first, as in 3D Gaussian splatting and LGM.
"""

from __future__ import annotations

import torch

from videomv.geometry import check_c2w, normalize_to_first_view


def canonical_cameras(c2w: torch.Tensor, radius: float, rescale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Input cameras (B, V, 4, 4) in the project world -> (canonical cameras (B, V, 4, 4),
    canonical-to-world similarity (B, 4, 4)), on the input's device."""
    device = c2w.device if torch.is_tensor(c2w) else torch.device("cpu")
    c2w = check_c2w(torch.as_tensor(c2w).detach().float().cpu(), name="c2w")  # cameras are small: work on CPU
    if c2w.ndim != 4:
        raise ValueError(f"c2w: expected cameras of shape (B, V, 4, 4), got {tuple(c2w.shape)}")
    canonical = torch.stack([normalize_to_first_view(cams, radius=radius, rescale=rescale) for cams in c2w])
    first = c2w[:, 0]
    rot0, t0 = first[:, :3, :3], first[:, :3, 3]
    if rescale:
        distance = t0.norm(dim=-1)
        if (distance < 1e-6).any():
            raise ValueError("c2w: view 0 sits at the world origin, so cameras cannot be rescaled to cam_radius")
        scale = radius / distance
    else:
        scale = torch.ones(c2w.shape[0])
    e_z = torch.tensor([0.0, 0.0, radius])
    world_from_canonical = torch.zeros(c2w.shape[0], 4, 4)
    world_from_canonical[:, :3, :3] = rot0 / scale[:, None, None]
    world_from_canonical[:, :3, 3] = t0 - (rot0 @ e_z) / scale[:, None]
    world_from_canonical[:, 3, 3] = 1.0
    return canonical.to(device), world_from_canonical.to(device)


def split_similarity(transform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 4, 4) similarity [s R | t] -> rotation R (..., 3, 3), scale s (...), translation t (..., 3)."""
    linear = transform[..., :3, :3]
    scale = linear.det().abs().pow(1.0 / 3.0)
    return linear / scale[..., None, None], scale, transform[..., :3, 3]


def matrix_to_quaternion(rot: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4), (w, x, y, z) with w >= 0."""
    m = rot
    diag = torch.stack([m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]], -1)
    trace = diag.sum(-1)
    # four candidate solutions, each stable when its leading component is large (Shepperd's method)
    candidates = torch.stack(
        [
            torch.stack([1 + trace, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]], -1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], 1 + 2 * diag[..., 0] - trace, m[..., 0, 1] + m[..., 1, 0], m[..., 0, 2] + m[..., 2, 0]], -1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 0, 1] + m[..., 1, 0], 1 + 2 * diag[..., 1] - trace, m[..., 1, 2] + m[..., 2, 1]], -1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 1, 2] + m[..., 2, 1], 1 + 2 * diag[..., 2] - trace], -1),
        ],
        -2,
    )  # (..., 4 candidates, 4)
    leading = torch.stack([1 + trace, 1 + 2 * diag[..., 0] - trace, 1 + 2 * diag[..., 1] - trace, 1 + 2 * diag[..., 2] - trace], -1)
    best = leading.argmax(-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = torch.nn.functional.normalize(quat, dim=-1)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product a * b of (w, x, y, z) quaternions; the rotation of b followed by that of a."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def transform_gaussians(gaussians: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Apply a similarity (B, 4, 4) to LGM-layout Gaussians (B, N, 14) = pos 3, opacity 1, scale 3,
    rotation 4 (w, x, y, z), rgb 3. The quaternion's norm is preserved."""
    if gaussians.ndim != 3 or gaussians.shape[-1] != 14:
        raise ValueError(f"gaussians: expected shape (B, N, 14), got {tuple(gaussians.shape)}")
    if transform.shape != (gaussians.shape[0], 4, 4):
        raise ValueError(f"transform: expected shape ({gaussians.shape[0]}, 4, 4), got {tuple(transform.shape)}")
    transform = transform.to(gaussians)
    rot, scale, trans = split_similarity(transform)
    pos, opacity, scales, quat, rgb = gaussians.split([3, 1, 3, 4, 3], dim=-1)
    pos = pos @ transform[:, :3, :3].transpose(-1, -2) + trans[:, None]
    scales = scales * scale[:, None, None]
    quat = quaternion_multiply(matrix_to_quaternion(rot)[:, None].expand_as(quat), quat)
    return torch.cat([pos, opacity, scales, quat, rgb], dim=-1)
