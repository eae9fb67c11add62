"""tools/convert_release.py end to end on a tiny model: a release-format checkpoint and a diffusers
base folder in, a VideoMV folder out that `VideoMV.from_pretrained` and `scripts/sample.py` load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tiny_videomv import tiny_image_videomv, tiny_text_videomv
from videomv.convert import to_release_state_dict
from videomv.recon import Reconstructor
from videomv.sampling.parity import settings_for
from videomv.sampling.system import VideoMV
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[2]


def load_tool():
    return load_script("tools/convert_release.py")


def release_files(tmp_path: Path, system: VideoMV, task: str):
    """A diffusers base folder and a release checkpoint holding `system`'s UNet (release names,
    release camera frame) and a tiny reconstructor under lgm_big.*."""
    base = tmp_path / "base"
    system.pipeline.save_pretrained(base)
    unet = system.pipeline.unet
    state = to_release_state_dict(unet.state_dict(), dict(unet.config), task)
    torch.manual_seed(5)
    recon = Reconstructor("tiny")
    state.update({f"lgm_big.{k}": v for k, v in recon.state_dict().items()})
    state["lgm_big.lpips_loss.net.0.weight"] = torch.zeros(2)  # LGM's training loss network
    checkpoint = tmp_path / "release.pth"
    torch.save({"state_dict": state, "step": 1234}, checkpoint)
    return base, checkpoint, recon


@pytest.mark.parametrize("task", ["text", "image"])
def test_convert_tool_writes_a_loadable_folder(tmp_path, capsys, task):
    system = tiny_text_videomv(with_reconstructor=False) if task == "text" else tiny_image_videomv()
    base, checkpoint, recon = release_files(tmp_path, system, task)
    out = tmp_path / "converted"
    args = ["--task", task, "--checkpoint", checkpoint, "--base", base, "--out", out]
    if task == "image":
        args += ["--vae", base]  # the tiny base stands in for ModelScope-T2V's VAE
    assert load_tool().main(list(map(str, args))) == 0
    printed = capsys.readouterr().out
    assert "step 1234" in printed and "1 lgm_big.lpips_loss.* keys" in printed and "preset 'tiny'" in printed

    model = VideoMV.from_pretrained(out)
    original = system.pipeline.unet.state_dict()
    for key, value in model.pipeline.unet.state_dict().items():
        torch.testing.assert_close(value, original[key], rtol=0, atol=1e-6, msg=key)
    for key, value in model.reconstructor.state_dict().items():
        assert torch.equal(value, recon.state_dict()[key]), key
    config = model.reconstructor.config
    assert config.lgm_release_rotation and not config.rescale_cameras and config.fovy == 39.6
    assert config.cam_radius == model.settings.radius
    assert model.settings == settings_for(task, "release")  # videomv.json holds the release preset
    assert model.pipeline.scheduler.config.set_alpha_to_one is False  # last step: alphas_cumprod[0]
    report = json.loads((out / "conversion.json").read_text())
    assert report["ignored_keys"] == ["lgm_big.lpips_loss.net.0.weight"]


def test_convert_tool_names_bad_keys(tmp_path, capsys):
    system = tiny_text_videomv(with_reconstructor=False)
    base, checkpoint, _ = release_files(tmp_path, system, "text")
    data = torch.load(checkpoint, weights_only=True)
    data["state_dict"]["input_blocks.9.9.weight"] = torch.zeros(1)
    del data["state_dict"]["out.2.weight"]
    torch.save(data, checkpoint)
    code = load_tool().main(["--task", "text", "--checkpoint", str(checkpoint), "--base", str(base),
                             "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "input_blocks.9.9.weight" in err and "conv_out.weight" in err
    assert not (tmp_path / "out").exists()


def test_convert_tool_refuses_a_non_empty_out(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code = load_tool().main(["--task", "text", "--checkpoint", str(tmp_path / "none.pth"), "--base", str(tmp_path),
                             "--out", str(out)])
    assert code == 2 and "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"


def test_sample_script_runs_a_converted_model(tmp_path):
    system = tiny_text_videomv(with_reconstructor=False)
    base, checkpoint, _ = release_files(tmp_path, system, "text")
    out = tmp_path / "converted"
    assert load_tool().main(["--task", "text", "--checkpoint", str(checkpoint), "--base", str(base),
                             "--out", str(out)]) == 0
    settings = json.loads((out / "videomv.json").read_text())
    settings["resolution"] = 32  # the tiny VAE at the release's 256 would be slow here
    (out / "videomv.json").write_text(json.dumps(settings))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "sample.py"), "--model", str(out),
                             "--prompt", "a chair", "--steps", "2", "--num-views", "4", "--no-3d-aware",
                             "--out", str(tmp_path / "sample")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert any((tmp_path / "sample").iterdir())
