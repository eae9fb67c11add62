"""Exponential moving average of model parameters (kept in float32)."""

from __future__ import annotations

import torch


class EMA:
    """Shadow copy ``s ← d·s + (1-d)·p`` of the trainable parameters.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` over the ``n`` updates made so far,
    so early, fast-changing weights are not frozen into the average. Before ``update_after_step``
    the shadow just copies the weights.
    """

    def __init__(self, model: torch.nn.Module, decay: float = 0.9999, update_after_step: int = 0):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema.decay must be in [0, 1], got {decay}")
        self.decay, self.update_after_step = float(decay), int(update_after_step)
        self.reset(model)

    def reset(self, model: torch.nn.Module) -> None:
        """Start the average afresh from `model`'s current weights."""
        self.num_updates = 0
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        params = {n: p for n, p in model.named_parameters() if n in self.shadow}
        if step < self.update_after_step:
            for n, p in params.items():
                self.shadow[n].copy_(p.detach().float())
            return
        d = self.current_decay()
        for n, p in params.items():
            self.shadow[n].lerp_(p.detach().float().to(self.shadow[n].device), 1.0 - d)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                p.copy_(self.shadow[n].to(p.dtype))

    def to(self, device) -> "EMA":
        self.shadow = {n: s.to(device) for n, s in self.shadow.items()}
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"shadow.{n}": s for n, s in self.shadow.items()}
        out["num_updates"] = torch.tensor(self.num_updates, dtype=torch.int64)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - {k[len("shadow."):] for k in state if k.startswith("shadow.")}
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameters, e.g. {sorted(missing)[:3]}")
        for n in self.shadow:
            self.shadow[n].copy_(state[f"shadow.{n}"])
        self.num_updates = int(state["num_updates"])
