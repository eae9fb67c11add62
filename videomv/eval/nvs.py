"""Novel-view consistency of a generated view set (the paper's Table 1 protocol).

There is no ground truth for a text prompt, so consistency is measured by reconstruction: a 3D
Gaussian model is fitted to half of the views (0, 2, 4, ...) and rendered at the other half
(1, 3, 5, ...); PSNR / SSIM / LPIPS between those renders and the held-out generated views are
high only when the views agree with one 3D object. Alongside: the CLIP score of the prompt against
all views, and flow-warping RMSE between views i and i + f (f = 1 and 6, wrapping around the orbit).

The paper fits a neural field; here it is the project's Gaussian fitter (`fit_gaussians`), on views
resized to `FitSettings.resolution`. CLIP and flow use the views at their own resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from videomv.gaussians import GaussianSet, fit_gaussians, render

from .metrics import psnr, ssim
from .suite import MetricSuite
from .view_sets import ViewSet

TABLE1_COLUMNS = ["item", "prompt", "psnr", "ssim", "lpips", "clip", "flow_rmse_f1", "flow_rmse_f6", "flow_method"]
FLOW_INTERVALS = (1, 6)


@dataclass
class FitSettings:
    """Gaussian fitting for the protocol. Defaults are sized for 64x64 toy views on a CPU; raise
    `resolution`, `num_gaussians` and `iters` for real data."""

    resolution: int = 64
    num_gaussians: int = 2000
    iters: int = 300
    views_per_step: int = 4
    lr: float = 1.0
    init_radius: float = 0.6
    init_scale: float = 0.03
    loss: str = "l1"
    seed: int = 0

    def __post_init__(self):
        if self.resolution < 11:
            raise ValueError(f"fit resolution must be >= 11 (the SSIM window), got {self.resolution}")
        if self.num_gaussians < 1 or self.iters < 0 or self.views_per_step < 1:
            raise ValueError(f"fit settings: need num_gaussians >= 1, iters >= 0, views_per_step >= 1, got {self}")


def train_test_split(num_views: int) -> tuple[list[int], list[int]]:
    """Fit on the even views, evaluate on the odd ones."""
    if num_views < 4 or num_views % 2:
        raise ValueError(f"the consistency protocol needs an even number (>= 4) of views, got {num_views}")
    return list(range(0, num_views, 2)), list(range(1, num_views, 2))


@dataclass
class NVSResult:
    row: dict
    gaussians: GaussianSet
    renders: torch.Tensor  # (V/2, 3, R, R) renders at the held-out cameras
    targets: torch.Tensor  # (V/2, 3, R, R) held-out views


def fit_and_render(view_set: ViewSet, fit: FitSettings, progress: bool = False):
    """Fit Gaussians to the even views, render the odd ones: (gaussians, renders, targets)."""
    views = view_set.resized(fit.resolution)
    train, test = train_test_split(len(views))
    gaussians = fit_gaussians(
        views.images[train], views.cameras[train], views.fovy, num_gaussians=fit.num_gaussians, iters=fit.iters,
        background=views.background, seed=fit.seed, loss=fit.loss, init_radius=fit.init_radius,
        init_scale=fit.init_scale, views_per_step=fit.views_per_step, lr=fit.lr, backend="torch", progress=progress,
    )
    with torch.no_grad():
        renders = render(gaussians, views.cameras[test], views.fovy, fit.resolution, fit.resolution,
                         views.background, backend="torch")["rgb"].clamp(0, 1)
    return gaussians, renders, views.images[test]


def nvs_consistency(view_set: ViewSet, suite: MetricSuite, fit: FitSettings | None = None,
                    cyclic: bool = True, progress: bool = False) -> NVSResult:
    """One Table-1 row for a view set (see the module docstring)."""
    fit = fit or FitSettings()
    gaussians, renders, targets = fit_and_render(view_set, fit, progress)
    row = {
        "item": view_set.name,
        "prompt": view_set.prompt,
        "psnr": float(psnr(renders, targets).mean()),
        "ssim": float(ssim(renders, targets).mean()),
        "lpips": suite.lpips(renders, targets),
        "clip": suite.clip(view_set.images, view_set.prompt) if view_set.prompt else "",
        "flow_method": suite.flow_method,
    }
    for interval in FLOW_INTERVALS:
        row[f"flow_rmse_f{interval}"] = suite.flow_rmse(view_set.images, interval, cyclic=cyclic)
    return NVSResult(row, gaussians, renders, targets)


def evaluate_view_sets(view_sets, suite: MetricSuite, fit: FitSettings | None = None, cyclic: bool = True,
                       progress: bool = True) -> list[dict]:
    """Table-1 rows for an iterable of view sets."""
    rows = []
    for view_set in tqdm(view_sets, desc="consistency (fit 12 -> test 12)", disable=not progress):
        rows.append(nvs_consistency(view_set, suite, fit, cyclic).row)
    return rows


def protocol_settings(fit: FitSettings, suite: MetricSuite, cyclic: bool) -> dict:
    return {"protocol": "novel-view consistency: fit views 0,2,4,... -> evaluate views 1,3,5,...",
            "fit": asdict(fit), "flow_intervals": list(FLOW_INTERVALS), "flow_cyclic": cyclic,
            "flow_method": suite.flow_method}
