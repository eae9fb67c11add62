"""The camera branch of the multi-view UNets.

A camera is the 4x4 OpenGL camera-to-world matrix flattened row-major to 16 numbers (the layout of
`videomv.geometry.camera_vector`). A two-layer MLP maps it to the width of the time embedding; the
result is added to the time embedding of each frame (frame = view). The last layer starts at zero
so a freshly added branch leaves the pretrained video model unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class CameraEmbedding(nn.Module):
    """Linear(camera_dim, D) -> SiLU -> Linear(D, D); the last layer is zero-initialised."""

    def __init__(self, camera_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(camera_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, cameras: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(cameras)))


def camera_vectors(cameras: torch.Tensor, batch_size: int, num_frames: int, camera_dim: int) -> torch.Tensor:
    """Check and reshape cameras given as (B, F, camera_dim) vectors or (B, F, 4, 4) matrices to
    (B, F, camera_dim). Matrices are flattened row-major, as `videomv.geometry.camera_vector`."""
    if not torch.is_tensor(cameras):
        raise TypeError(f"cameras: expected a torch.Tensor, got {type(cameras).__name__}")
    if cameras.ndim == 4 and cameras.shape[-2:] == (4, 4):
        cameras = cameras.flatten(-2)
    if cameras.ndim != 3 or cameras.shape[-1] != camera_dim:
        raise ValueError(
            f"cameras: expected shape (batch, frames, {camera_dim}) or (batch, frames, 4, 4), "
            f"got {tuple(cameras.shape)}"
        )
    if cameras.shape[1] != num_frames:
        raise ValueError(
            f"cameras: got {cameras.shape[1]} cameras per sample but the sample has {num_frames} frames; "
            "give one camera per frame"
        )
    if cameras.shape[0] != batch_size:
        raise ValueError(f"cameras: batch size {cameras.shape[0]} does not match the sample's batch size {batch_size}")
    return cameras
