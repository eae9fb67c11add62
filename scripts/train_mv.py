"""Stage-1 training (text → multi-view or image → multi-view).

    accelerate launch scripts/train_mv.py --config configs/toy_t2mv.yaml max_steps=100 output_dir=runs/x
"""

from videomv.train.config import load_config, parse_args
from videomv.train.engine import train
from videomv.train.mv import MultiViewTask


def main(argv=None):
    path, overrides = parse_args(argv)
    train(load_config(path, overrides), MultiViewTask)


if __name__ == "__main__":
    main()
