"""View subsets used to compare with baselines that generate fewer views (paper Sec. 4.2).

- "all": every view.
- "every3": frames 0, 3, 6, ... (on a 24-view orbit: SyncDreamer's 16-view ring at its even frames).
- "az45": the views whose world azimuth (`orbit_angles`, 0 = camera on +z) is a multiple of 45
  degrees, as Zero123 is evaluated; computed from the cameras, so an orbit starting at another
  azimuth selects other frames.
"""

from __future__ import annotations

import torch

from videomv.geometry import orbit_angles

SUBSETS = ("all", "every3", "az45")


def az45_indices(cameras: torch.Tensor, tolerance_deg: float = 0.5) -> list[int]:
    """Indices of the views within `tolerance_deg` of an azimuth multiple of 45 degrees."""
    _, azimuth, _ = orbit_angles(cameras)
    off = torch.remainder(azimuth.double() + tolerance_deg, 45.0) - tolerance_deg  # signed distance to a multiple
    picked = (off.abs() <= tolerance_deg).nonzero().flatten().tolist()
    if not picked:
        raise ValueError(f"az45 subset: no camera azimuth within {tolerance_deg} deg of a multiple of 45 "
                         f"(azimuths {[round(a, 2) for a in azimuth.tolist()]})")
    return picked


def view_subset(name: str, cameras: torch.Tensor) -> list[int]:
    """Indices of the subset `name` (one of `SUBSETS`) of the views with these (V, 4, 4) cameras."""
    num_views = len(cameras)
    if name == "all":
        return list(range(num_views))
    if name == "every3":
        return list(range(0, num_views, 3))
    if name == "az45":
        return az45_indices(cameras)
    raise ValueError(f"view subset must be one of {SUBSETS}, got {name!r}")
