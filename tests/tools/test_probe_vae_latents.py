"""tools/probe_vae_latents.py on a tiny model: one row per VAE and noise size, the noise-0 row the
bar's VAE round trip, the palette table, and usage errors for what is not a VAE folder."""

from __future__ import annotations

import pytest

from tiny_videomv import tiny_text_videomv
from videomv.sampling.system import VideoMV
from videomv.toy.bar import vae_round_trip_row
from videomv.toy.writer import build_dataset
from repo_scripts import load_script

def load_tool():
    return load_script("tools/probe_vae_latents.py")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("probe_vae")
    tiny_text_videomv().save_pretrained(tmp / "model")
    build_dataset(tmp / "toy", 4, 16, seed=3, workers=1, progress=False, split=(0.5, 0.25, 0.25))
    return tmp


def test_probe_prints_a_row_per_vae_and_noise(folders, capsys):
    vae = folders / "model" / "vae"
    load_tool().main(["--model", str(folders / "model"), "--vae", str(vae), str(vae), "--noise", "0", "0.5",
                      "--data-root", str(folders / "toy"), "--limit", "1"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(f"| {vae} |")]
    assert len(rows) == 2 * 2 + 2  # two VAEs x two sizes, then each VAE's palette row
    model = VideoMV.from_pretrained(folders / "model")
    from videomv.eval.view_sets import read_split

    expected = vae_round_trip_row(model, folders / "toy", read_split(folders / "toy", "test")[0])
    assert rows[0].split(" | ")[1:3] == ["0", f"{expected.psnr:.2f}"]
    assert rows[0] == rows[2] and rows[1] == rows[3]  # the same VAE twice scores the same
    assert rows[0] != rows[1]  # the noise changes the decoded views
    assert "| VAE | red | green | blue | yellow | orange | purple | white | black | smallest |" in out


def test_probe_refuses_what_is_not_a_vae_folder(folders, capsys):
    with pytest.raises(SystemExit):
        load_tool().main(["--model", str(folders / "model"), "--vae", str(folders / "toy")])
    assert "not a saved AutoencoderKL folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_tool().main(["--vae", str(folders / "model" / "vae"), "--noise", "-1"])
    assert "--noise" in capsys.readouterr().err
