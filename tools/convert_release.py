#!/usr/bin/env python
"""Convert an official VideoMV release checkpoint into a VideoMV model folder.

    python tools/convert_release.py --task text  --checkpoint t2v_00333000.pth \
        --base damo-vilab/text-to-video-ms-1.7b --out models/videomv-t2v
    python tools/convert_release.py --task image --checkpoint i2v_00882000.pth \
        --base ali-vilab/i2vgen-xl --out models/videomv-i2v

--base is the diffusers folder (or hub id) of the release's base model: ModelScope-T2V for text,
I2VGen-XL for image; it gives the UNet's shape, the text (and image) encoders. The release's image
model encodes and decodes with ModelScope-T2V's VAE: for --task image it is read from --vae
(default the ModelScope-T2V hub id). The output folder loads with `VideoMV.from_pretrained` and
`scripts/sample.py --model`, and carries the release's sampling settings (`videomv.json`).
The checkpoint is read with torch.load(weights_only=True): nothing in it is run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=("text", "image"), required=True, help="text -> views or image -> views")
    p.add_argument("--checkpoint", type=Path, required=True, help="release .pth (t2v_00333000.pth / i2v_00882000.pth)")
    p.add_argument("--base", required=True, help="diffusers folder or hub id of the base model")
    p.add_argument("--out", type=Path, required=True, help="VideoMV model folder to write (new or empty)")
    p.add_argument("--vae", default=None, help="folder or hub id holding ModelScope-T2V's VAE (vae/); "
                   "default: --base for text, damo-vilab/text-to-video-ms-1.7b for image")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from videomv.convert.release import convert_release

    try:
        report = convert_release(args.task, args.checkpoint, args.base, args.out, vae=args.vae)
    except (ValueError, OSError) as err:  # bad input: FileNotFoundError, FileExistsError are OSErrors
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
