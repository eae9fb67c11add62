"""Stage-1 training (text → multi-view or image → multi-view).

    accelerate launch scripts/train_mv.py --config configs/toy_t2mv.yaml max_steps=100 output_dir=runs/x
"""

import sys

from videomv.train.checkpoint import CheckpointError
from videomv.train.config import ConfigError, load_config, parse_args, resolve_path
from videomv.train.engine import OutputDirInUseError, ProcessTimeoutError, train
from videomv.train.mv import MultiViewTask


def build_toy_world(cfg) -> None:
    """``data.toy`` set: render the toy world at ``data.root`` unless it is there already."""
    if not cfg.data.get("toy"):
        return
    try:
        from videomv.toy import ensure_toy_dataset
    except ImportError:
        from videomv.train.datasets import ensure_toy_dataset
    ensure_toy_dataset(resolve_path(cfg.data.root), cfg.data.toy)


def main(argv=None):
    path, overrides = parse_args(argv)
    try:
        cfg = load_config(path, overrides, MultiViewTask.schema)
        train(cfg, MultiViewTask, prepare=build_toy_world)
    except (ConfigError, OutputDirInUseError, CheckpointError, ProcessTimeoutError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
