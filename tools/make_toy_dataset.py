"""Render the procedural toy world into a G-Objaverse-layout dataset.

    python tools/make_toy_dataset.py --out data/toy --num-objects 1000 --resolution 64 --seed 0
"""

import argparse

from videomv.toy.writer import build_dataset


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def _split(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(f"expected three non-negative fractions summing to 1 (train,val,test), got {text!r}")
    return parts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-objects", type=_int_at_least(1), required=True, help="number of objects (>= 1)")
    parser.add_argument("--resolution", type=_int_at_least(8), default=64, help="image size in pixels (>= 8)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="object i depends only on (seed, i)")
    parser.add_argument("--workers", type=_int_at_least(1), default=None, help="processes (default: all cores)")
    parser.add_argument("--num-views", type=_int_at_least(1), default=24, help="views per orbit")
    parser.add_argument("--split", type=_split, default=(0.9, 0.05, 0.05), help="train,val,test fractions")
    args = parser.parse_args(argv)
    settings = build_dataset(
        args.out, args.num_objects, args.resolution, seed=args.seed, num_views=args.num_views,
        split=args.split, workers=args.workers,
    )
    print(f"wrote {settings['num_objects']} objects to {args.out}")


if __name__ == "__main__":
    main()
