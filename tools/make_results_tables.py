#!/usr/bin/env python
"""Run the toy-world evaluations and write their tables into docs/results.md.

    python tools/make_results_tables.py --data-root data/toy_world_64 --limit 16 --jobs 2

Table 1 (text -> views, consistency): ground-truth renders of the test split (upper bound),
VideoMV (base) = plain sampling, VideoMV = 3D-aware sampling, prompted with the test objects'
captions. Table 2 (image -> views vs ground truth): base vs 3D-aware, on each view subset. Every
evaluation is one run of scripts/eval_t2mv.py or scripts/eval_i2mv.py (in this process); their
outputs stay in --out and the exact commands are listed in the results page. The tables replace
the part of the page between the markers below (the whole page when it has none), so hand-written
sections around them stay. With --jobs N the evaluations run as N parallel processes, logging to
<out>/<run>.log.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUBSETS = ("all", "every3", "az45")
T1_COLUMNS = [("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"), ("clip", "CLIP ↑"),
              ("flow_rmse_f1", "flow RMSE f=1 ↓"), ("flow_rmse_f6", "flow RMSE f=6 ↓")]
T2_COLUMNS = [("psnr", "PSNR ↑"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"), ("flow_rmse_f1", "flow RMSE f=1 ↓")]
BEGIN, END = "<!-- results tables: begin -->", "<!-- results tables: end -->"  # the page's tables section


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", "--toy-root", dest="toy_root", type=Path, default=Path("data/toy_world_64"),
                   help="toy dataset folder")
    p.add_argument("--split", default="test")
    p.add_argument("--t2mv", type=Path, default=Path("data/embedded/t2mv"), help="text VideoMV folder")
    p.add_argument("--i2mv", type=Path, default=Path("data/embedded/i2mv"), help="image VideoMV folder")
    p.add_argument("--skip-i2mv", action="store_true", help="only Table 1")
    p.add_argument("--out", type=Path, default=Path("runs/results"), help="folder for all evaluation outputs (new or empty)")
    p.add_argument("--results", type=Path, default=REPO / "docs" / "results.md", help="the page to write")
    p.add_argument("--limit", type=int, default=16, help="test objects / prompts per evaluation")
    p.add_argument("--steps", type=int, default=None, help="DDIM steps (default: each model's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fit-iters", type=int, default=300)
    p.add_argument("--fit-gaussians", type=int, default=2000)
    p.add_argument("--fit-resolution", type=int, default=64)
    p.add_argument("--threads", type=int, default=None, help="passed on to the evaluation scripts")
    p.add_argument("--jobs", type=int, default=1, help="evaluations run at once (separate processes)")
    args = p.parse_args(argv)
    if args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if not (args.toy_root / f"{args.split}.txt").is_file():
        p.error(f"--data-root: {args.toy_root / (args.split + '.txt')} does not exist (build the toy world first)")
    for name in ("t2mv",) + (() if args.skip_i2mv else ("i2mv",)):
        if not (getattr(args, name) / "videomv.json").is_file():
            p.error(f"--{name}: {getattr(args, name)} is not a VideoMV folder (videomv.json missing)")
    if args.out.exists() and any(args.out.iterdir()):
        p.error(f"--out: {args.out} exists and is not empty")
    return args


def split_prompts(root: Path, split: str, limit: int) -> list[str]:
    """Captions of the first `limit` objects of the split, in split order."""
    from videomv.eval.view_sets import read_split

    captions = json.loads((root / "captions.json").read_text())
    ids = read_split(root, split)[:limit]
    missing = [i for i in ids if not captions.get(i)]
    if missing:
        raise ValueError(f"{root / 'captions.json'}: no caption for {missing[:3]}")
    return [captions[i] for i in ids]


def plan_runs(args) -> list[dict]:
    """The evaluations to run: {key, label, script, argv, out}."""
    out = args.out
    common = ["--limit", str(args.limit), "--seed", str(args.seed)]
    if args.threads:
        common += ["--threads", str(args.threads)]
    fit = ["--fit-iters", str(args.fit_iters), "--fit-gaussians", str(args.fit_gaussians),
           "--fit-resolution", str(args.fit_resolution)]
    steps = ["--steps", str(args.steps)] if args.steps else []
    prompts = out / "prompts.txt"
    runs = [
        dict(key="t1_gt", label="Ground-truth renders (upper bound)", script="eval_t2mv.py",
             argv=["--data-root", str(args.toy_root), "--split", args.split, *common, *fit, "--out", str(out / "t1_gt")]),
        dict(key="t1_base", label="VideoMV (base)", script="eval_t2mv.py",
             argv=["--prompts", str(prompts), "--model", str(args.t2mv), "--no-3d-aware", *steps, *common, *fit,
                   "--out", str(out / "t1_base")]),
        dict(key="t1_aware", label="VideoMV", script="eval_t2mv.py",
             argv=["--prompts", str(prompts), "--model", str(args.t2mv), *steps, *common, *fit,
                   "--out", str(out / "t1_aware")]),
    ]
    if not args.skip_i2mv:
        i2mv = ["--data-root", str(args.toy_root), "--split", args.split, "--model", str(args.i2mv), "--subset", *SUBSETS]
        runs += [
            dict(key="t2_base", label="VideoMV (base)", script="eval_i2mv.py",
                 argv=[*i2mv, "--no-3d-aware", *steps, *common, "--out", str(out / "t2_base")]),
            dict(key="t2_aware", label="VideoMV", script="eval_i2mv.py",
                 argv=[*i2mv, *steps, *common, "--out", str(out / "t2_aware")]),
        ]
    return runs


def run_script(script: str, argv: list[str]) -> None:
    """In this process."""
    spec = importlib.util.spec_from_file_location(Path(script).stem, REPO / "scripts" / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(argv)
    if code:
        raise RuntimeError(f"scripts/{script} exited with {code}")


def run_process(script: str, argv: list[str], log: Path) -> None:
    """In a child process, output to `log`."""
    with open(log, "w") as f:
        code = subprocess.run([sys.executable, str(REPO / "scripts" / script), *argv], stdout=f,
                              stderr=subprocess.STDOUT, cwd=REPO).returncode
    if code:
        raise RuntimeError(f"scripts/{script} exited with {code}; see {log}")


def run_all(runs: list[dict], jobs: int, out: Path) -> None:
    for run in runs:
        print(f"== {run['label']}: {command(run['script'], run['argv'])}", flush=True)
    if jobs == 1:
        for run in runs:
            run_script(run["script"], run["argv"])
        return
    with ThreadPoolExecutor(jobs) as pool:
        futures = [pool.submit(run_process, r["script"], r["argv"], out / f"{r['key']}.log") for r in runs]
        for run, future in zip(runs, futures):
            future.result()
            print(f"done: {run['key']} ({run['label']})", flush=True)


def replace_section(page: str, section: str) -> str:
    """`page` with the text between BEGIN and END replaced by `section` (all of it without markers)."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN not in page or END not in page:
        return block + "\n"
    head, rest = page.split(BEGIN, 1)
    return head + block + rest.split(END, 1)[1]


