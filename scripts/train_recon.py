"""Stage-2 training: the reconstructor on the generator's single-step denoised views.

    accelerate launch scripts/train_recon.py --config configs/toy_recon.yaml [key=value ...]
"""

import sys

from videomv.train.checkpoint import CheckpointError
from videomv.train.config import ConfigError, load_config, parse_args, resolve_path
from videomv.train.engine import OutputDirInUseError, ProcessTimeoutError, train
from videomv.train.recon import ReconstructorTask


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
        cfg = load_config(path, overrides, ReconstructorTask.schema)
        train(cfg, ReconstructorTask, prepare=build_toy_world)
    except (ConfigError, OutputDirInUseError, CheckpointError, ProcessTimeoutError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
