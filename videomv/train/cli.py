"""The command line shared by the training scripts: ``--config FILE key=value ...`` -> a run."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from omegaconf import DictConfig

from .checkpoint import CheckpointError
from .config import ConfigError, load_config, parse_args
from .engine import OutputDirInUseError, ProcessTimeoutError, train


def run_training(task_factory, argv: Sequence[str] | None = None,
                 prepare: Callable[[DictConfig], None] | None = None) -> int:
    """Load the config for ``task_factory.schema``, then train; a bad config, a used output folder,
    an unreadable checkpoint or a stalled process ends with one line on stderr and exit code 2."""
    path, overrides = parse_args(argv)
    try:
        cfg = load_config(path, overrides, task_factory.schema)
        train(cfg, task_factory, prepare=prepare)
    except (ConfigError, OutputDirInUseError, CheckpointError, ProcessTimeoutError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