def mean_of(csv_path: Path) -> dict:
    from videomv.eval.report import read_csv

    rows = read_csv(csv_path)
    return {**rows[-1], "count": len(rows) - 1}


def summary_table(entries: list[tuple[str, dict]], columns) -> str:
    from videomv.eval.report import format_cell

    head = ["Method"] + [title for _, title in columns] + ["items"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for label, mean in entries:
        cells = [format_cell(mean.get(key)) for key, _ in columns]
        lines.append("| " + " | ".join([label, *cells, str(mean["count"])]) + " |")
    return "\n".join(lines)


def command(script: str, argv: list[str]) -> str:
    return " ".join(["python", f"scripts/{script}", *map(shlex.quote, argv)])


def results_page(args, runs: list[dict], tool_argv: list[str]) -> str:
    t1 = [r for r in runs if r["key"].startswith("t1")]
    t2 = [r for r in runs if r["key"].startswith("t2")]
    settings = json.loads((Path(t1[0]["out"]) / "table1_settings.json").read_text())
    lines = [
        f"Written by `{' '.join(['python', 'tools/make_results_tables.py', *map(shlex.quote, tool_argv)])}` "
        f"on {time.strftime('%Y-%m-%d %H:%M')}: the first {args.limit} objects of the `{args.split}` split of "
        f"`{args.toy_root}`, text model `{args.t2mv}`" + ("" if args.skip_i2mv else f", image model `{args.i2mv}`") + ".",
        f"Flow method: {settings.get('flow_method')}. Means over items; per-item rows are in each run's CSV.",
        "",
        "## Table 1: text -> multi-view consistency",
        "",
        "A Gaussian model is fitted to views 0, 2, ..., 22 and scored at views 1, 3, ..., 23 "
        f"({args.fit_gaussians} Gaussians, {args.fit_iters} iterations, {args.fit_resolution}² views). "
        "Prompts are the captions of the test objects.",
        "",
        summary_table([(r["label"], mean_of(Path(r["out"]) / "table1.csv")) for r in t1], T1_COLUMNS),
        "",
    ]
    if t2:
        lines += ["## Table 2: image -> multi-view against ground truth", "",
                  "Condition: view 0 of each test object on white; generated at the object's own orbit cameras.", ""]
        for subset in SUBSETS:
            lines += [f"Frames: `{subset}`", "",
                      summary_table([(r["label"], mean_of(Path(r["out"]) / f"table2_{subset}.csv")) for r in t2],
                                    T2_COLUMNS), ""]
    notes = settings.get("notes") or {}
    if notes:
        lines += ["## Tables 1 and 2: unavailable metrics", ""] + [f"- {k}: {v}" for k, v in notes.items()] + [""]
    lines += ["## Tables 1 and 2: commands", "", "```sh"]
    lines += [f"# {r['label']} -> {r['out']}\n{command(r['script'], r['argv'])}" for r in runs]
    lines += ["```", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    from videomv.io import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "prompts.txt", "\n".join(split_prompts(args.toy_root, args.split, args.limit)) + "\n")
    runs = plan_runs(args)
    for run in runs:
        run["out"] = run["argv"][run["argv"].index("--out") + 1]
    run_all(runs, args.jobs, args.out)
    page = args.results.read_text() if args.results.is_file() else ""
    atomic_write_text(args.results, replace_section(page, results_page(args, runs, argv)))
    print(f"-> {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
