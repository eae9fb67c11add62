"""tools/probe_cross_attention.py on a tiny text model: a table per timestep, one row per
cross-attention layer and the mean, shares summing to 1; usage errors for bad timesteps."""

from __future__ import annotations

import pytest

from tiny_videomv import tiny_text_videomv
from videomv.eval.cross_attention import cross_attention_layers
from videomv.toy.writer import build_dataset
from repo_scripts import load_script

def load_tool():
    return load_script("tools/probe_cross_attention.py")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe_attention")
    tiny_text_videomv(with_reconstructor=False).save_pretrained(tmp / "model")
    build_dataset(tmp / "toy", 4, 16, seed=3, workers=1, progress=False, split=(0.5, 0.25, 0.25))
    return tmp


def test_probe_prints_a_table_per_timestep(folders, capsys):
    load_tool().main(["--model", str(folders / "model"), "--data-root", str(folders / "toy"), "--limit", "1",
                      "--timesteps", "999", "10", "--threads", "1"])
    out = capsys.readouterr().out
    assert "\nt = 999\n" in out and "\nt = 10\n" in out
    layers = len(cross_attention_layers(tiny_text_videomv(with_reconstructor=False).pipeline.unet))
    rows = [line for line in out.splitlines() if line.startswith("| ") and "attn2" in line or "| all layers |" in line]
    assert len(rows) == 2 * (layers + 1)
    for row in rows:
        cells = row.strip("|").split(" | ")
        assert sum(float(c) for c in cells[1:5]) == pytest.approx(1.0, abs=2e-3)
    grounding = out.split("share of a word's attention on its part")[1]
    assert [line.split(" | ")[0] for line in grounding.splitlines() if line[:3] in ("| 9", "| 1")] == ["| 999", "| 10"]


def test_probe_refuses_bad_timesteps(folders, capsys):
    with pytest.raises(SystemExit):
        load_tool().main(["--model", str(folders / "model"), "--data-root", str(folders / "toy"), "--timesteps", "1000"])
    assert "--timesteps: expected values in [0, 999]" in capsys.readouterr().err
