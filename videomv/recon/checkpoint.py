"""Reconstructor weights on disk: safetensors only (no pickle).

A saved model is a folder with `model.safetensors` and `config.json` (the ReconstructorConfig).
LGM's released files (`model.safetensors`, `model_fp16.safetensors`) hold only weights, with keys
`unet.*` and `conv.*` (and, in some, LPIPS loss-network keys `lpips_loss.*`, ignored here); their
shape matches the `big` preset.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from videomv.io import atomic_write, atomic_write_text

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
IGNORED_PREFIXES = ("lpips_loss.",)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a safetensors file, without the keys the reconstructor does not own."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reconstructor checkpoint {path} does not exist")
    if path.suffix != ".safetensors":
        raise ValueError(f"reconstructor checkpoint {path}: expected a .safetensors file")
    state = load_file(str(path), device="cpu")
    return {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}


def check_state_dict(expected: dict[str, torch.Size], state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise ValueError naming every missing key, unexpected key and shape mismatch."""

    def listing(items):
        items = sorted(items)
        shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
        return f"{len(items)}: {shown}"

    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k])
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {listing(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches {listing(mismatched)}")
    if problems:
        raise ValueError(f"{source} does not fit the reconstructor: " + "; ".join(problems))


def write_pretrained(directory: str | Path, state: dict[str, torch.Tensor], config: dict) -> Path:
    """Write `model.safetensors` and `config.json` into `directory`, each atomically."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    atomic_write(directory / WEIGHTS_NAME, lambda tmp: save_file(tensors, str(tmp), metadata={"format": "pt"}))
    text = json.dumps(config, indent=2) + "\n"
    atomic_write_text(directory / CONFIG_NAME, text)
    return directory


def read_config(directory: str | Path) -> dict | None:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"reconstructor config {path} is not valid JSON: {err}") from None
