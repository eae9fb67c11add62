"""Toy VAE training: a tiny AutoencoderKL on toy-world renders.

    python scripts/train_vae.py --config configs/toy_vae.yaml [key=value ...]
"""

from videomv.train.config import load_config, parse_args
from videomv.train.engine import train
from videomv.train.vae import VAETask


def main(argv=None):
    path, overrides = parse_args(argv)
    train(load_config(path, overrides), VAETask)


if __name__ == "__main__":
    main()
