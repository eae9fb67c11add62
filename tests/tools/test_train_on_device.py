"""tools/train_on_device.sh, the one device call that trains the toy models on a GPU, dry-run on the
CPU with a tiny world: every run trains, ends by its time limit, and comes back as at most 8 files of
at most 16 MiB that unpack into model folders `VideoMV` loads and samples from."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
NAMES = ("t2mv", "t2mv_wide", "i2mv")


@pytest.mark.slow
def test_dry_run_brings_back_loadable_models(tmp_path):
    out, runs = tmp_path / "out", tmp_path / "runs"
    env = dict(os.environ, OUT=str(out), RUNS=str(runs), LIMIT_S="1", PYTHON=sys.executable, OMP_NUM_THREADS="1")
    overrides = [f"data.root={tmp_path / 'world'}", "data.toy.num_objects=12", "data.toy.extra_train_objects=6",
                 "data.toy.split=[0.5,0.25,0.25]", "data.objects=train_plus6.txt", "dataloader.batch_size=1",
                 "dataloader.num_workers=1", "data.window=4", "max_steps=2"]
    proc = subprocess.run(["bash", str(REPO / "tools" / "train_on_device.sh"), *overrides], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = (out / "summary.txt").read_text()
    for name in NAMES:
        assert f"{name}: exit 0" in summary and f"{name}: packed" in summary, summary
    files = sorted(out.iterdir())
    assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files), [(f.name, f.stat().st_size) for f in files]
    with tarfile.open(out / "logs.tar.gz") as logs:
        assert {f"device_logs/{n}.metrics.jsonl" for n in NAMES} <= set(logs.getnames())

    from videomv.sampling.system import VideoMV

    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for name in NAMES:
        parts = sorted(out.glob(f"{name}.tar.*"))
        (tmp_path / f"{name}.tar").write_bytes(b"".join(p.read_bytes() for p in parts))
        with tarfile.open(tmp_path / f"{name}.tar") as tar:
            tar.extractall(unpacked, filter="data")
        model = VideoMV.from_pretrained(unpacked / name)
        assert model.pipeline.unet.dtype == torch.float32
        if name == "t2mv_wide":
            assert list(model.pipeline.unet.config.block_out_channels) == [48, 96, 96]
        cams = model.default_cameras(4)
        kwargs = dict(prompt="a red cube") if model.settings.task == "text" else dict(image=torch.rand(3, 64, 64))
        result = model(**kwargs, cameras=cams, num_inference_steps=2, three_d_aware=False, progress=False)
        assert result.images.shape == (4, 3, 64, 64) and torch.isfinite(result.images).all()
