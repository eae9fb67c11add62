"""VideoMV end to end on a tiny random model: the Python API, folder round trip, and scripts/sample.py."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tiny_videomv import RESOLUTION, tiny_text_videomv
from videomv.gaussians import load_ply
from videomv.geometry import orbit_cameras, save_trajectory
from videomv.sampling.system import VideoMV, VideoMVSettings
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[2]


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


def load_sample_script():
    return load_script("scripts/sample.py")


def run_in_process(capsys, *args):
    """scripts/sample.py's main() in this process (fast path for argument errors): (exit code, stderr)."""
    try:
        code = load_sample_script().main([str(a) for a in args])
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


def test_sample_script_runs_dpmsolver_at_its_own_step_count(model_dir, tmp_path):
    out = tmp_path / "run"
    res = run_cli("--model", model_dir, "--prompt", "a cone", "--sampler", "dpmsolver++", "--no-3d-aware",
                  "--num-views", "4", "--out", out)
    assert res.returncode == 0, res.stderr
    settings = json.loads((out / "settings.json").read_text())
    assert settings["sampler"] == "dpmsolver++" and settings["num_inference_steps"] == 20  # not the model's DDIM 50
    with pytest.raises(ValueError, match=r"sampler must be one of \['ddim', 'dpmsolver\+\+'\], got 'euler'"):
        VideoMVSettings(sampler="euler")


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
    code = load_sample_script().main(["--model", str(model_dir), "--image", str(tmp_path / "object.png"), "--out", str(out)])
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


