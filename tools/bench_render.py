"""Benchmark the tiled PyTorch Gaussian renderer against the dense reference on the CPU.

Scenes are object-like: Gaussians uniform in a ball of radius 0.5, scales 0.01-0.03, one camera at
distance 1.8 (fovy 49.1). For each (count, resolution) it times forward and forward+backward of the
tiled renderer and of the dense reference (every Gaussian on every pixel), and reports speed-ups and
the largest differences of images and gradients. Dense runs that would take too long are skipped
and shown as such; nothing is extrapolated.

    python tools/bench_render.py --counts 4096 16384 65536 --sizes 128 256
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from tqdm.auto import tqdm

from videomv.gaussians import GaussianSet, render_dense, render_tiled
from videomv.gaussians.render_torch import _composite, _features, _finish, _pixel_centres, _power_direct, project
from videomv.geometry import orbit_camera

FOVY = 49.1


def object_scene(n: int, seed: int = 0) -> GaussianSet:
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return GaussianSet(
        means=direction * 0.5 * torch.rand(n, 1, generator=g) ** (1 / 3),
        scales=0.01 + 0.02 * torch.rand(n, 3, generator=g),
        rotations=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        opacities=0.1 + 0.85 * torch.rand(n, 1, generator=g),
        colors=torch.rand(n, 3, generator=g),
    )


def leaves(g: GaussianSet) -> GaussianSet:
    return GaussianSet(*(t.clone().requires_grad_(True) for t in (g.means, g.scales, g.rotations, g.opacities, g.colors)))


def loss_of(out: dict, weights: torch.Tensor) -> torch.Tensor:
    return (out["rgb"] * weights).sum() + out["alpha"].sum() + 0.1 * out["depth"].sum()


def dense_forward_backward(g: GaussianSet, c2w, size, bg, weights, pixel_chunk=1024):
    """Dense reference forward + backward, one pixel chunk at a time so memory stays bounded:
    gradients of the per-pixel loss are accumulated on the projected quantities, then pushed
    through the projection once. Returns (outputs, loss)."""
    proj = project(g, c2w, FOVY, size, size)
    feats = _features(g, proj)
    idx = torch.nonzero(proj.valid[0]).squeeze(1)
    idx = idx[torch.argsort(proj.depths[0, idx].detach(), stable=True)]
    inputs = [proj.means2d[0, idx], proj.conics[0, idx], g.opacities[idx, 0], feats[0, idx]]
    detached = [t.detach().requires_grad_(True) for t in inputs]
    pix = _pixel_centres(size, size, g.means).reshape(1, -1, 2)
    w = weights[0].permute(1, 2, 0).reshape(-1, 3)
    accs, log_ts, total = [], [], 0.0
    for start in range(0, pix.shape[1], pixel_chunk):
        p = pix[:, start : start + pixel_chunk]
        zero = torch.zeros(p.shape[:2])
        means2d, conics, opacities, feats_sorted = (t[None] for t in detached)
        power = _power_direct(p, means2d, conics)
        acc, log_t, _ = _composite(power, opacities, feats_sorted, zero, zero.bool())
        t = torch.exp(log_t[0])
        rgb = acc[0, :, :3] + t[:, None] * bg
        chunk_loss = (rgb * w[start : start + pixel_chunk]).sum() + (1 - t).sum() + 0.1 * acc[0, :, 3].sum()
        chunk_loss.backward()
        total += chunk_loss.item()
        accs.append(acc[0].detach())
        log_ts.append(log_t[0].detach())
    torch.autograd.backward(inputs, [t.grad for t in detached])
    out = _finish(torch.cat(accs).reshape(1, size, size, 4), torch.cat(log_ts).reshape(1, size, size), bg, 1, size, size)
    return out, total


def best_time(fn, repeats):
    """Best wall-clock and best process CPU time over `repeats` runs, and the last result."""
    walls, cpus, result = [], [], None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus), result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=3, help="tiled timings: best of this many runs")
    # One thread is the default: the renderer issues many mid-sized ops, and on a shared machine
    # intra-op threads spend much of their time waiting for each other (measured slower with 2).
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dense-forward-limit", type=float, default=1.1e9,
                        help="run the dense forward only when Gaussians x pixels <= this")
    parser.add_argument("--dense-backward-limit", type=float, default=3e8,
                        help="run the dense forward+backward only when Gaussians x pixels <= this")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bg = torch.tensor([1.0, 1.0, 1.0])
    c2w = orbit_camera(15.0, 30.0, 1.8)[None]
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {load:.1f} at start")

    rows = []
    for n in args.counts:
        scene = object_scene(n)
        for size in tqdm(args.sizes, desc=f"{n} Gaussians", leave=False):
            weights = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
            row = {"n": n, "size": size}
            with torch.no_grad():
                row["fwd"], row["fwd_cpu"], tiled = best_time(lambda: render_tiled(scene, c2w, FOVY, size, size, bg), args.repeats)

            def tiled_fb():
                g = leaves(scene)
                loss_of(render_tiled(g, c2w, FOVY, size, size, bg), weights).backward()
                return g

            row["fb"], row["fb_cpu"], g_tiled = best_time(tiled_fb, args.repeats)
            pairs = n * size * size
            if pairs <= args.dense_forward_limit:
                with torch.no_grad():
                    row["dense_fwd"], _, dense = best_time(lambda: render_dense(scene, c2w, FOVY, size, size, bg), 1)
                row["img_diff"] = max((tiled[k] - dense[k]).abs().max().item() for k in ("rgb", "alpha", "depth"))
            if pairs <= args.dense_backward_limit:
                g_dense = leaves(scene)
                row["dense_fb"], _, _ = best_time(lambda: dense_forward_backward(g_dense, c2w, size, bg, weights), 1)
                row["grad_diff"] = max(
                    ((a.grad - b.grad).abs().max() / b.grad.abs().max().clamp_min(1e-12)).item()
                    for a, b in zip(
                        (g_tiled.means, g_tiled.scales, g_tiled.opacities, g_tiled.colors),
                        (g_dense.means, g_dense.scales, g_dense.opacities, g_dense.colors),
                    )
                )
            rows.append(row)
            tqdm.write(str({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))

    def fmt(row, key, unit="s"):
        return f"{row[key]:.3f}{unit}" if key in row else "skipped"

    def ratio(row, a, b):
        return f"{row[b] / row[a]:.1f}x" if b in row else "skipped"

    header = (
        f"{'Gaussians':>9} {'res':>5} | {'tiled fwd':>9} {'dense fwd':>9} {'speed-up':>8} | {'tiled f+b':>9} "
        f"{'dense f+b':>9} {'speed-up':>8} | {'fwd CPU':>8} {'f+b CPU':>8} | {'max|img diff|':>13} {'max rel grad diff':>17}"
    )
    print()
    print(header)
    print("-" * len(header))
    for r in rows:
        img = f"{r['img_diff']:.2e}" if "img_diff" in r else "skipped"
        grad = f"{r['grad_diff']:.2e}" if "grad_diff" in r else "skipped"
        print(
            f"{r['n']:>9} {r['size']:>4}² | {fmt(r, 'fwd'):>9} {fmt(r, 'dense_fwd'):>9} {ratio(r, 'fwd', 'dense_fwd'):>8} | "
            f"{fmt(r, 'fb'):>9} {fmt(r, 'dense_fb'):>9} {ratio(r, 'fb', 'dense_fb'):>8} | "
            f"{fmt(r, 'fwd_cpu'):>8} {fmt(r, 'fb_cpu'):>8} | {img:>13} {grad:>17}"
        )
    print(
        f"\nWall-clock seconds (CPU columns: process CPU time of the tiled renderer, all threads); "
        f"tiled: best of {args.repeats}, dense: one run. 'skipped' = dense run not attempted "
        f"(Gaussians x pixels above --dense-forward-limit {args.dense_forward_limit:.2g} / --dense-backward-limit "
        f"{args.dense_backward_limit:.2g}); no value is estimated. Load average {load:.1f} at start, "
        f"{os.getloadavg()[0]:.1f} at end (the CPU may be shared with other jobs)."
    )


if __name__ == "__main__":
    main()
