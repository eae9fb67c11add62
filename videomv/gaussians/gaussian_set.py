"""A set of 3D Gaussians with activated parameters (the form every renderer consumes)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

# Channel layout of LGM's per-pixel Gaussian output: [pos 3, opacity 1, scale 3, rotation 4, rgb 3].
LGM_CHANNELS = 14


@dataclass
class GaussianSet:
    """N Gaussians, all tensors on one device with one dtype.

    means (N, 3) world positions; scales (N, 3) standard deviations along the local axes, world units;
    rotations (N, 4) unit quaternions (w, x, y, z); opacities (N, 1) in [0, 1]; colors (N, 3) RGB in [0, 1].
    """

    means: torch.Tensor
    scales: torch.Tensor
    rotations: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor

    def __post_init__(self):
        expected = {"means": 3, "scales": 3, "rotations": 4, "opacities": 1, "colors": 3}
        n = None
        for name, width in expected.items():
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"GaussianSet.{name}: expected a torch.Tensor, got {type(value).__name__}")
            if value.ndim != 2 or value.shape[1] != width:
                raise ValueError(f"GaussianSet.{name}: expected shape (N, {width}), got {tuple(value.shape)}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(f"GaussianSet.{name}: has {value.shape[0]} rows, but means has {n}")
            if value.device != self.means.device or value.dtype != self.means.dtype:
                raise ValueError(
                    f"GaussianSet.{name}: is {value.dtype} on {value.device}, "
                    f"but means is {self.means.dtype} on {self.means.device}"
                )

    # ------------------------------------------------------------------------------------------ #
    # Construction
    # ------------------------------------------------------------------------------------------ #

    @classmethod
    def from_lgm(cls, raw: torch.Tensor) -> "GaussianSet":
        """From LGM's raw (pre-activation) output (N, 14) = [pos 3, opacity 1, scale 3, rot 4, rgb 3],
        applying LGM's activations."""
        if raw.ndim != 2 or raw.shape[-1] != LGM_CHANNELS:
            raise ValueError(f"from_lgm: expected raw Gaussians of shape (N, {LGM_CHANNELS}), got {tuple(raw.shape)}")
        pos, opacity, scale, rot, rgb = raw.split([3, 1, 3, 4, 3], dim=-1)
        return cls(
            means=pos.clamp(-1.0, 1.0),
            scales=0.1 * F.softplus(scale),
            rotations=F.normalize(rot, dim=-1),
            opacities=torch.sigmoid(opacity),
            colors=0.5 * torch.tanh(rgb) + 0.5,
        )

    @classmethod
    def from_lgm_batch(cls, raw: torch.Tensor) -> list["GaussianSet"]:
        """(B, N, 14) raw LGM output -> one GaussianSet per batch element."""
        if raw.ndim != 3:
            raise ValueError(f"from_lgm_batch: expected raw Gaussians of shape (B, N, 14), got {tuple(raw.shape)}")
        return [cls.from_lgm(r) for r in raw]

    def to_lgm_activated(self) -> torch.Tensor:
        """(N, 14) activated parameters in LGM's channel order (what LGM's renderer and ply writer take)."""
        return torch.cat([self.means, self.opacities, self.scales, self.rotations, self.colors], dim=-1)

    @classmethod
    def cat(cls, sets: list["GaussianSet"]) -> "GaussianSet":
        if not sets:
            raise ValueError("GaussianSet.cat: needs at least one set")
        return cls(**{f.name: torch.cat([getattr(s, f.name) for s in sets]) for f in fields(cls)})

    # ------------------------------------------------------------------------------------------ #
    # Convenience
    # ------------------------------------------------------------------------------------------ #

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    def _map(self, fn) -> "GaussianSet":
        return GaussianSet(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, *args, **kwargs) -> "GaussianSet":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "GaussianSet":
        return self._map(lambda t: t.detach())

    def clone(self) -> "GaussianSet":
        return self._map(lambda t: t.clone())

    def __getitem__(self, index) -> "GaussianSet":
        """Select Gaussians by a boolean mask, index tensor or slice."""
        return self._map(lambda t: t[index])

    def rotation_matrices(self) -> torch.Tensor:
        return quaternion_to_matrix(self.rotations)

    def covariances(self) -> torch.Tensor:
        """World-space covariances R S S^T R^T, (N, 3, 3)."""
        rs = self.rotation_matrices() * self.scales[:, None, :]
        return rs @ rs.transpose(-1, -2)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternions (w, x, y, z), normalised here, -> (..., 3, 3) rotation matrices."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)
