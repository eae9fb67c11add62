"""VideoMV end to end on a tiny random model: the Python API, folder round trip, and scripts/sample.py."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_videomv import RESOLUTION, tiny_text_videomv
from videomv.gaussians import load_ply
from videomv.geometry import orbit_cameras, save_trajectory
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_videomv")
    tiny_text_videomv().save_pretrained(path)
    return path


def test_plain_mode_equals_the_stage1_pipeline(model_dir):
    model = VideoMV.from_pretrained(model_dir)
    out = model(prompt="a red sphere", seed=3, three_d_aware=False, progress=False)
    ref = model.pipeline("a red sphere", cameras=orbit_cameras(24, 15, 2.0), num_inference_steps=5, guidance_scale=3.0,
                         seed=3, height=RESOLUTION, width=RESOLUTION, progress=False).images[0]
    assert out.images.shape == (24, 3, RESOLUTION, RESOLUTION)
    assert torch.equal(out.images, ref)
    assert out.aware_steps == []
    assert out.gaussians is not None and len(out.gaussians) == 4 * 32 * 32


def test_aware_mode_runs_the_schedule_and_changes_the_sample(model_dir):
    model = VideoMV.from_pretrained(model_dir)
    plain = model(prompt="a red sphere", seed=3, three_d_aware=False, progress=False)
    aware = model(prompt="a red sphere", seed=3, progress=False)
    assert aware.aware_steps == [2, 3, 4]  # 5 steps: skip 40 %, then every 20 %
    assert not torch.allclose(aware.images, plain.images)
    again = model(prompt="a red sphere", seed=3, progress=False)
    assert torch.equal(again.images, aware.images)  # seeded


def test_cameras_without_orthogonal_views_get_auxiliary_frames(model_dir):
    model = VideoMV.from_pretrained(model_dir)
    cams = orbit_cameras(6, 20, 2.0)
    out = model(prompt="a blue box", cameras=cams, seed=0, num_inference_steps=3, progress=False)
    assert out.images.shape[0] == 6 and torch.equal(out.cameras, cams)
    assert out.aware_steps == [1, 2]


def test_text_model_rejects_missing_prompt(model_dir):
    model = VideoMV.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="prompt"):
        model(prompt="  ")
    with pytest.raises(ValueError, match="prompt"):
        model(image=torch.rand(3, RESOLUTION, RESOLUTION))


def run_cli(*args):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "sample.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def load_script():
    spec = importlib.util.spec_from_file_location("sample_script", REPO / "scripts" / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_in_process(capsys, *args):
    """scripts/sample.py's main() in this process (fast path for argument errors): (exit code, stderr)."""
    try:
        code = load_script().main([str(a) for a in args])
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_sample_script_writes_everything(model_dir, tmp_path):
    out = tmp_path / "run"
    res = run_cli("--model", model_dir, "--prompt", "a red cube on top of a blue cylinder", "--steps", "3",
                  "--seed", "1", "--out", out)
    assert res.returncode == 0, res.stderr
    views = sorted((out / "views").glob("view_*.png"))
    assert len(views) == 24
    assert np.asarray(Image.open(views[0])).shape == (RESOLUTION, RESOLUTION, 3)
    grid = np.asarray(Image.open(out / "grid.png"))
    assert grid.shape == (4 * RESOLUTION, 6 * RESOLUTION, 3)
    assert (out / "orbit.mp4").exists() or (out / "orbit.gif").exists()
    assert len(load_ply(out / "gaussians.ply")) == 4 * 32 * 32
    cams = json.loads((out / "cameras.json").read_text())
    assert np.allclose(cams["cameras"], orbit_cameras(24, 15, 2.0).numpy(), atol=1e-6)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["seed"] == 1 and settings["num_inference_steps"] == 3 and settings["aware_steps_used"] == [1, 2]
    assert settings["prompt"] == "a red cube on top of a blue cylinder"


def test_sample_script_accepts_a_camera_file(model_dir, tmp_path):
    cam_file = tmp_path / "cams.json"
    cam_file.write_text(json.dumps([{"elevation": 10, "azimuth": a, "radius": 2.0} for a in range(0, 360, 45)]))
    out = tmp_path / "run"
    res = run_cli("--model", model_dir, "--prompt", "a cone", "--steps", "2", "--no-3d-aware", "--cameras",
                  cam_file, "--out", out)
    assert res.returncode == 0, res.stderr
    assert len(list((out / "views").glob("*.png"))) == 8
    assert json.loads((out / "settings.json").read_text())["three_d_aware"] is False


