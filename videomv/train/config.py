"""Run configuration: OmegaConf YAML + ``key=value`` command-line overrides.

``load_config(["--config", "configs/toy_t2mv.yaml", "max_steps=10"])`` merges, in order:
the engine defaults (:data:`ENGINE_DEFAULTS`), the YAML file, then the dotlist overrides.
The resolved result is what a run saves as ``<output_dir>/config.yaml``.

Relative paths inside configs (``output_dir``, ``data.root``, ``vae.path``, ...) are taken relative
to the repository root (:func:`resolve_path`), so the commands work from any folder.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from videomv.io import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path, root: Path | None = None) -> Path | None:
    """Relative paths are taken relative to ``root`` (e.g. a dataset) or else the repository root."""
    if path in (None, ""):
        return None
    p = Path(str(path)).expanduser()
    if p.is_absolute():
        return p
    return (root if root is not None else REPO_ROOT) / p


# Keys every trainer understands. Task-specific keys (model, data, ...) come from the YAML.
ENGINE_DEFAULTS = {
    "output_dir": "runs/default",
    "seed": 0,
    "max_steps": 1000,
    "mixed_precision": "no",  # fp16 | bf16 | no
    "gradient_accumulation_steps": 1,
    "max_grad_norm": 1.0,  # <= 0 disables clipping
    "gradient_checkpointing": False,
    "skip_nonfinite_loss": 0,  # how many NaN/inf-loss steps may be skipped before stopping
    "resume": None,  # None | latest | path to a checkpoint folder
    "optimizer": {"lr": 1e-4, "betas": [0.9, 0.999], "weight_decay": 0.0, "eps": 1e-8},
    "lr_scheduler": {"name": "constant_with_warmup", "warmup_steps": 0},
    "ema": {"enabled": False, "decay": 0.9999, "update_after_step": 0},
    "checkpoint": {"every": 500, "keep_last": 3},
    "logging": {"every": 10, "with": ["tensorboard"], "project": "videomv", "run_name": None},
    "validation": {"every": 0},  # 0 disables periodic validation
    "dataloader": {"batch_size": 1, "num_workers": 0},
    "debug": {"dump_param_checksum": False},
}


def parse_args(argv: Sequence[str] | None = None) -> tuple[str | None, list[str]]:
    """Split argv into the ``--config`` path and the ``key=value`` overrides."""
    parser = argparse.ArgumentParser(description="Train with an OmegaConf config and key=value overrides.")
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="key=value overrides (OmegaConf dotlist)")
    args = parser.parse_args(argv)
    for item in args.overrides:
        if "=" not in item:
            raise SystemExit(f"override {item!r} is not of the form key=value")
    return args.config, list(args.overrides)


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = (), defaults: dict | None = None) -> DictConfig:
    """Merge engine defaults, the YAML at ``path`` and dotlist ``overrides``; resolve interpolations."""
    base = OmegaConf.create(ENGINE_DEFAULTS if defaults is None else defaults)
    layers = [base]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        layers.append(OmegaConf.load(path))
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    cfg = OmegaConf.merge(*layers)
    OmegaConf.resolve(cfg)
    _check(cfg)
    return cfg


def _check(cfg: DictConfig) -> None:
    if cfg.mixed_precision not in ("no", "fp16", "bf16"):
        raise ValueError(f"mixed_precision must be one of no|fp16|bf16, got {cfg.mixed_precision!r}")
    if int(cfg.max_steps) < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg.max_steps}")
    if int(cfg.gradient_accumulation_steps) < 1:
        raise ValueError(f"gradient_accumulation_steps must be >= 1, got {cfg.gradient_accumulation_steps}")


def save_config(cfg: DictConfig, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (temp file in the same folder, then os.replace)."""
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def flatten(cfg: DictConfig | dict, prefix: str = "") -> dict:
    """Flat ``{"a.b": value}`` view with scalar values only (for tracker hyper-parameter tables)."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        else:
            out[name] = str(value)
    return out
