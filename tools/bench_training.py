"""Speed of a multi-view training step with and without the latent cache, measured side by side.

    python tools/bench_training.py [--config configs/toy_i2mv.yaml] [--objects 32] [--steps 8] [--threads 2]

Builds the task of `--config` on its first `--objects` training objects twice, with
`data.cache_latents` false and true (the cache in a temporary folder, its build timed), and reports
the median time of a training step (the loss with its data, backward, AdamW) of each over
interleaved repeats, and their ratio. Extra arguments are config overrides (`key=value`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from videomv.toy import build_configured_world
from videomv.train.config import load_config, resolve_path
from videomv.train.mv import MultiViewTask
from videomv.train.schema import MultiViewConfig

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "toy_i2mv.yaml")
    parser.add_argument("--objects", type=int, default=32, help="training objects (the first N of data.objects)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps of each")
    parser.add_argument("--threads", type=int, default=2)
    args, overrides = parser.parse_known_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = load_config(args.config, overrides, MultiViewConfig)
    build_configured_world(cfg)  # renders the toy world if it is missing
    listed = resolve_path(cfg.data.objects, resolve_path(cfg.data.root)).read_text().split()
    if len(listed) < args.objects:
        sys.exit(f"data.objects lists {len(listed)} objects; --objects asks for {args.objects}")
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    tasks, build_s, streams, optimizers = {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        objects = Path(tmp) / "objects.txt"
        objects.write_text("\n".join(listed[:args.objects]) + "\n")
        for cached in (False, True):
            start = time.perf_counter()
            tasks[cached] = MultiViewTask(load_config(args.config, overrides + [
                f"data.objects={objects}", f"output_dir={Path(tmp) / str(cached)}", f"data.cache_latents={cached}",
                "object_weight=0"], MultiViewConfig), accelerator)
            build_s[cached] = time.perf_counter() - start
            streams[cached] = tasks[cached].make_batches(0, 1)
            optimizers[cached] = torch.optim.AdamW(tasks[cached].unet.parameters(), lr=1e-5)

        def step(cached: bool) -> float:
            task, optimizer = tasks[cached], optimizers[cached]
            start = time.perf_counter()
            loss, _ = task.loss(next(streams[cached]), {"unet": task.unet}, 0)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        times = {False: [], True: []}
        for repeat in tqdm(range(args.steps + 1), desc="steps"):
            for cached in (False, True):
                seconds = step(cached)
                if repeat:  # the first step of each warms up
                    times[cached].append(seconds)
    plain, cache = statistics.median(times[False]), statistics.median(times[True])
    print(f"{args.config.name}, {args.objects} objects, batch {cfg.dataloader.batch_size}, "
          f"{args.threads} threads, median of {args.steps} steps")
    print("| data | task built (s) | step (s) |\n|---|---|---|")
    print(f"| images, VAE every step | {build_s[False]:.1f} | {plain:.3f} |")
    print(f"| latent cache | {build_s[True]:.1f} (cache included) | {cache:.3f} |")
    print(f"step time, cache / images: {cache / plain:.2f}")


if __name__ == "__main__":
    main()
