"""Stage-1 training (text → multi-view or image → multi-view).

    accelerate launch scripts/train_mv.py --config configs/toy_t2mv.yaml max_steps=100 output_dir=runs/x
"""

import sys

from videomv.toy import build_configured_world
from videomv.train.cli import run_training
from videomv.train.mv import MultiViewTask

if __name__ == "__main__":
    sys.exit(run_training(MultiViewTask, prepare=build_configured_world))
