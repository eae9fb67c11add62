"""Two CPU processes (gloo DDP) through the real launcher: ranks see different batches and noise
yet end with identical weights; checkpoints hold one RNG state per process.

With accelerate 1.x, `accelerate launch --cpu --num_processes 2` starts several processes only via
MPI; torchrun-style CPU processes come from `--multi_gpu` with ACCELERATE_USE_CPU=true."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import TINY  # noqa: E402  (tests/ is on sys.path under pytest)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_cpu_run_stays_in_sync(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1", WANDB_MODE="offline")
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(free_port()),
        str(REPO / "scripts" / "train_mv.py"), "--config", str(REPO / "configs" / "toy_t2mv.yaml"),
        *TINY, f"data.root={tmp_path / 'world16'}", f"output_dir={out}", "max_steps=3", "checkpoint.every=2",
        "debug.dump_param_checksum=true", "time_limit_s=3600",  # process 0's clock is asked every step
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"debug_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # gradients were all-reduced every step
    assert ranks[0]["local_losses"] != ranks[1]["local_losses"]  # ...although each rank had its own data/noise
    assert len(ranks[0]["local_losses"]) == 3
    for step in ("step_000002", "step_000003"):
        files = {p.name for p in (out / "checkpoints" / step).iterdir()}
        assert {"rng_rank0.safetensors", "rng_rank1.safetensors", "model_unet.safetensors"} <= files
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]  # written once, by the main process
    mean = [(a + b) / 2 for a, b in zip(ranks[0]["local_losses"], ranks[1]["local_losses"])]
    assert [m["loss"] for m in metrics] == pytest.approx(mean, rel=1e-6)


@pytest.mark.slow
def test_a_stopped_process_is_named_after_the_timeout(tmp_path):
    """Two gloo processes started directly (so their pids are known); process 1 is stopped with
    SIGSTOP mid-run: process 0 gives up after distributed.timeout_s and names process 1."""
    import signal
    import time

    out = tmp_path / "run"
    port = str(free_port())
    procs = []
    for rank in range(2):
        env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", ACCELERATE_USE_CPU="true",
                   RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port, PYTHONPATH=str(REPO))
        cmd = [sys.executable, str(REPO / "scripts" / "train_mv.py"), "--config", str(REPO / "configs" / "toy_t2mv.yaml"),
               *TINY, f"data.root={tmp_path / 'world16'}", f"output_dir={out}", "max_steps=400",
               "checkpoint.every=1000", "distributed.timeout_s=4"]
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        deadline = time.monotonic() + 300
        while not (out / "metrics.jsonl").is_file() or len((out / "metrics.jsonl").read_text().splitlines()) < 2:
            assert all(p.poll() is None for p in procs), procs[0].communicate()[0][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(procs[1].pid, signal.SIGSTOP)
        stopped = time.monotonic()
        output, _ = procs[0].communicate(timeout=120)
        waited = time.monotonic() - stopped
    finally:
        os.kill(procs[1].pid, signal.SIGKILL)
        procs[1].wait(timeout=60)
    assert procs[0].returncode == 2, output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("error: process 0 of 2") and "process(es) 1 stopped answering" in last, last
    assert "distributed.timeout_s=4" in last and 3 < waited < 60
