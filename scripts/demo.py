#!/usr/bin/env python
"""Web demo: text or image -> views, orbit video and the 3D result in the browser.

    pip install -e ".[demo]"
    python scripts/demo.py                      # the embedded toy models, http://127.0.0.1:7860
    python scripts/demo.py --model path/to/t2mv --model path/to/i2mv --port 8000

Without --model the embedded text and image models in data/embedded/ are loaded. Generations are
written under --out (default: a new temporary folder).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = [REPO / "data" / "embedded" / "t2mv", REPO / "data" / "embedded" / "i2mv"]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, action="append",
                   help="a VideoMV folder, at most one text and one image model (repeat the flag; default: both "
                        "embedded toy models)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: reachable from other machines)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", type=Path, default=None, help="folder for the generations (default: a new temporary one)")
    p.add_argument("--share", action="store_true", help="also publish a public gradio.live link (off by default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    args.model = args.model or EMBEDDED
    for folder in args.model:
        if not folder.is_dir():
            p.error(f"--model: {folder} is not a folder")
    if not 0 < args.port < 65536:
        p.error(f"--port must be in [1, 65535], got {args.port}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be at least 1, got {args.threads}")
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        p.error(f"--out: {args.out} exists and is not a folder")
    args.parser = p
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        from videomv.demo import Demo, build_app, launch
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "gradio":
            args.parser.error('the demo needs gradio: pip install -e ".[demo]"')
        raise
    try:
        demo = Demo.from_folders(args.model, out_root=args.out, device=args.device)
    except (FileNotFoundError, OSError, ValueError) as err:
        args.parser.error(f"--model: {err}")
    app = build_app(demo)
    print(f"models loaded in {time.perf_counter() - start:.1f} s; generations go to {demo.out_root}", flush=True)
    launch(app, demo, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
