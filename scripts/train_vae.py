"""Toy VAE training: a tiny AutoencoderKL on toy-world renders.

    python scripts/train_vae.py --config configs/toy_vae.yaml [key=value ...]
"""

import sys

from videomv.toy import build_configured_world
from videomv.train.cli import run_training
from videomv.train.vae import VAETask

if __name__ == "__main__":
    sys.exit(run_training(VAETask, prepare=build_configured_world))
