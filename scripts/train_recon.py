"""Stage-2 training: the reconstructor on the generator's single-step denoised views.

    accelerate launch scripts/train_recon.py --config configs/toy_recon.yaml [key=value ...]
"""

import sys

from videomv.toy import build_configured_world
from videomv.train.cli import run_training
from videomv.train.recon import ReconstructorTask

if __name__ == "__main__":
    sys.exit(run_training(ReconstructorTask, prepare=build_configured_world))
