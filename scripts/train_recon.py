"""Stage-2 training: the reconstructor on the generator's single-step denoised views.

    accelerate launch scripts/train_recon.py --config configs/toy_recon.yaml [key=value ...]
"""

from videomv.train.config import load_config, parse_args
from videomv.train.engine import train
from videomv.train.recon import ReconstructorTask


def main(argv=None):
    path, overrides = parse_args(argv)
    train(load_config(path, overrides), ReconstructorTask)


if __name__ == "__main__":
    main()
