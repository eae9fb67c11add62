"""What a run folder goes through between runs: a fresh run refuses another run's folder unless
told to overwrite, ``resume=latest`` with nothing to resume says so, a damaged newest checkpoint
falls back to the one before (with a warning), leftovers of a kill are cleaned, a kill before the
first checkpoint does not log steps twice, and unreadable data items are left out and reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_train import run as run_tiny  # noqa: E402  (tests/ is on sys.path under pytest)
from videomv.train.checkpoint import CheckpointError
from videomv.train.engine import OutputDirInUseError


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toy") / "world16"


def steps_logged(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_fresh_run_refuses_a_used_folder_unless_overwrite(tmp_path, toy_root):
    out = tmp_path / "run"
    first = run_tiny(out, toy_root, "max_steps=3", "checkpoint.every=2")
    with pytest.raises(OutputDirInUseError, match=r"holds another run \(checkpoints/, metrics.jsonl\).*overwrite=true"):
        run_tiny(out, toy_root, "max_steps=2")
    assert steps_logged(out) == [1, 2, 3]  # the refused run changed nothing
    (out / "notes.txt").write_text("kept")  # not a run output
    second = run_tiny(out, toy_root, "max_steps=2", "checkpoint.every=1", "overwrite=true", "ema.enabled=false")
    assert steps_logged(out) == [1, 2] and (out / "notes.txt").read_text() == "kept"
    assert not list(out.glob("ema_*.safetensors"))  # the earlier run's EMA export went with it
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    assert [h["loss"] for h in second["history"]] == [h["loss"] for h in first["history"][:2]]  # same seed
    assert (out / "final" / "model_index.json").is_file()


def test_resume_latest_without_checkpoint_says_so_and_auto_starts_fresh(tmp_path, toy_root):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="resume=latest: no checkpoint to resume.*resume=auto"):
        run_tiny(out, toy_root, "max_steps=2", "resume=latest")
    # Killed before its first checkpoint: two steps logged, the second cut short, no checkpoint.
    out.mkdir(exist_ok=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    with pytest.warns(UserWarning, match="unreadable line"):
        summary = run_tiny(out, toy_root, "max_steps=3", "checkpoint.every=5", "resume=auto")
    assert [h["step"] for h in summary["history"]] == [1, 2, 3]
    assert steps_logged(out) == [1, 2, 3]  # step 1 once, not twice
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[0])["loss"] == summary["history"][0]["loss"]


def test_damaged_latest_checkpoint_falls_back_and_leftovers_are_cleaned(tmp_path, toy_root):
    full = tmp_path / "full"
    reference = run_tiny(full, toy_root, "max_steps=6", "checkpoint.every=2", "checkpoint.keep_last=3")
    part = tmp_path / "part"
    shutil.copytree(full, part)
    ckpts = part / "checkpoints"
    model = ckpts / "step_000006" / "model_unet.safetensors"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # the newest is damaged
    (ckpts / ".tmp-step_000008").mkdir()  # a save killed half-way
    (ckpts / ".old-step_000001").mkdir()  # pruning killed half-way (new layout)
    (ckpts / "step_000000").mkdir()  # pruning killed half-way (a step folder without its state)
    with pytest.warns(UserWarning, match=r"step_000006.*cannot be read.*trying the previous checkpoint"):
        resumed = run_tiny(part, toy_root, "max_steps=6", "checkpoint.every=2", "checkpoint.keep_last=3",
                           "resume=latest")
    assert [h["step"] for h in resumed["history"]] == [5, 6]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in reference["history"][4:]]
    assert sorted(p.name for p in ckpts.iterdir()) == ["damaged-step_000006", "step_000002", "step_000004",
                                                       "step_000006"]
    a = load_file(str(full / "checkpoints" / "step_000006" / "model_unet.safetensors"))
    b = load_file(str(ckpts / "step_000006" / "model_unet.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    # An explicitly named damaged checkpoint is an error, not a fallback.
    with pytest.raises(CheckpointError, match="cannot be read"):
        run_tiny(tmp_path / "other", toy_root, "max_steps=7", f"resume={ckpts / 'damaged-step_000006'}")


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_items_are_left_out_of_the_latent_cache_and_reported(tmp_path, toy_root, workers):
    run_tiny(tmp_path / "build", toy_root, "max_steps=1")  # builds the toy world
    world = tmp_path / "world"
    shutil.copytree(toy_root, world)
    objects = [line for name in ("train.txt", "val.txt", "test.txt") for line in (world / name).read_text().split()]
    (world / "all.txt").write_text("\n".join(objects) + "\n")
    bad = objects[1]
    (world / bad / "campos_512_v4" / "00005" / "00005.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    summary = run_tiny(out, world, "max_steps=2", "data.objects=all.txt", "data.cache_latents=true",
                       f"dataloader.num_workers={workers}")
    from safetensors import safe_open

    with safe_open(str(out / "latent_cache.safetensors"), "pt") as f:
        meta = f.metadata()
        assert f.get_tensor("mean").shape[0] == len(objects) - 1
    cached = json.loads(meta["object_ids"])
    assert sorted(cached) == sorted(o for o in objects if o != bad)  # each once, no stand-in for the bad one
    report = json.loads((out / "skipped.json").read_text())
    assert [(r["source"], r["id"]) for r in report] == [("latents", bad)]
    assert "cannot read image" in report[0]["reason"] and "00005" in report[0]["reason"]
    assert summary["skipped_items"] == report


def test_stop_at_ends_early_on_the_full_schedule_and_resumes(tmp_path, toy_root):
    schedule = ["max_steps=4", "lr_scheduler.name=cosine", "lr_scheduler.warmup_steps=1", "checkpoint.every=10"]
    whole = run_tiny(tmp_path / "whole", toy_root, *schedule)
    part = tmp_path / "part"
    first = run_tiny(part, toy_root, *schedule, "stop_at=2")
    assert [h["step"] for h in first["history"]] == [1, 2] and (part / "final" / "model_index.json").is_file()
    assert [h["lr"] for h in first["history"]] == [h["lr"] for h in whole["history"][:2]]  # the 4-step cosine
    rest = run_tiny(part, toy_root, *schedule, "resume=latest")
    assert [h["step"] for h in rest["history"]] == [3, 4]
    assert first["history"] + rest["history"] == whole["history"]


def test_time_limit_ends_the_run_with_a_checkpoint_and_an_export(tmp_path, toy_root):
    out = tmp_path / "timed"
    summary = run_tiny(out, toy_root, "max_steps=50", "checkpoint.every=100", "time_limit_s=1e-6")
    assert [h["step"] for h in summary["history"]] == [1]  # the limit passed during the first step
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001"]
    assert (out / "final" / "model_index.json").is_file()
    more = run_tiny(out, toy_root, "max_steps=50", "checkpoint.every=100", "time_limit_s=1e-6", "resume=latest")
    assert [h["step"] for h in more["history"]] == [2]  # each run gets its own time
    with pytest.raises(ValueError, match="time_limit_s.*a number of seconds > 0"):
        run_tiny(tmp_path / "bad", toy_root, "max_steps=2", "time_limit_s=0")
