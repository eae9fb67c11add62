"""Exact resume after a real kill: a training process started as the README starts it (the shipped
toy config, latent cache and EMA on, scaled tiny) is SIGKILLed by pid mid-run, resumed with
``resume=latest`` in the same output folder, and must log every loss and end with weights equal bit
for bit to an uninterrupted run. Stage 1 (text -> MV) and stage 2 (reconstructor on a generator's
single-step views, random views supervised). The uninterrupted and the resumed runs run in this
process (one thread, as the script under OMP_NUM_THREADS=1) to keep the test short."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from accelerate.state import AcceleratorState

from test_train import TINY  # noqa: E402  (tests/ is on sys.path under pytest)
from videomv.train.config import load_config
from videomv.train.engine import train
from videomv.train.mv import MultiViewTask
from videomv.train.recon import ReconstructorTask

REPO = Path(__file__).resolve().parents[2]

from videomv.toy import build_configured_world


def start(script: str, config: str, out: Path, *overrides: str) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), WANDB_MODE="offline")
    cmd = [sys.executable, str(REPO / "scripts" / script), "--config", str(REPO / "configs" / config),
           *overrides, f"output_dir={out}"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    return output


def logged_steps(out: Path) -> int:
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum(1 for line in lines if line.endswith("}"))


def kill_after(proc: subprocess.Popen, out: Path, steps: int) -> None:
    """SIGKILL the process as soon as it has logged `steps` steps (it must still be running)."""
    deadline = time.monotonic() + 300
    while logged_steps(out) < steps:
        assert proc.poll() is None, f"the run ended before step {steps}: {proc.communicate()[0][-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(full: Path, resumed: Path, step: int, names: list[str]) -> None:
    a, b = records(full), records(resumed)
    assert [r["step"] for r in b] == list(range(1, step + 1))  # every step once, none twice
    assert a == b  # every logged number, bit for bit (JSON floats round-trip exactly)
    folder = f"checkpoints/step_{step:06d}"
    for name in names:
        x, y = load_file(str(full / folder / name)), load_file(str(resumed / folder / name))
        assert x.keys() == y.keys()
        for k in x:
            assert torch.equal(x[k], y[k]), (name, k)


def run_here(task, config: str, out: Path, *overrides: str) -> dict:
    AcceleratorState._reset_state(True)
    try:
        cfg = load_config(REPO / "configs" / config, [*overrides, f"output_dir={out}"], task.schema)
        return train(cfg, task, prepare=build_configured_world)
    finally:
        AcceleratorState._reset_state(True)


def kill_and_resume(tmp_path: Path, task, script: str, config: str, overrides: list[str], kill_at: int, last: int,
                    names: list[str]) -> tuple[Path, Path]:
    full, part = tmp_path / "full", tmp_path / "part"
    run_here(task, config, full, *overrides)
    kill_after(start(script, config, part, *overrides), part, kill_at)
    assert not (part / "final").exists() and not (part / "reconstructor").exists()
    assert (part / "checkpoints").is_dir()
    with open(part / "metrics.jsonl", "a") as f:  # as if the kill had cut a line short
        f.write('{"step": 99, "lo')
    with pytest.warns(UserWarning, match="unreadable line"):
        summary = run_here(task, config, part, *overrides, "resume=latest")
    assert summary["history"][0]["step"] > 1
    assert_same_run(full, part, last, names)
    return full, part


@pytest.mark.slow
def test_stage1_kill_and_resume_is_exact(tmp_path):
    world = tmp_path / "world16"
    overrides = [*TINY, f"data.root={world}", "max_steps=8", "checkpoint.every=3", "checkpoint.keep_last=2",
                 "lr_scheduler.name=cosine", "lr_scheduler.warmup_steps=2"]
    cfg_text = (REPO / "configs" / "toy_t2mv.yaml").read_text()
    assert "cache_latents: true" in cfg_text and "enabled: true" in cfg_text  # the shipped settings kept
    full, part = kill_and_resume(tmp_path, MultiViewTask, "train_mv.py", "toy_t2mv.yaml", overrides, kill_at=4, last=8,
                                 names=["model_unet.safetensors", "model_text_encoder.safetensors",
                                        "ema_unet.safetensors", "optimizer.safetensors"])
    assert (part / "latent_cache.safetensors").is_file()  # the resumed run read the cache back from disk
    for name in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        x, y = load_file(str(full / "final" / name)), load_file(str(part / "final" / name))
        assert all(torch.equal(x[k], y[k]) for k in x), name


@pytest.mark.slow
def test_stage2_kill_and_resume_is_exact(tmp_path):
    from tiny_videomv import tiny_text_videomv

    generator = tmp_path / "generator"
    tiny_text_videomv(with_reconstructor=False).pipeline.save_pretrained(generator)
    world = tmp_path / "world32"
    overrides = [f"data.root={world}", "data.toy.num_objects=4", "data.toy.resolution=32", "data.toy.workers=1",
                 "data.toy.split=[0.5,0.25,0.25]", "data.resolution=32", "logging.trackers=[]", "validation.every=0",
                 "dataloader.batch_size=1", "loss.views=3", "inputs.views=random", "inputs.source=generator",
                 f"generator.path={generator}", "max_steps=5", "checkpoint.every=2", "lr_scheduler.warmup_steps=1"]
    kill_and_resume(tmp_path, ReconstructorTask, "train_recon.py", "toy_recon.yaml", overrides, kill_at=3, last=5,
                    names=["model_reconstructor.safetensors", "optimizer.safetensors", "rng_rank0.safetensors"])
