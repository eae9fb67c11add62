"""Which of the generated views feed the reconstructor."""

from __future__ import annotations

import torch

from videomv.geometry import select_views


def select_input_views(
    num_views: int,
    count: int = 4,
    mode: str = "orthogonal",
    first: int = 0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices of the `count` input views out of `num_views` generated ones.

    `orthogonal` (inference): evenly spaced, starting at `first` (0, 6, 12, 18 of a 24-view orbit,
    i.e. azimuths 0/90/180/270). `random` (training, as LGM and the paper): `count` distinct views in
    random order; the first one picked defines the reconstructor's canonical frame.
    """
    if count < 1 or count > num_views:
        raise ValueError(f"count must be in [1, num_views={num_views}], got {count}")
    if mode == "orthogonal":
        return select_views(num_views, count, first=first)
    if mode == "random":
        return torch.randperm(num_views, generator=generator)[:count].tolist()
    raise ValueError(f"mode must be 'orthogonal' or 'random', got {mode!r}")