@pytest.mark.parametrize("case", ["empty_prompt", "unreadable_image", "non_square_image", "bad_camera_file",
                                  "bad_option_value", "unknown_option", "out_not_empty", "image_for_text_model"])
def test_sample_script_bad_input_exits_2_and_leaves_nothing(model_dir, tmp_path, case, capsys):
    out = tmp_path / "run"
    args = ["--model", model_dir, "--steps", "2", "--out", out]
    if case == "empty_prompt":
        args += ["--prompt", "   "]
    elif case == "unreadable_image":
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"not a png")
        args += ["--image", bad]
    elif case == "non_square_image":
        img = tmp_path / "wide.png"
        Image.new("RGB", (64, 32)).save(img)
        args += ["--image", img]
    elif case == "bad_camera_file":
        cams = tmp_path / "cams.json"
        cams.write_text("[[1, 2, 3]]")
        args += ["--prompt", "a cube", "--cameras", cams]
    elif case == "bad_option_value":
        args += ["--prompt", "a cube", "--elevation", "95"]
    elif case == "unknown_option":
        args += ["--prompt", "a cube", "--frobnicate"]
    elif case == "out_not_empty":
        out.mkdir()
        (out / "keep.txt").write_text("x")
        args += ["--prompt", "a cube"]
    elif case == "image_for_text_model":
        img = tmp_path / "ok.png"
        Image.new("RGBA", (32, 32)).save(img)
        args += ["--image", img]
    code, err = run_in_process(capsys, *args)
    assert code == 2, (code, err)
    assert "error" in err.lower()
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".run"))
    assert leftovers == []
    if case == "out_not_empty":
        assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    else:
        assert not out.exists()


def test_camera_file_round_trip_through_cli(model_dir, tmp_path):
    cams = orbit_cameras(8, 12, 2.0)
    save_trajectory(tmp_path / "cams.json", cams)
    out = tmp_path / "run"
    res = run_cli("--model", model_dir, "--prompt", "a torus", "--steps", "2", "--cameras", tmp_path / "cams.json",
                  "--out", out)
    assert res.returncode == 0, res.stderr
    assert np.allclose(json.loads((out / "cameras.json").read_text())["cameras"], cams.numpy(), atol=1e-6)


def test_sample_script_image_to_views(tmp_path):
    """--image: an RGBA file is composited on white and the image model generates 24 views."""
    from tiny_videomv import tiny_image_videomv

    model_dir = tmp_path / "i2mv"
    tiny_image_videomv(with_reconstructor=True).save_pretrained(model_dir)
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[12:36, 12:36] = (200, 30, 30, 255)  # a red square on a transparent background
    Image.fromarray(rgba).save(tmp_path / "object.png")
    out = tmp_path / "run"
    code = load_script().main(["--model", str(model_dir), "--image", str(tmp_path / "object.png"), "--out", str(out)])
    assert code == 0
    assert len(list((out / "views").glob("*.png"))) == 24 and (out / "gaussians.ply").exists()
    settings = json.loads((out / "settings.json").read_text())
    assert settings["task"] == "image" and settings["aware_steps_used"] == [1]


def test_main_command_on_the_embedded_model(tmp_path):
    """The README's main command (default model: the embedded toy text model), with few steps."""
    out = tmp_path / "run"
    res = run_cli("--prompt", "a red cube on top of a blue cylinder", "--steps", "5", "--out", out)
    assert res.returncode == 0, res.stderr
    settings = json.loads((out / "settings.json").read_text())
    assert settings["model"].endswith("data/embedded/t2mv") and settings["aware_steps_used"] == [2, 3, 4]
    views = sorted((out / "views").glob("view_*.png"))
    assert len(views) == 24
    size = json.loads((REPO / "data" / "embedded" / "t2mv" / "videomv.json").read_text())["resolution"]
    assert np.asarray(Image.open(views[0])).shape == (size, size, 3)
    assert len(load_ply(out / "gaussians.ply")) > 0
