"""What each distillation step draws: its timestep and its cameras."""

from __future__ import annotations

import torch

from videomv.geometry import orbit_camera

TIMESTEP_SCHEDULES = ("random", "anneal")


def sample_timestep(step: int, total: int, t_range: tuple[float, float], schedule: str, num_train_timesteps: int,
                    generator: torch.Generator) -> int:
    """An integer timestep for `step` of `total`. t_range: (low, high) fractions of the training
    timesteps. "random": uniform in the range at every step; "anneal": uniform in [low, high_s], with
    high_s falling linearly from high to low over the run (large noise first, detail later)."""
    low, high = t_range
    if not 0 <= low < high <= 1:
        raise ValueError(f"t_range must satisfy 0 <= low < high <= 1, got {t_range}")
    if schedule == "anneal":
        high = high - (high - low) * step / max(1, total - 1)
        high = max(high, low + 1.0 / num_train_timesteps)
    elif schedule != "random":
        raise ValueError(f"timestep schedule must be one of {TIMESTEP_SCHEDULES}, got {schedule!r}")
    u = float(torch.rand((), generator=generator))
    return min(num_train_timesteps - 1, round((low + (high - low) * u) * (num_train_timesteps - 1)))


def random_orbit(generator: torch.Generator, orbit_views: int = 24, window: int = 24,
                 elevation_range: tuple[float, float] = (5.0, 30.0), radius: float = 2.0) -> torch.Tensor:
    """(window, 4, 4) c2w: `window` consecutive views, from a random start, of an `orbit_views`-view
    orbit (azimuths 0, 360/orbit_views, ...) at a random elevation in `elevation_range` (degrees):
    the camera sets the multi-view model was trained on."""
    if not 1 <= window <= orbit_views:
        raise ValueError(f"window must be in [1, orbit_views={orbit_views}], got {window}")
    lo, hi = elevation_range
    if not -90 < lo <= hi < 90:
        raise ValueError(f"elevation_range must satisfy -90 < low <= high < 90, got {elevation_range}")
    elevation = lo + (hi - lo) * float(torch.rand((), generator=generator))
    start = int(torch.randint(orbit_views, (1,), generator=generator))
    azimuths = ((start + torch.arange(window)) % orbit_views).float() * (360.0 / orbit_views)
    return orbit_camera(torch.full((window,), elevation), azimuths, radius)
