"""The web demo's generation function, called directly on the embedded models (no browser)."""

import importlib.util
import json
import zipfile
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from PIL import Image

gr = pytest.importorskip("gradio", reason="the demo needs gradio (pip install -e '.[demo]')")

from videomv.demo import EMBEDDED_MODELS, Demo, build_app  # noqa: E402
from videomv.demo.app import mesh_exporter  # noqa: E402
from videomv.gaussians import load_ply  # noqa: E402
from videomv.geometry import orbit_angles  # noqa: E402
from videomv.sampling.export import to_uint8  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return Demo.from_folders(EMBEDDED_MODELS, out_root=tmp_path_factory.mktemp("demo_out"))


def square_image(path: Path, size=(48, 48), mode="RGBA") -> Path:
    image = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else (255, 255, 255))
    pixels = image.load()
    for y in range(size[1] // 4, 3 * size[1] // 4):
        for x in range(size[0] // 4, 3 * size[0] // 4):
            pixels[x, y] = (200, 30, 30, 255) if mode == "RGBA" else (200, 30, 30)
    image.save(path)
    return path


def test_text_generation_writes_every_output_and_matches_the_library(demo):
    result = demo.generate("text", prompt="a red cube", steps=3, guidance=4.0, seed=5, elevation=30.0,
                           three_d_aware=True, progress=False)
    names = {p.name for p in result.downloads}
    expected = {"orbit.mp4", "grid.png", "views.zip", "gaussians.ply", "cameras.json", "settings.json"}
    assert expected <= names and all(p.is_file() and p.parent == result.folder for p in result.downloads)
    assert [p.name for p in result.views] == [f"view_{i:03d}.png" for i in range(24)]
    with zipfile.ZipFile(result.folder / "views.zip") as archive:
        assert sorted(archive.namelist()) == [f"views/view_{i:03d}.png" for i in range(24)]
    assert len(imageio.mimread(result.video)) == 24

    # The 3D viewer shows the mesh when the library has the mesh step, else the Gaussians.
    if mesh_exporter() is None:
        assert result.model3d.name == "gaussians.ply"
    else:
        assert result.model3d.suffix == ".glb" and result.model3d in result.downloads
    assert len(load_ply(result.folder / "gaussians.ply")) == 4 * 32 * 32

    # Same numbers as the library called with the same settings: the demo only wraps it.
    model = demo.models["text"]
    direct = model(prompt="a red cube", cameras=model.default_cameras(elevation=30.0), num_inference_steps=3,
                   guidance_scale=4.0, seed=5, progress=False)
    views = np.stack([imageio.imread(p) for p in result.views])
    assert np.array_equal(views, to_uint8(direct.images))

    settings = json.loads((result.folder / "settings.json").read_text())
    assert (settings["num_inference_steps"], settings["seed"], settings["guidance_scale"]) == (3, 5, 4.0)
    assert settings["three_d_aware"] and settings["aware_steps_used"] == [1, 2]
    cameras = torch.tensor(json.loads((result.folder / "cameras.json").read_text())["cameras"])
    elevation, _, _ = orbit_angles(cameras)
    assert torch.allclose(elevation, torch.full((24,), 30.0), atol=1e-3)


def test_image_generation_from_a_file(demo, tmp_path):
    image = square_image(tmp_path / "object.png")
    result = demo.generate("image", image=str(image), steps=2, seed=1, three_d_aware=False, mesh=False,
                           progress=False)
    assert len(result.views) == 24 and imageio.imread(result.views[0]).shape == (64, 64, 3)
    settings = json.loads((result.folder / "settings.json").read_text())
    assert settings["task"] == "image" and settings["image"] == "object.png" and not settings["three_d_aware"]
    assert result.model3d.name == "gaussians.ply"  # no mesh asked for


@pytest.mark.parametrize("prompt", ["", "   ", None])
def test_empty_prompt_is_a_message(demo, prompt):
    with pytest.raises(gr.Error, match="Prompt: it is empty"):
        demo.generate("text", prompt=prompt, steps=2, progress=False)


def test_non_square_image_is_a_message_naming_the_file(demo, tmp_path):
    image = square_image(tmp_path / "wide.png", size=(80, 40))
    with pytest.raises(gr.Error, match=r"Image: image wide.png is 80x40; expected a square") as err:
        demo.generate("image", image=str(image), steps=2, progress=False)
    assert str(tmp_path) not in str(err.value)


def test_missing_or_unreadable_image_is_a_message(demo, tmp_path):
    with pytest.raises(gr.Error, match="Image: none given"):
        demo.generate("image", image=None, steps=2, progress=False)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(gr.Error, match="could not be read as an image"):
        demo.generate("image", image=str(bad), steps=2, progress=False)


@pytest.mark.parametrize("setting, value, message", [
    ("steps", 0, r"Steps: expected an integer in \[1, 200\], got 0"),
    ("steps", 2.5, "Steps: expected an integer"),
    ("guidance", float("nan"), "Guidance: expected a number"),
    ("seed", -1, "Seed: expected an integer"),
    ("elevation", 95, r"Elevation: expected a number in \[-89, 89\]"),
    ("steps", "many", "Steps: expected a number, got 'many'"),
])
def test_bad_settings_are_messages(demo, setting, value, message):
    kwargs = dict(prompt="a cube", steps=2, progress=False)
    kwargs[setting] = value
    with pytest.raises(gr.Error, match=message):
        demo.generate("text", **kwargs)


def test_a_task_without_a_model_is_a_message(tmp_path):
    text_only = Demo.from_folders(EMBEDDED_MODELS[:1], out_root=tmp_path)
    with pytest.raises(gr.Error, match="no image model in this demo"):
        text_only.generate("image", image="x.png")


def test_two_models_of_one_task_are_refused(tmp_path):
    with pytest.raises(ValueError, match="both text models"):
        Demo.from_folders([EMBEDDED_MODELS[0], EMBEDDED_MODELS[0]], out_root=tmp_path)


def test_the_page_has_a_tab_per_model_and_the_outputs(demo):
    app = build_app(demo)
    ids = {getattr(block, "elem_id", None) for block in app.blocks.values()}
    assert {"prompt", "image", "generate-text", "generate-image", "views", "video", "viewer", "downloads"} <= ids


def run_script(capsys, *args):
    """scripts/demo.py's main() in this process, for argument errors (it stops before serving)."""
    spec = importlib.util.spec_from_file_location("demo_script", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exit_info:
        module.main([str(a) for a in args])
    return exit_info.value.code, capsys.readouterr().err


def test_script_refuses_a_missing_or_non_model_folder(capsys, tmp_path):
    code, err = run_script(capsys, "--model", tmp_path / "absent")
    assert code == 2 and f"--model: {tmp_path / 'absent'} is not a folder" in err
    code, err = run_script(capsys, "--model", tmp_path)
    assert code == 2 and "--model:" in err and "videomv.json is missing" in err
    code, err = run_script(capsys, "--port", "0")
    assert code == 2 and "--port must be in [1, 65535]" in err


def test_a_failing_mesh_step_falls_back_to_the_gaussians(demo, monkeypatch):
    def failing_mesh(*args, **kwargs):
        raise ValueError("no surface found")

    monkeypatch.setattr("videomv.demo.app.mesh_exporter", lambda: failing_mesh)
    with pytest.warns(UserWarning, match="The mesh step failed, showing the Gaussians instead: no surface found"):
        result = demo.generate("text", prompt="a cube", steps=1, three_d_aware=False, progress=False)
    assert result.model3d.name == "gaussians.ply" and not any(p.suffix == ".glb" for p in result.downloads)
