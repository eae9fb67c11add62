"""tools/bench_gpu.py: the tiny CPU run of every section, the FLOP accounting, the budget and the
failure guard, and the paper-scale configs (meta device) against the release's parameter lists."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "bench_gpu.py"
KEY_LISTS = REPO / "tests" / "fixtures" / "release_keys"


def load_bench():
    return load_script("tools/bench_gpu.py")


bench = load_bench()


def numbers(row: dict) -> list[float]:
    return [v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--dtypes", "bf16", "--threads", "1",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


def test_tiny_run_has_every_section_with_numbers(tiny_results):
    results, stdout = tiny_results
    assert list(results["sections"]) == list(bench.SECTIONS)
    for name, section in results["sections"].items():
        assert section["status"] == "ok", (name, section.get("reason"))
        measured = [row for row in section["rows"] if "skipped" not in row]
        assert measured, name
        for row in measured:
            values = numbers(row)
            assert values and all(math.isfinite(v) and v >= 0 for v in values), (name, row)
        assert name in stdout  # the printed table
    assert results["environment"]["device"] == "cpu" and results["environment"]["tiny"] is True


def test_tiny_run_cases(tiny_results):
    sections = tiny_results[0]["sections"]
    cases = [row["case"] for row in sections["sample"]["rows"]]
    assert cases == [f"{task} {mode} bf16" for task in ("text", "image") for mode in ("plain", "both", "guided")]
    train = [row["case"] for row in sections["train"]["rows"]]
    assert len(train) == 4 and sum("checkpointing on" in c for c in train) == 2
    renders = {row["case"].split()[0] for row in sections["render"]["rows"] if "skipped" not in row}
    assert renders == {"torch"}
    skipped = {row["case"] for row in sections["render"]["rows"] if "skipped" in row}
    assert skipped == {"diff-gaussian-rasterization", "gsplat"}  # CUDA only
    ratios = [row["ratio"] for row in sections["diffusers"]["rows"]]
    assert len(ratios) == 2 and all(r > 0 for r in ratios)


def test_flop_counts_agree_between_the_pipeline_and_the_parts(tiny_results):
    """A plain sample counted through the whole pipeline (1- and 2-step runs) equals the sum of its
    parts counted on the meta device: steps x UNet step, decoding every view, the text encoder and
    the reconstruction that `VideoMV` runs on the final views."""
    sections = tiny_results[0]["sections"]
    parts = {row["case"]: row["tflop"] for row in sections["flops"]["rows"]}
    steps, views = bench.TINY.steps, bench.TINY.views
    expected = (steps * parts["text UNet step (CFG batch 2)"] + parts[f"VAE decode {views} views"]
                + parts["text encoder (2 prompts)"] + parts["LGM forward (4 views)"])
    assert parts[f"text sample, plain, {steps} steps"] == pytest.approx(expected, rel=1e-9)
    sample = {row["case"]: row for row in sections["sample"]["rows"]}
    assert sample["text plain bf16"]["tflop_per_sample"] == pytest.approx(expected, rel=1e-3)
    plain, both, guided = (sample[f"text {m} bf16"]["tflop_per_sample"] for m in ("plain", "both", "guided"))
    assert plain < guided < both
    # both branches reconstruct twice what `guided` reconstructs once
    assert both - plain == pytest.approx(2 * (guided - plain), rel=1e-3)


def test_budget_skips_and_a_failing_section_is_contained(tmp_path, monkeypatch):
    out = tmp_path / "b.json"
    results = bench.main(["--tiny", "--sections", "flops,peak", "--budget-s", "0", "--out", str(out)])
    assert {s["status"] for s in results["sections"].values()} == {"skipped"}
    assert json.loads(out.read_text())["sections"]["peak"]["status"] == "skipped"

    def broken(*args):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(bench, "section_flops", broken)
    results = bench.main(["--tiny", "--sections", "flops,peak", "--dtypes", "fp32", "--out", str(out)])
    assert results["sections"]["flops"]["status"] == "failed"
    assert "planted failure" in results["sections"]["flops"]["reason"]
    assert results["sections"]["peak"]["status"] == "ok"
    assert json.loads(out.read_text())["sections"]["flops"]["status"] == "failed"


def test_unknown_section_is_an_error_naming_the_flag(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--sections", "sample,warp"])
    assert "--sections" in capsys.readouterr().err


def release_parameter_count(name: str, skip: tuple[str, ...] = ()) -> int:
    total = 0
    for line in (KEY_LISTS / name).read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape = line.split("\t")
        if not key.startswith(skip):
            total += math.prod(ast.literal_eval(shape))
    return total


@pytest.mark.parametrize("cls,name", [("T2MVUNet", "videomv_release_t2v_unet_state_dict.tsv"),
                                      ("I2MVUNet", "videomv_release_i2v_unet_state_dict.tsv")])
def test_paper_scale_unets_have_the_release_parameter_count(cls, name):
    import videomv.models

    with torch.device("meta"):
        model = getattr(videomv.models, cls)(**bench.FULL.unet)
    assert sum(p.numel() for p in model.parameters()) == release_parameter_count(name)


def test_paper_scale_reconstructor_has_the_release_parameter_count():
    from videomv.recon import Reconstructor

    with torch.device("meta"):
        model = Reconstructor(bench.FULL.reconstructor)
    assert sum(p.numel() for p in model.parameters()) == release_parameter_count("lgm_big_state_dict.tsv",
                                                                                 skip=("lpips_loss.",))
