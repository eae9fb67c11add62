"""Multi-view score distillation: 3D Gaussians optimised with SDS from a VideoMV text model."""

from .config import DistillConfig, load_config
from .optimize import DistillResult, distill
from .prior import MultiViewPrior
from .schedules import random_orbit, sample_timestep
from .sds import sds_gradient, sds_loss

__all__ = ["DistillConfig", "DistillResult", "MultiViewPrior", "distill", "load_config", "random_orbit",
           "sample_timestep", "sds_gradient", "sds_loss"]
