"""The release's camera vector and how it relates to ours.

The release conditions its UNets on the 4x4 camera-to-world matrix flattened row-major, with
OpenGL camera axes (x right, y up, z back) in the G-Objaverse/Blender world (z up): it reads a view's
json and stacks `x, -y, -z, origin` as columns. Our camera vector is the same matrix in our world
(y up). The two differ by a fixed change of world basis,

    c2w_release = BLENDER_TO_WORLD^T @ c2w_ours,

which acts on the 16-vector as the signed permutation `kron(BLENDER_TO_WORLD^T, I4)`. Folding that
permutation into the first camera linear makes a converted model take our cameras unchanged.
"""

from __future__ import annotations

import torch

from ..geometry.cameras import BLENDER_TO_WORLD, check_c2w

WORLD_TO_RELEASE = BLENDER_TO_WORLD.T.contiguous()


def release_c2w(c2w: torch.Tensor) -> torch.Tensor:
    """Our c2w (..., 4, 4) -> the release's c2w (same camera, Blender z-up world)."""
    return WORLD_TO_RELEASE.to(c2w) @ check_c2w(c2w, "c2w")


def release_camera_vectors(c2w: torch.Tensor) -> torch.Tensor:
    """Our c2w (..., 4, 4) -> the release's camera vectors (..., 16)."""
    return release_c2w(c2w).flatten(-2)


def camera_vector_permutation() -> torch.Tensor:
    """(16, 16) matrix P with release_vector = P @ our_vector; a signed permutation."""
    return torch.kron(WORLD_TO_RELEASE, torch.eye(4))


def fold_camera_frame(weight: torch.Tensor) -> torch.Tensor:
    """First camera linear's weight [D, 16] on release vectors -> the weight on our vectors
    (`weight @ P`), done as a column gather with signs so no rounding enters."""
    if weight.ndim != 2 or weight.shape[1] != 16:
        raise ValueError(f"camera_embedding.0.weight: expected shape [width, 16], got {tuple(weight.shape)}")
    perm = camera_vector_permutation()
    source = perm.abs().argmax(dim=0)  # for each of our columns, the release column it reads
    sign = perm[source, torch.arange(16)]
    if not torch.equal(perm.abs().sum(dim=0), torch.ones(16)):
        raise AssertionError("the camera change of basis is not a signed permutation")
    return weight[:, source.to(weight.device)] * sign.to(device=weight.device, dtype=weight.dtype)
