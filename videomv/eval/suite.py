"""The metric networks a protocol needs, loaded once: LPIPS, CLIP and an optical-flow estimator.

Each is loaded only from weights on disk. One that cannot be loaded is recorded in `notes` with its
reason, and every table cell of that metric reads `unavailable` — no number ever comes from a
randomly initialised network. The flow estimator is RAFT when its weights are present, else
Farneback; `flow_method` names the one in use (their RMSEs are not comparable).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .availability import MetricUnavailable, unavailable_note
from .flow import default_flow, flow_warping_rmse
from .perceptual import clip_score, load_clip, load_lpips, lpips
from .report import UNAVAILABLE


@dataclass
class MetricSuite:
    lpips_model: object | None = None
    clip_scorer: object | None = None
    flow: object | None = None
    notes: dict = field(default_factory=dict)

    @classmethod
    def load(cls, lpips_net: str = "vgg", lpips_dir=None, clip_model: str = "ViT-B-32", clip_checkpoint=None,
             raft_weights=None, need_clip: bool = True, device="cpu") -> "MetricSuite":
        """Load what is on disk; missing weights become notes (see the module docstring)."""
        suite = cls(flow=default_flow(raft_weights, device=device))
        try:
            suite.lpips_model = load_lpips(lpips_net, weights_dir=lpips_dir, device=device)
        except MetricUnavailable as err:
            suite.notes["lpips"] = unavailable_note(err)
        if need_clip:
            try:
                suite.clip_scorer = load_clip(clip_model, clip_checkpoint, device=device)
            except MetricUnavailable as err:
                suite.notes["clip"] = unavailable_note(err)
        return suite

    @property
    def flow_method(self) -> str:
        return self.flow.name if self.flow is not None else "farneback"

    def lpips(self, pred: torch.Tensor, target: torch.Tensor):
        """Mean LPIPS over images, or `unavailable`."""
        if self.lpips_model is None:
            return UNAVAILABLE
        return float(lpips(pred, target, self.lpips_model).mean())

    def clip(self, images: torch.Tensor, prompt: str):
        """Mean CLIP score of the prompt against each view, or `unavailable`."""
        if self.clip_scorer is None:
            return UNAVAILABLE
        return float(clip_score(images, prompt, self.clip_scorer))

    def flow_rmse(self, views: torch.Tensor, interval: int, cyclic: bool = True) -> float:
        """Flow-warping RMSE (pairs i, i + interval; wrapping around a closed orbit when `cyclic`)."""
        if self.flow is None:
            self.flow = default_flow()
        return float(flow_warping_rmse(views, interval, flow=self.flow, cyclic=cyclic).rmse)
