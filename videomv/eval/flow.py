"""Flow-warping RMSE between views i and i+f of a multi-view sequence.

For every pair we estimate the backward optical flow from view i+f to view i (for each pixel p of
view i+f, where it came from in view i), warp view i onto view i+f by bilinear sampling
(`grid_sample`), and take the RMSE in [0, 1] intensity units over pixels whose source lies inside
view i. The score is the mean over pairs. The paper used RAFT flow and softmax splatting (a forward
warp); we use a backward warp, which needs only the one flow field. Flow comes from RAFT when its
weights are on disk (torchvision architecture, local file only), else from OpenCV's Farneback
method; the result records which one was used, since their numbers are not comparable.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .availability import MetricUnavailable, find_file, load_state_dict_file, search_dirs
from .metrics import check_images

RAFT_ENV = "VIDEOMV_RAFT_WEIGHTS"
_RAFT_FILES = {
    "raft_large": ("raft_large_C_T_SKHT_V2-ff5fadd5.pth", "raft_large*.pth", "raft_large*.safetensors"),
    "raft_small": ("raft_small_C_T_V2-01064c6d.pth", "raft_small*.pth", "raft_small*.safetensors"),
}


@dataclass
class FlowWarpResult:
    rmse: float  # mean over pairs
    per_pair: list[float]
    interval: int
    method: str  # "raft_large", "raft_small" or "farneback"


# --------------------------------------------------------------------------------------------- #
# Flow estimators: callables (source (B,3,H,W), target (B,3,H,W)) -> flow (B,2,H,W) in pixels, such
# that target(p) ~ source(p + flow(p)).
# --------------------------------------------------------------------------------------------- #


class FarnebackFlow:
    """OpenCV Farneback dense flow on grey images (classical, no weights)."""

    name = "farneback"

    def __init__(self, pyr_scale=0.5, levels=4, winsize=15, iterations=5, poly_n=5, poly_sigma=1.1):
        self.params = (pyr_scale, levels, winsize, iterations, poly_n, poly_sigma)

    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        import cv2

        flows = []
        for src, tgt in zip(source, target):
            grey = [
                cv2.cvtColor((img.permute(1, 2, 0).clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
                for img in (src, tgt)
            ]
            # calcOpticalFlowFarneback(prev, next): prev(y, x) ~ next(y + fy, x + fx)
            flow = cv2.calcOpticalFlowFarneback(grey[1], grey[0], None, *self.params, 0)
            flows.append(torch.from_numpy(flow).permute(2, 0, 1))
        return torch.stack(flows).float()


class RaftFlow:
    """torchvision RAFT with weights from a local file."""

    def __init__(self, variant: str, weights: str | Path, iterations: int = 12, device="cpu"):
        from torchvision.models import optical_flow

        if variant not in _RAFT_FILES:
            raise ValueError(f"RAFT variant must be one of {sorted(_RAFT_FILES)}, got {variant!r}")
        with torch.device("meta"):
            model = getattr(optical_flow, variant)(weights=None)
        state = load_state_dict_file(weights)
        try:
            model.load_state_dict(state, assign=True)
        except RuntimeError as err:
            raise ValueError(f"RAFT weights {weights} do not fit torchvision's {variant}: {err}") from None
        self.model = model.to(device).eval().requires_grad_(False)
        self.name, self.iterations, self.device = variant, iterations, device

    @torch.no_grad()
    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        h, w = source.shape[-2:]
        # RAFT's correlation pyramid needs at least 128 pixels per side: upsample smaller images.
        factor = max(1.0, 128.0 / min(h, w))
        size = (math.ceil(h * factor / 8) * 8, math.ceil(w * factor / 8) * 8)
        prep = lambda x: F.interpolate(2 * x.to(self.device) - 1, size=size, mode="bilinear", align_corners=False)
        # RAFT(image1, image2) gives image1(p) ~ image2(p + flow(p)).
        flow = self.model(prep(target), prep(source), num_flow_updates=self.iterations)[-1]
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        scale = torch.tensor([w / size[1], h / size[0]], device=flow.device).view(1, 2, 1, 1)
        return (flow * scale).cpu()


def find_raft_weights(variant: str = "raft_large", weights: str | Path | None = None) -> Path:
    """A local RAFT weights file: `weights` or `$VIDEOMV_RAFT_WEIGHTS` (a file, used for the variant
    its name mentions, or for any variant if it names none; or a directory), else the torch hub cache."""
    if variant not in _RAFT_FILES:
        raise ValueError(f"RAFT variant must be one of {sorted(_RAFT_FILES)}, got {variant!r}")
    explicit = weights or os.environ.get(RAFT_ENV)
    if explicit and Path(explicit).is_file():
        name = Path(explicit).name
        if variant in name or not any(v in name for v in _RAFT_FILES):
            return Path(explicit)
    dirs = search_dirs(weights, RAFT_ENV)
    found = find_file(dirs, _RAFT_FILES[variant])
    if found is None:
        raise MetricUnavailable(f"{variant}: no weights in {', '.join(map(str, dirs))} (set ${RAFT_ENV})")
    return found


def default_flow(weights: str | Path | None = None, device="cpu"):
    """RAFT (large, then small) when its weights are on disk, else Farneback."""
    for variant in ("raft_large", "raft_small"):
        try:
            path = find_raft_weights(variant, weights)
        except MetricUnavailable:
            continue
        try:
            return RaftFlow(variant, path, device=device)
        except ValueError as err:  # e.g. a raft_small file where raft_large was tried
            warnings.warn(f"skipping {variant}: {err}")
    return FarnebackFlow()


# --------------------------------------------------------------------------------------------- #
# Warping and the metric
# --------------------------------------------------------------------------------------------- #


def backward_warp(source: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `source` (B,C,H,W) at p + flow(p). Returns the warped images and a (B,1,H,W) mask of
    pixels whose sample point lies inside the source image."""
    b, _, h, w = source.shape
    if flow.shape != (b, 2, h, w):
        raise ValueError(f"flow: expected shape {(b, 2, h, w)}, got {tuple(flow.shape)}")
    ys, xs = torch.meshgrid(torch.arange(h, dtype=flow.dtype), torch.arange(w, dtype=flow.dtype), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    valid = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    grid = torch.stack([2 * (x + 0.5) / w - 1, 2 * (y + 0.5) / h - 1], dim=-1)
    warped = F.grid_sample(source.to(flow.dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return warped, valid[:, None]


def warp_rmse(warped: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image RMSE over valid pixels (all channels). NaN when no pixel is valid."""
    mask = valid.to(warped.dtype).expand_as(warped)
    sq = ((warped - target.to(warped.dtype)) ** 2 * mask).flatten(1).sum(1)
    return (sq / mask.flatten(1).sum(1)).sqrt()


def flow_pairs(num_views: int, interval: int, cyclic: bool = False) -> list[tuple[int, int]]:
    if interval < 1:
        raise ValueError(f"interval must be >= 1, got {interval}")
    if cyclic:
        return [(i, (i + interval) % num_views) for i in range(num_views)]
    return [(i, i + interval) for i in range(num_views - interval)]


def flow_warping_rmse(
    views: torch.Tensor, interval: int = 1, flow=None, cyclic: bool = False, batch_size: int = 8
) -> FlowWarpResult:
    """Flow-warping RMSE of a (V, 3, H, W) sequence in [0, 1] for views (i, i + interval).

    `flow`: an estimator (see `FarnebackFlow`, `RaftFlow`); default `default_flow()`. With `cyclic`,
    pairs wrap around the orbit (view V-1 pairs with view interval-1).
    """
    views = check_images(views, "views")
    if views.shape[1] != 3:
        raise ValueError(f"views: expected RGB (V, 3, H, W), got {tuple(views.shape)}")
    pairs = flow_pairs(views.shape[0], interval, cyclic)
    if not pairs:
        raise ValueError(f"views: need more than {interval} views for interval {interval}, got {views.shape[0]}")
    flow = flow if flow is not None else default_flow()
    per_pair: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        src = views[[i for i, _ in chunk]].float()
        tgt = views[[j for _, j in chunk]].float()
        warped, valid = backward_warp(src, flow(src, tgt).float())
        per_pair += warp_rmse(warped, tgt, valid).tolist()
    mean = float(np.nanmean(per_pair)) if not all(np.isnan(per_pair)) else float("nan")
    return FlowWarpResult(rmse=mean, per_pair=per_pair, interval=interval, method=flow.name)
