"""Meshes -> Blender renders in the published G-Objaverse layout, checked against the toy world's
analytic renderer (an independent renderer) at the cameras the files store: an end-to-end check of
the camera and axis conventions. Skipped without Blender as a Python module (pip install bpy).

Blender runs in its own process (the tool), as it must: importing diffusers into a process that
has loaded bpy crashes it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

if importlib.util.find_spec("bpy") is None:  # found, not imported: see the module docstring
    pytest.skip("Blender as a Python module (pip install bpy, Python 3.11) is not installed", allow_module_level=True)
trimesh = pytest.importorskip("trimesh")

from videomv.data import GObjaverseDataset  # noqa: E402
from videomv.toy import world  # noqa: E402
from repo_scripts import load_script  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RES = 64


def _script(folder: str, name: str):
    return load_script(f"{folder}/{name}")


def _render(argv: list[str]) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "tools" / "render_objects.py"), *argv], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _file_frame(mesh):
    """Scale 2 and an offset, so the renderer's unit-cube normalisation has work to do."""
    return mesh.apply_scale(2.0).apply_translation((1.0, -2.0, 3.0))


def _meshes(folder: Path) -> dict[str, world.ToyObject]:
    """Mesh files of shapes the toy world can draw, and those shapes in the unit-cube frame."""
    folder.mkdir(parents=True)
    upright = trimesh.transformations.rotation_matrix(-np.pi / 2, (1, 0, 0))  # trimesh's z axis -> +y
    _file_frame(trimesh.creation.icosphere(subdivisions=4, radius=1.0)).export(folder / "ball.glb")
    _file_frame(trimesh.creation.cylinder(radius=0.5, height=2.0, sections=96, transform=upright)).export(
        folder / "post.ply")
    textured = trimesh.creation.box(extents=(2.0, 2.0, 2.0))
    uv = np.random.default_rng(0).random((len(textured.vertices), 2))
    image = Image.fromarray((np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8))
    textured.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    _file_frame(textured).export(folder / "crate.glb")
    pair = trimesh.util.concatenate([trimesh.creation.box(extents=(1, 1, 1)).apply_translation((-0.5, -0.5, -0.2)),
                                     trimesh.creation.icosphere(subdivisions=4, radius=0.5).apply_translation((0.5, 0.5, 0.2))])
    _file_frame(pair).export(folder / "pair.obj")
    (folder / "broken.glb").write_bytes(b"glTF not really")
    # a Google Scanned Objects item: meshes/model.obj + model.mtl, the texture in materials/textures/
    gso = _file_frame(trimesh.creation.box(extents=(2.0, 2.0, 2.0)))
    gso.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    text, files = trimesh.exchange.obj.export_obj(gso, include_texture=True, return_texture=True, mtl_name="model.mtl")
    (folder / "Tin_Box" / "meshes").mkdir(parents=True)
    (folder / "Tin_Box" / "materials" / "textures").mkdir(parents=True)
    (folder / "Tin_Box" / "meshes" / "model.obj").write_text(text)
    mtl = files["model.mtl"].decode().replace("map_Kd material_0.png", "map_Kd texture.png")
    (folder / "Tin_Box" / "meshes" / "model.mtl").write_text(mtl)
    (folder / "Tin_Box" / "materials" / "textures" / "texture.png").write_bytes(files["material_0.png"])

    def toy(*prims):
        return world.ToyObject(recipe=("single", ()), caption="", primitives=list(prims), elevation=0.0)

    return {
        "ball": toy(world.Primitive("sphere", (0.5,), (0.0, 0.0, 0.0), 0.0, "red")),
        "post": toy(world.Primitive("cylinder", (0.25, 0.5), (0.0, 0.0, 0.0), 0.0, "red")),
        "crate": toy(world.Primitive("cube", (0.5,), (0.0, 0.0, 0.0), 0.0, "red")),
        "Tin_Box": toy(world.Primitive("cube", (0.5,), (0.0, 0.0, 0.0), 0.0, "red")),
        # box spans x [-0.5, 0], y [-0.5, 0], z [-0.35, 0.15]; sphere x [0, 0.5], y [0, 0.5], z [-0.15, 0.35]
        "pair": toy(world.Primitive("cube", (0.25,), (-0.25, -0.25, -0.1), 0.0, "red"),
                    world.Primitive("sphere", (0.25,), (0.25, 0.25, 0.1), 0.0, "red")),
    }


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("render")
    shapes = _meshes(tmp / "meshes")
    out = tmp / "root"
    argv = ["--meshes", str(tmp / "meshes"), "--out", str(out), "--num-views", "24", "--resolution", str(RES),
            "--elevation-range", "5", "30", "--seed", "0", "--split", "0", "0", "1", "--threads", "1"]
    printed = _render(argv)
    assert "5 rendered, 0 already there, 1 skipped" in printed and "skipped broken" in printed
    return tmp, out, shapes, argv