# ---------------------------------------------------------------------------------------------- #
# Checked before the model loads: exit 2, one line, nothing written
# ---------------------------------------------------------------------------------------------- #


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def no_model_load(monkeypatch):
    """Loading weights fails the test: these inputs must be refused before."""
    def refuse(cls, *args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(VideoMV, "from_pretrained", classmethod(refuse))


@pytest.fixture
def settings_only(model_dir, tmp_path):
    """A model folder holding only videomv.json: what the checks read; loading it would fail."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(model_dir / "videomv.json", folder / "videomv.json")
    shutil.copytree(model_dir / "scheduler", folder / "scheduler")
    return folder


def write_cameras(path: Path, cameras) -> Path:
    path.write_text(json.dumps(cameras))
    return path


@pytest.mark.parametrize("case,args,match", [
    ("camera_at_origin", ["--cameras", "{cams}"], "camera 0 is at the object centre"),
    ("camera_looking_away", ["--cameras", "{cams}"], "camera 1 looks 180 deg away"),
    ("degenerate_camera", ["--cameras", "{cams}"], "orthonormal"),
    ("nested_camera_file", ["--cameras", "{cams}"], "nests deeper than 8 levels"),
    ("too_many_cameras", ["--cameras", "{cams}"], "holds 97 cameras; at most 96"),
    ("too_many_views", ["--num-views", "97"], r"--num-views must be in \[4, 96\]"),
    ("tiny_radius", ["--radius", "1e-9"], "--radius must be at least 0.01"),
    ("unknown_device", ["--device", "tpu"], "--device: unknown device 'tpu'"),
    ("cuda_without_cuda", ["--device", "cuda"], "CUDA is not available here"),
    ("out_in_proc", ["--out", "/proc/videomv-test/run"], "--out: cannot write in /proc"),
    ("out_under_a_file", ["--out", "{tmp}/file.txt/run"], "file.txt is not a folder"),
    ("out_dangling_link", ["--out", "{tmp}/link"], "is a symbolic link to .* which does not exist"),
    ("out_read_only_parent", ["--out", "{tmp}/ro/run"], "--out: cannot write in .*ro"),
    ("zero_threads", ["--threads", "0"], "--threads must be at least 1"),
    # "leading" spacing with offset 1 reaches timestep 1000 at 1000 steps
    ("steps_past_the_schedule", ["--steps", "1000"], "--steps 1000: .* outside \\[0, 999\\] .*; try 998 or 999"),
    ("model_without_settings", ["--model", "{tmp}"], "is not a VideoMV model folder"),
])
def test_bad_input_is_refused_before_the_model_loads(settings_only, tmp_path, capsys, no_model_load, case, args,
                                                     match):
    if case == "cuda_without_cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    if case == "out_read_only_parent" and os.geteuid() == 0:
        pytest.skip("permissions do not stop root")
    cams = tmp_path / "cams.json"
    good = orbit_cameras(4, 15, 2.0)
    if case == "camera_at_origin":
        write_cameras(cams, [torch.eye(4).tolist()] + good.tolist())
    elif case == "camera_looking_away":
        away = good[1].clone()
        away[:3, :3] = away[:3, :3] @ torch.diag(torch.tensor([-1.0, 1.0, -1.0]))  # turned round its y axis
        write_cameras(cams, [good[0].tolist(), away.tolist()])
    elif case == "degenerate_camera":
        write_cameras(cams, [[[1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]])
    elif case == "nested_camera_file":
        cams.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "too_many_cameras":
        write_cameras(cams, [{"elevation": 10, "azimuth": a * 3.0, "radius": 2} for a in range(97)])
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "missing")
    (tmp_path / "ro").mkdir(mode=0o555)
    before = tree(tmp_path)
    argv = ["--model", settings_only, "--prompt", "a cube", "--out", tmp_path / "run"]
    argv += [a.format(cams=cams, tmp=tmp_path) for a in args]
    code, err = run_in_process(capsys, *argv)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sample.py: error: "), err
    assert __import__("re").search(match, lines[0]), lines[0]
    assert tree(tmp_path) == before


def test_a_step_count_the_embedded_scheduler_cannot_give_is_refused(tmp_path, capsys, no_model_load):
    # "trailing" spacing at 61 steps: 62 timesteps, the last -1 (it ran, reading alphas_cumprod[-1])
    code, err = run_in_process(capsys, "--prompt", "a cube", "--steps", "61", "--out", tmp_path / "run")
    assert code == 2 and "--steps 61: the scheduler's trailing spacing" in err and "try 60 or 62" in err, err
    assert list(tmp_path.iterdir()) == []


def test_bad_image_is_refused_before_the_model_loads(model_dir, tmp_path, capsys, no_model_load):
    folder = tmp_path / "model"
    folder.mkdir()
    settings = json.loads((model_dir / "videomv.json").read_text())
    (folder / "videomv.json").write_text(json.dumps({**settings, "task": "image"}))
    shutil.copytree(model_dir / "scheduler", folder / "scheduler")
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    for image, match in [(tmp_path / "bad.png", "could not be read as an image"),
                         (tmp_path / "absent.png", "does not exist"), (tmp_path, "could not be read")]:
        before = tree(tmp_path)
        code, err = run_in_process(capsys, "--model", folder, "--image", image, "--out", tmp_path / "run")
        assert code == 2 and match in err and len(err.strip().splitlines()) == 1, err
        assert tree(tmp_path) == before


def test_output_honours_the_umask_and_a_link_to_an_empty_folder(model_dir, tmp_path, capsys):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    old = os.umask(0o027)
    try:
        code, err = run_in_process(capsys, "--model", model_dir, "--prompt", "a cube", "--steps", "1",
                                   "--no-3d-aware", "--num-views", "4", "--out", tmp_path / "link")
    finally:
        os.umask(old)
    assert code == 0, err
    target = tmp_path / "target"
    assert (tmp_path / "link").resolve() == target and len(list((target / "views").glob("*.png"))) == 4
    assert stat.S_IMODE(target.stat().st_mode) == 0o750
    for name in ("gaussians.ply", "settings.json", "grid.png", "views/view_000.png"):
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o640, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]


# ---------------------------------------------------------------------------------------------- #
# Warnings: accepted, but probably not what was meant
# ---------------------------------------------------------------------------------------------- #


def test_a_prompt_longer_than_the_context_is_reported(model_dir, capsys):
    script = load_sample_script()
    model = VideoMV.from_pretrained(model_dir)
    assert model.pipeline.tokenizer.model_max_length == 77
    capsys.readouterr()
    for words, warned in ((75, False), (76, True), (400, True)):
        args = script.parse_args(["--prompt", " ".join(["cube"] * words)])
        script.input_warnings(args, model, None)
        err = capsys.readouterr().err
        if warned:
            assert err.startswith(f"warning: --prompt is {words} tokens long; the text encoder reads the first 75 ")
            assert '"...cube cube cube cube cube cube")' in err and len(err.splitlines()) == 1
        else:
            assert err == ""


def test_an_image_whose_border_is_not_the_background_is_reported(tmp_path, capsys):
    from tiny_videomv import tiny_image_videomv

    from videomv.sampling.export import load_condition_image

    script = load_sample_script()
    model = tiny_image_videomv()
    capsys.readouterr()
    args = script.parse_args(["--image", str(tmp_path / "x.png")])
    photo = np.full((48, 48, 3), (90, 120, 60), dtype=np.uint8)  # an object on a green backdrop
    photo[12:36, 12:36] = (200, 30, 30)
    on_white = photo.copy()
    on_white[photo[..., 1] == 120] = 255
    cut_out = np.concatenate([photo, np.full((48, 48, 1), 255, np.uint8)], axis=-1)
    cut_out[photo[..., 1] == 120, 3] = 0  # the backdrop made transparent
    for name, array, warned in (("photo", photo, True), ("on_white", on_white, False), ("cut_out", cut_out, False)):
        Image.fromarray(array).save(tmp_path / f"{name}.png")
        script.input_warnings(args, model, load_condition_image(tmp_path / f"{name}.png", RESOLUTION))
        err = capsys.readouterr().err
        assert ("its border is not the background (white)" in err) == warned, (name, err)


# ---------------------------------------------------------------------------------------------- #
# Interrupt, help
# ---------------------------------------------------------------------------------------------- #


def test_ctrl_c_while_sampling_says_one_line_and_writes_nothing(model_dir, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "sample.py"), "--model", str(model_dir),
                             "--prompt", "a cube", "--steps", "999", "--no-3d-aware", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # a test run started in the background inherits SIGINT ignored; Ctrl-C is what is tested
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while "denoising" not in seen:  # the progress bar: sampling has started
        chunk = proc.stderr.read(1)
        assert chunk, f"the script ended before sampling: {seen}"
        seen += chunk
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert (seen + stderr).rstrip().splitlines()[-1] == "interrupted, nothing written"
    assert "Traceback" not in stderr and stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_help_names_the_view_limit_and_answers_without_torch():
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "scripts" / "sample.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0
    assert "4 to 96" in res.stdout and "at most 96" in res.stdout and "--threads" in res.stdout
    imported = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "json" in imported and not imported & {"torch", "diffusers", "numpy"}
    assert time.perf_counter() - start < 30  # generous: the point is the imports above
