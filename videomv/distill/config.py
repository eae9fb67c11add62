"""Settings of a distillation run: an OmegaConf structured config (YAML file + `key=value` overrides)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .schedules import TIMESTEP_SCHEDULES
from .sds import WEIGHTINGS


@dataclass
class DistillConfig:
    """steps: optimisation steps; guidance: classifier-free guidance scale of the SDS noise
    prediction; t_range / t_schedule / weighting: see `videomv.distill.schedules` and `.sds`;
    views: views rendered and denoised together per step (a window of a `orbit_views`-view orbit
    at an elevation in `elevation_range`); num_gaussians / init_radius / init_scale: the random
    start; lr: multiplies the per-parameter Adam rates; reference_steps: DDIM steps of the
    model's own 3D-aware sample the proxy PSNR compares against; eval_every: steps between proxy
    evaluations (0: only at the start and the end); seed: everything random."""

    steps: int = 200
    guidance: float = 20.0
    t_range: list = field(default_factory=lambda: [0.02, 0.98])
    t_schedule: str = "anneal"
    weighting: str = "sds"
    views: int = 24
    orbit_views: int = 24
    elevation_range: list = field(default_factory=lambda: [5.0, 30.0])
    radius: float = 2.0
    num_gaussians: int = 2000
    init_radius: float = 0.4
    init_scale: float = 0.04
    lr: float = 1.0
    reference_steps: int = 50
    eval_every: int = 20
    seed: int = 0

    def __post_init__(self):
        def need(ok: bool, message: str):
            if not ok:
                raise ValueError(message)

        need(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        need(math.isfinite(self.guidance) and self.guidance >= 1, f"guidance must be >= 1, got {self.guidance}")
        need(len(self.t_range) == 2 and 0 <= self.t_range[0] < self.t_range[1] <= 1,
             f"t_range must be [low, high] with 0 <= low < high <= 1, got {list(self.t_range)}")
        need(self.t_schedule in TIMESTEP_SCHEDULES, f"t_schedule must be one of {TIMESTEP_SCHEDULES}, got {self.t_schedule!r}")
        need(self.weighting in WEIGHTINGS, f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        need(1 <= self.views <= self.orbit_views, f"views must be in [1, orbit_views={self.orbit_views}], got {self.views}")
        need(len(self.elevation_range) == 2 and -90 < self.elevation_range[0] <= self.elevation_range[1] < 90,
             f"elevation_range must be [low, high] degrees in (-90, 90), got {list(self.elevation_range)}")
        need(self.radius > 0, f"radius must be positive, got {self.radius}")
        need(self.num_gaussians >= 1, f"num_gaussians must be >= 1, got {self.num_gaussians}")
        need(self.init_radius > 0 and self.init_scale > 0, "init_radius and init_scale must be positive")
        need(self.lr > 0, f"lr must be positive, got {self.lr}")
        need(self.reference_steps >= 1, f"reference_steps must be >= 1, got {self.reference_steps}")
        need(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> DistillConfig:
    """Defaults, then the YAML file at `path`, then `key=value` overrides; validated. Unknown keys
    and ill-typed values raise ValueError naming them."""
    schema = OmegaConf.structured(DistillConfig)
    try:
        parts = [schema]
        if path is not None:
            parts.append(OmegaConf.load(path))
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ValueError(f"overrides must be key=value, got {bad}")
            parts.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(*parts)
        return OmegaConf.to_object(merged)
    except (OmegaConfBaseException, yaml.YAMLError) as err:  # omegaconf's name the key and the expected type
        raise ValueError(f"distillation config: {err}") from None