def test_blender_silhouettes_match_the_analytic_renderer(rendered):
    _, out, shapes, _ = rendered
    ds = GObjaverseDataset(out, objects=[f"0/{n}" for n in shapes], resolution=RES)
    ious = {}
    for i, (name, shape) in enumerate(shapes.items()):
        item = ds[i]
        assert item["object_id"] == f"0/{name}"
        truth = world.render_object(shape, item["cameras"], RES, item["fovy"], supersample=4)[..., 3] > 0.5
        blender = item["alphas"][:, 0] > 0.5
        inter, union = (truth & blender).sum((1, 2)).float(), (truth | blender).sum((1, 2)).float()
        ious[name] = float((inter / union).mean())
    print("mean silhouette IoU over 24 views:", {k: round(v, 4) for k, v in ious.items()})
    assert min(ious.values()) >= 0.98, ious
    assert ds.num_skipped == 0


def test_layout_captions_splits_skips_and_resume(rendered):
    tmp, out, shapes, argv = rendered
    names = sorted(shapes)
    for name in names:
        view = out / "0" / name / "campos_512_v4" / "00013"
        assert sorted(p.name for p in view.iterdir()) == ["00013.json", "00013.png"]
        img = Image.open(view / "00013.png")
        assert img.mode == "RGBA" and img.size == (RES, RES)
        meta = json.loads((view / "00013.json").read_text())
        assert {"x", "y", "z", "origin", "x_fov", "y_fov"} <= set(meta) and meta["azimuth"] == pytest.approx(195.0)
        assert 5 <= meta["elevation"] <= 30
    elevations = {json.loads((out / "0" / n / "campos_512_v4" / "00000" / "00000.json").read_text())["elevation"]
                  for n in names}
    assert len(elevations) == len(names)  # one random elevation per object
    assert json.loads((out / "captions.json").read_text())["0/crate"] == "crate"
    assert (out / "test.txt").read_text().split() == [f"0/{n}" for n in names]
    assert list(json.loads((out / "skipped.json").read_text())) == ["broken"]
    crate = out / "0" / "crate" / "campos_512_v4" / "00000" / "00000.png"
    for textured in ("crate", "Tin_Box"):  # the texture shows, not one flat colour
        pixels = np.asarray(Image.open(out / "0" / textured / "campos_512_v4" / "00000" / "00000.png"))
        assert pixels[..., :3][pixels[..., 3] == 255].std() > 10, textured
    # resuming renders nothing that is complete; a removed view makes its object render again
    (out / "0" / "ball" / "campos_512_v4" / "00007" / "00007.json").unlink()
    before = crate.stat().st_mtime_ns
    assert "1 rendered, 4 already there, 1 skipped" in _render(argv)
    assert crate.stat().st_mtime_ns == before
    assert (out / "0" / "ball" / "campos_512_v4" / "00007" / "00007.json").is_file()


def test_rendered_tree_in_the_geometry_evaluation_against_the_real_meshes(rendered, tmp_path):
    tmp, out, shapes, _ = rendered
    from videomv.eval.report import read_csv

    script = _script("scripts", "eval_geometry.py")
    assert script.main(["--data-root", str(out), "--meshes", str(tmp / "meshes"), "--grid", "48",
                        "--out", str(tmp_path / "t3")]) == 0
    rows = {r["item"]: r for r in read_csv(tmp_path / "t3" / "table3.csv")}
    assert set(rows) == {f"0/{n}" for n in shapes} | {"mean"}
    # the visual hull of 24 ground-truth silhouettes against the mesh that was rendered
    assert rows["0/ball"]["volume_iou"] > 0.85 and rows["0/ball"]["chamfer"] < 0.03
    assert rows["0/crate"]["volume_iou"] > 0.85
    with pytest.raises(SystemExit):
        script.main(["--data-root", str(out), "--out", str(tmp_path / "x")])  # not a toy world: --meshes needed


def test_rendered_tree_in_the_image_evaluation(rendered, tmp_path):
    from tiny_videomv import tiny_image_videomv

    _, out, _, _ = rendered
    model_dir = tmp_path / "tiny_i2mv"
    tiny_image_videomv().save_pretrained(model_dir)
    script = _script("scripts", "eval_i2mv.py")
    assert script.main(["--data-root", str(out), "--model", str(model_dir), "--limit", "1", "--steps", "2",
                        "--no-3d-aware", "--subset", "az45", "--threads", "1", "--out", str(tmp_path / "t2")]) == 0
    assert (tmp_path / "t2" / "table2_az45.csv").is_file()
