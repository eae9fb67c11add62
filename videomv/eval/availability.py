"""Metrics that need pretrained networks report themselves unavailable instead of guessing.

A metric network (LPIPS backbone, CLIP, RAFT) is only ever built from weights found on disk. When
they are missing, loaders raise `MetricUnavailable`; tables print `unavailable: <reason>`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed here (e.g. its pretrained weights are not on disk)."""


def unavailable_note(err: BaseException | str) -> str:
    """Table cell text for a metric that could not be computed."""
    return f"unavailable: {err}"


def metric_or_note(fn: Callable, *args, **kwargs):
    """Call `fn`; on `MetricUnavailable` return the table note instead of the value."""
    try:
        return fn(*args, **kwargs)
    except MetricUnavailable as err:
        return unavailable_note(err)


def hub_checkpoint_dir() -> Path:
    """torch hub's checkpoint cache (where torchvision stores downloaded weights)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(explicit: str | Path | None, env_var: str) -> list[Path]:
    """Directories to look in, in order: an explicit directory, the env var's directory, the hub cache.
    (An explicit or env path naming a file contributes its parent directory.)"""
    dirs: list[Path] = []
    for entry in (explicit, os.environ.get(env_var)):
        if entry:
            path = Path(entry).expanduser()
            dirs.append(path if path.is_dir() else path.parent)
    dirs.append(hub_checkpoint_dir())
    return dirs


def find_file(dirs: Iterable[Path], patterns: Iterable[str]) -> Path | None:
    """First existing file matching any glob pattern, searching directories in order."""
    patterns = list(patterns)
    for directory in dirs:
        if not directory.is_dir():
            continue
        for pattern in patterns:
            hits = sorted(p for p in directory.glob(pattern) if p.is_file())
            if hits:
                return hits[0]
    return None


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or a tensor-only .pth/.pt/.bin file (never unpickles objects)."""
    path = Path(path)
    if not path.is_file():
        raise MetricUnavailable(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file or one holding pickled objects
        raise ValueError(f"cannot read weights file {path} as a tensor state dict: {err}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {path} does not hold a state dict (got {type(state).__name__})")
    return state
