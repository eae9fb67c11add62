"""Run configuration: typed OmegaConf YAML + ``key=value`` command-line overrides.

``load_config("configs/toy_t2mv.yaml", ["max_steps=10"], MultiViewConfig)`` merges, in order:
the task's schema defaults (:mod:`videomv.train.schema`), the YAML file (after the files it names
as ``base_config``, oldest first), then the dotlist overrides. Struct mode: an unknown key, a
value of the wrong type or out of range fails with a :class:`ConfigError` naming the key. The
resolved result is what a run saves as ``<output_dir>/config.yaml``.

``base_config: toy_t2mv.yaml`` (a path relative to the file, or a list of them) makes a file an
overlay: it holds only what differs from its base.

Relative paths inside configs (``output_dir``, ``data.root``, ``vae.path``, ...) are taken relative
to the repository root (:func:`resolve_path`), so the commands work from any folder.
"""

from __future__ import annotations

import argparse
import difflib
import os
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from videomv.io import atomic_write_text

from .schema import RANGES, EngineConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE_KEY = "base_config"
RENAMED = {"logging.with": "logging.trackers"}


class ConfigError(ValueError):
    """A config key that does not exist, or a value of the wrong type or out of range."""


def resolve_path(path, root: Path | None = None) -> Path | None:
    """Relative paths are taken relative to ``root`` (e.g. a dataset) or else the repository root."""
    if path in (None, ""):
        return None
    p = Path(str(path)).expanduser()
    if p.is_absolute():
        return p
    return (root if root is not None else REPO_ROOT) / p


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


def read_layers(path: str | os.PathLike, _seen: tuple = ()) -> list[DictConfig]:
    """The YAML at ``path`` preceded by its ``base_config`` chain (oldest first), without that key."""
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist")
    if path in _seen:
        raise ConfigError(f"config {str(path)!r}: base_config chain loops back to itself")
    layer = OmegaConf.load(path)
    bases = layer.pop(BASE_KEY, None) if isinstance(layer, DictConfig) else None
    layers = []
    for base in [bases] if isinstance(bases, str) else list(bases or []):
        layers += read_layers(path.parent / str(base), _seen + (path,))
    return layers + [layer]


def load_config(path: str | os.PathLike | None, overrides: Sequence[str] = (), schema=None) -> DictConfig:
    """Merge ``schema`` defaults (default :class:`EngineConfig`), the YAML chain at ``path`` and
    dotlist ``overrides``; resolve interpolations; check types and ranges."""
    schema = schema or EngineConfig
    layers = [OmegaConf.structured(schema)]
    sources = ["schema"]
    if path is not None:
        for layer in read_layers(path):
            layers.append(layer)
            sources.append(str(path))
    try:
        dotlist = OmegaConf.from_dotlist(list(overrides))
    except OmegaConfBaseException as err:
        raise ConfigError(f"overrides {list(overrides)}: {_first_line(err)}") from None
    layers.append(dotlist)
    sources.append("command-line overrides")
    cfg = layers[0]
    for layer, source in zip(layers[1:], sources[1:]):
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except OmegaConfBaseException as err:
            raise _explain(err, schema, source) from None
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise _explain(err, schema, "interpolation") from None
    check_ranges(cfg)
    return cfg


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _explain(err: OmegaConfBaseException, schema, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    message = _first_line(err)
    if "not in" in message and key != "?":
        parent, _, leaf = key.rpartition(".")
        valid = _valid_keys(schema, parent)
        if key in RENAMED:
            hint = f"it is now {RENAMED[key]!r}"
        else:
            close = difflib.get_close_matches(leaf, valid, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(repr(f'{parent}.{c}' if parent else c) for c in close)}?" if close else \
                f"valid keys{' under ' + repr(parent) if parent else ''}: {', '.join(sorted(valid))}"
        return ConfigError(f"unknown config key {key!r} (from {source}): {hint}")
    return ConfigError(f"config key {key!r} (from {source}): {message}")


def _valid_keys(schema, parent: str) -> list[str]:
    node = OmegaConf.structured(schema)
    for part in [p for p in parent.split(".") if p]:
        node = node.get(part) if isinstance(node, DictConfig) else None
        if node is None:
            return []
    return [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []


def check_ranges(cfg: DictConfig) -> None:
    """Each key of :data:`videomv.train.schema.RANGES` present in ``cfg`` must hold its condition."""
    for key, ok, expected in RANGES:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False, default="<absent>")
        except OmegaConfBaseException:
            continue
        if isinstance(value, str) and value == "<absent>":
            continue
        plain = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig,)) or \
            OmegaConf.is_list(value) else value
        try:
            good = bool(ok(plain))
        except TypeError:
            good = False
        if not good:
            raise ConfigError(f"config key {key!r} must be {expected}, got {plain!r}")
    resume = cfg.get("resume") if "resume" in cfg else None
    if resume not in (None, "", "latest", "auto") and not Path(str(resume)).exists():
        raise ConfigError(f"config key 'resume' must be null, latest, auto or an existing checkpoint folder, "
                          f"got {resume!r}")


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
