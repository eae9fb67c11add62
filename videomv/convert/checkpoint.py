"""Reading the release's `.pth` checkpoints without running code from them.

A release checkpoint (`t2v_00333000.pth`, `i2v_00882000.pth`) is a torch pickle of
`{'state_dict': {name: tensor}, 'step': int}` with no module prefix. It is read with
`torch.load(weights_only=True)`, which only rebuilds tensors and plain containers; a file that needs
anything more (classes, functions) is refused.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

RECONSTRUCTOR_PREFIX = "lgm_big."


@dataclass
class ReleaseCheckpoint:
    unet: dict[str, torch.Tensor]  # UNet weights, release names
    reconstructor: dict[str, torch.Tensor]  # LGM weights with the `lgm_big.` prefix removed
    step: int | None
    path: str


def load_release_checkpoint(path: str | Path) -> ReleaseCheckpoint:
    """Read a release checkpoint and split it into UNet and reconstructor weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--checkpoint {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"--checkpoint {path}: refused, the file needs more than tensors and plain containers to load "
            f"(torch.load(weights_only=True) says: {str(err).splitlines()[0]}). A release checkpoint holds only "
            "{'state_dict': ..., 'step': ...}; this file may not be one, and it is not unpickled with code."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"--checkpoint {path}: expected a dict with a 'state_dict' entry, found {found}")
    state = data["state_dict"]
    extra = sorted(set(data) - {"state_dict", "step"})
    if extra:
        raise ValueError(f"--checkpoint {path}: unexpected top-level entries {extra} (expected 'state_dict', 'step')")
    not_tensors = sorted(k for k, v in state.items() if not torch.is_tensor(v))
    if not_tensors:
        raise ValueError(f"--checkpoint {path}: state_dict entries that are not tensors: {not_tensors[:10]}")
    prefixed = [k for k in state if k.startswith("module.")]
    if prefixed:
        raise ValueError(f"--checkpoint {path}: keys carry a 'module.' prefix (e.g. {prefixed[0]}); expected none")
    unet = {k: v for k, v in state.items() if not k.startswith(RECONSTRUCTOR_PREFIX)}
    recon = {k[len(RECONSTRUCTOR_PREFIX):]: v for k, v in state.items() if k.startswith(RECONSTRUCTOR_PREFIX)}
    step = data.get("step")
    return ReleaseCheckpoint(unet, recon, None if step is None else int(step), str(path))


def _is_zip(path: Path) -> bool:
    """torch's zip format can be memory-mapped (a 5 GB file need not be read into memory twice)."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"
