"""The toy world: sampling, captions, the analytic renderer (closed-form silhouettes) and the
dataset writer's layout."""

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from videomv.toy import world as toyworld
from videomv.toy.writer import build_dataset, object_key, split_indices
from videomv.geometry import focal_from_fov, gobjaverse_json_to_c2w, orbit_camera
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _single(shape, size, color, color2=None, yaw=0.0, center=(0.0, 0.0, 0.0)):
    prim = toyworld.Primitive(shape, size, center, yaw, color, color2)
    return toyworld.ToyObject(recipe=("single", ()), caption="", primitives=[prim], elevation=0.0)


def _find(seed, predicate, limit=3000):
    for i in range(limit):
        obj = toyworld.sample_object(seed, i)
        if predicate(obj):
            return obj
    raise AssertionError("no matching object found")


# ------------------------------------------------------------------------------------------- #
# Sampling and captions
# ------------------------------------------------------------------------------------------- #


def test_sampling_is_deterministic_and_depends_on_seed_and_index():
    a = [toyworld.sample_object(0, i) for i in (5, 0, 7)]
    b = [toyworld.sample_object(0, i) for i in (0, 5, 7)]  # order of calls does not matter
    assert a[0] == b[1] and a[1] == b[0] and a[2] == b[2]
    assert toyworld.sample_object(4, 5) != a[0]
    assert toyworld.sample_object(3, 6) != a[0]
    with pytest.raises(ValueError, match="non-negative"):
        toyworld.sample_object(-1, 0)


def test_objects_fit_and_elevations_in_range():
    for i in range(300):
        obj = toyworld.sample_object(0, i)
        assert 1 <= len(obj.primitives) <= 3
        for p in obj.primitives:
            assert np.linalg.norm(p.center) + p.bound_radius() <= toyworld.OBJECT_RADIUS + 1e-6
        assert 5.0 <= obj.elevation <= 30.0


_NOUN = r"(an?) (\w+) (\w+)"
_GRAMMAR = {
    "single": re.compile(rf"^{_NOUN}$"),
    "two_tone": re.compile(r"^an? (\w+) that is half (\w+) and half (\w+)$"),
    "stacked": re.compile(rf"^{_NOUN} on top of {_NOUN}$"),
    "side_by_side": re.compile(rf"^{_NOUN} next to {_NOUN}$"),
    "row": re.compile(rf"^{_NOUN}, {_NOUN} and {_NOUN} in a row$"),
}


def test_captions_follow_the_grammar_and_the_parameters():
    seen = set()
    for i in range(400):
        obj = toyworld.sample_object(1, i)
        arrangement = obj.recipe[0]
        seen.add(arrangement)
        match = _GRAMMAR[arrangement].match(obj.caption)
        assert match, obj.caption
        groups = match.groups()
        if arrangement == "two_tone":
            (p,) = obj.primitives
            assert (p.shape, p.color, p.color2) == groups and p.color != p.color2
            continue
        nouns = [groups[k : k + 3] for k in range(0, len(groups), 3)]
        assert len(nouns) == len(obj.primitives)
        for (article, color, shape), p in zip(nouns, obj.primitives):
            assert (color, shape) == (p.color, p.shape) and p.color2 is None
            assert article == ("an" if color[0] in "aeiou" else "a")
        if arrangement == "stacked":  # the top one really is above
            assert obj.primitives[0].center[1] > obj.primitives[1].center[1]
    assert seen == set(toyworld.ARRANGEMENTS)


def test_captions_repeat_and_sample_like_keeps_the_caption():
    captions = [toyworld.sample_object(0, i).caption for i in range(500)]
    assert len(set(captions)) < len(captions) * 0.9  # many objects share a caption
    obj = toyworld.sample_object(0, 11)
    like = toyworld.sample_like(obj, seed=5)
    assert like.caption == obj.caption and like.recipe == obj.recipe
    assert like.primitives != obj.primitives
    assert toyworld.sample_like(obj, seed=5) == like


def test_named_colour_renders_at_the_centre():
    obj = _find(0, lambda o: o.caption == "a red sphere")
    rgba = toyworld.render_object(obj, orbit_camera(obj.elevation, 0.0, 2.0), 16)[0]
    centre = rgba[6:10, 6:10]
    assert (centre[..., 3] == 1).all()
    r, g, b = centre[..., :3].reshape(-1, 3).mean(0).tolist()
    assert r > 0.3 and r > 4 * g and r > 4 * b
    # every single-colour single object: the centre pixel has its palette colour, scaled by shading
    for i in range(60):
        obj = toyworld.sample_object(2, i)
        if obj.recipe[0] != "single" or obj.primitives[0].shape == "torus":  # the torus has a hole
            continue
        pixel = toyworld.render_object(obj, orbit_camera(obj.elevation, 0.0, 2.0), 9)[0, 4, 4]
        ref = torch.tensor(toyworld.PALETTE[obj.primitives[0].color])
        shade = (pixel[:3] @ ref) / (ref @ ref)
        assert pixel[3] == 1 and toyworld.AMBIENT - 1e-3 <= shade <= 1 + 1e-3
        torch.testing.assert_close(pixel[:3], (shade * ref).clamp(0, 1), atol=2 / 255, rtol=0)


# ------------------------------------------------------------------------------------------- #
# Renderer against closed forms
# ------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("rho,dist,elevation", [(0.5, 2.0, 0.0), (0.3, 2.0, 25.0), (0.6, 1.5, -10.0)])
def test_sphere_silhouette_radius(rho, dist, elevation):
    res, fovy = 96, toyworld.FOVY
    obj = _single("sphere", (rho,), "white")
    alpha = toyworld.render_object(obj, orbit_camera(elevation, 40.0, dist), res, fovy)[0, ..., 3]
    # the silhouette of a centred sphere is a circle of radius f * tan(asin(rho / dist))
    expected = focal_from_fov(fovy, res) * rho / math.sqrt(dist**2 - rho**2)
    measured = math.sqrt(alpha.sum().item() / math.pi)
    assert measured == pytest.approx(expected, rel=0.005)
    # and it is centred on the image centre
    ys, xs = torch.meshgrid(torch.arange(res) + 0.5, torch.arange(res) + 0.5, indexing="ij")
    cy, cx = (alpha * ys).sum() / alpha.sum(), (alpha * xs).sum() / alpha.sum()
    assert abs(cx - res / 2) < 0.05 and abs(cy - res / 2) < 0.05


def test_cube_face_on_is_a_square_of_known_size():
    res, a, dist = 64, 0.4, 2.0
    alpha = toyworld.render_object(_single("cube", (a,), "white"), orbit_camera(0.0, 0.0, dist), res)[0, ..., 3]
    side = focal_from_fov(toyworld.FOVY, res) * 2 * a / (dist - a)  # the front face at depth dist - a
    assert alpha.sum().item() == pytest.approx(side**2, rel=0.02)
    rows = alpha.sum(1)
    assert rows.max().item() == pytest.approx(side, abs=0.6)  # a full row spans the side


def test_cylinder_side_view_closed_form():
    res, r, h, dist = 64, 0.3, 0.45, 2.0
    alpha = toyworld.render_object(_single("cylinder", (r, h), "white"), orbit_camera(0.0, 0.0, dist), res)[0, ..., 3]
    f = focal_from_fov(toyworld.FOVY, res)
    # the middle row spans the tangent points of the circle seen from the camera
    tangent_x, tangent_depth = r * math.sqrt(1 - r**2 / dist**2), dist - r**2 / dist
    assert alpha[res // 2 - 1 : res // 2 + 1].sum(1).mean().item() == pytest.approx(2 * f * tangent_x / tangent_depth, abs=0.6)
    # the front edge of the top cap (0, h, r) bounds the silhouette from above
    top_row = res / 2 - f * h / (dist - r)
    assert alpha.sum(1).nonzero().min().item() == pytest.approx(top_row, abs=1.0)
    # symmetric top/bottom when seen level
    torch.testing.assert_close(alpha.sum(1), alpha.sum(1).flip(0), atol=0.05, rtol=0)


def test_cone_apex_and_torus_hole():
    res, r, h = 64, 0.4, 0.4
    alpha = toyworld.render_object(_single("cone", (r, h), "white"), orbit_camera(0.0, 0.0, 2.0), res)[0, ..., 3]
    f = focal_from_fov(toyworld.FOVY, res)
    apex_row = res / 2 - f * h / 2.0  # the apex (0, h, 0) at depth 2
    covered = (alpha.sum(1) > 0.05).nonzero()
    assert covered.min().item() == pytest.approx(apex_row, abs=1.0)
    # the silhouette narrows towards the apex: width grows linearly down the image
    widths = alpha.sum(1)
    # the widest row spans the base circle between the tangent points seen from the camera:
    # x = r sqrt(1 - r^2/D^2) at depth D - r^2/D
    dist = 2.0
    tangent_x, tangent_depth = r * math.sqrt(1 - r**2 / dist**2), dist - r**2 / dist
    assert widths.max().item() == pytest.approx(2 * f * tangent_x / tangent_depth, abs=1.0)
    mid = int(res / 2)
    assert widths[mid].item() == pytest.approx((widths[mid - 6] + widths[mid + 6]).item() / 2, rel=0.1)
    torus = _single("torus", (0.4, 0.12), "white")
    alpha = toyworld.render_object(torus, orbit_camera(0.0, 0.0, 2.0), res)[0, ..., 3]  # looking through the ring
    assert alpha[30:34, 30:34].max() == 0
    ring_px = int(res / 2 + f * 0.4 / 2.0)
    assert alpha[res // 2, ring_px] == 1 and alpha[res // 2, res - 1 - ring_px] == 1
    # seen edge-on (azimuth 90) the upright ring shows no hole
    alpha = toyworld.render_object(torus, orbit_camera(0.0, 90.0, 2.0), res)[0, ..., 3]
    assert alpha[30:34, 30:34].min() == 1


def test_two_tone_views_differ_around_the_orbit():
    sphere = _single("sphere", (0.5,), "red", "blue", yaw=0.0)
    imgs = toyworld.render_object(sphere, orbit_camera([0.0, 0.0], [90.0, -90.0], 2.0), 32)
    centre = imgs[:, 14:18, 14:18, :3].mean((1, 2))
    assert centre[0, 0] > 3 * centre[0, 2]  # +x half red, seen from +x
    assert centre[1, 2] > 3 * centre[1, 0]  # -x half blue
    obj = _find(0, lambda o: o.recipe[0] == "two_tone")
    c2w, _, _ = toyworld.orbit_for(obj)
    imgs = toyworld.render_object(obj, c2w[[0, 6, 12, 18]], 24)
    for i in range(4):
        for j in range(i + 1, 4):
            assert (imgs[i] - imgs[j]).abs().mean() > 0.01


def test_render_shapes_and_ranges():
    obj = toyworld.sample_object(0, 3)
    c2w, el, az = toyworld.orbit_for(obj, num_views=5)
    assert torch.allclose(el, torch.full((5,), obj.elevation))
    assert torch.allclose(az, torch.arange(5) * 72.0)
    out = toyworld.render_object(obj, c2w, 12)
    assert out.shape == (5, 12, 12, 4) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1
    assert out[..., 3].sum() > 0 and (out[..., 3] == 0).any()
    assert torch.equal(out[..., :3][out[..., 3] == 0], torch.zeros_like(out[..., :3][out[..., 3] == 0]))
    assert toyworld.render_object(obj, c2w[0], 12).shape == (1, 12, 12, 4)
    with pytest.raises(ValueError, match="shape"):
        toyworld.render_object(_single("pyramid", (1.0,), "red"), c2w, 8)


# ------------------------------------------------------------------------------------------- #
# Writer
# ------------------------------------------------------------------------------------------- #


def _pngs(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): np.asarray(Image.open(p)) for p in sorted(root.rglob("*.png"))}


def test_writer_layout_and_determinism(tmp_path):
    settings = build_dataset(tmp_path / "a", num_objects=3, resolution=16, seed=7, workers=1, progress=False)
    build_dataset(tmp_path / "b", num_objects=3, resolution=16, seed=7, workers=2, progress=False)
    build_dataset(tmp_path / "c", num_objects=3, resolution=16, seed=8, workers=1, progress=False)
    a, b, c = (_pngs(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)

    root = tmp_path / "a"
    keys = [f"0/toy_{i:06d}" for i in range(3)]
    assert [object_key(i) for i in range(3)] == keys and object_key(1234) == "1/toy_001234"
    assert sorted(p.name for p in root.iterdir()) == ["0", "captions.json", "test.txt", "toyworld.json", "train.txt", "val.txt"]
    assert sorted(p.name for p in (root / "0").iterdir()) == [k.split("/")[1] for k in keys]
    captions = json.loads((root / "captions.json").read_text())
    assert list(captions) == keys
    for i, key in enumerate(keys):
        obj = toyworld.sample_object(7, i)
        assert captions[key] == obj.caption
        obj_dir = root / key
        assert [p.name for p in obj_dir.iterdir()] == ["campos_512_v4"]
        views = sorted(p.name for p in (obj_dir / "campos_512_v4").iterdir())
        assert views == [f"{v:05d}" for v in range(24)]
        c2w, _, _ = toyworld.orbit_for(obj)
        for v in (0, 5, 23):
            view_dir = obj_dir / "campos_512_v4" / views[v]
            assert sorted(p.name for p in view_dir.iterdir()) == [f"{v:05d}.json", f"{v:05d}.png"]
            img = Image.open(view_dir / f"{v:05d}.png")
            assert img.mode == "RGBA" and img.size == (16, 16)
            meta = json.loads((view_dir / f"{v:05d}.json").read_text())
            torch.testing.assert_close(gobjaverse_json_to_c2w(meta), c2w[v], atol=1e-5, rtol=0)
            assert math.degrees(meta["y_fov"]) == pytest.approx(toyworld.FOVY)
            assert meta["azimuth"] == pytest.approx(15.0 * v) and meta["elevation"] == pytest.approx(obj.elevation)
    # the stored pixels are the renderer's output, quantised
    obj = toyworld.sample_object(7, 2)
    ref = toyworld.to_uint8(toyworld.render_object(obj, toyworld.orbit_for(obj)[0][[4]], 16))[0]
    assert np.array_equal(a["0/toy_000002/campos_512_v4/00004/00004.png"], ref)

    splits = {n: (root / f"{n}.txt").read_text().splitlines() for n in ("train", "val", "test")}
    assert sorted(sum(splits.values(), [])) == keys
    written = json.loads((root / "toyworld.json").read_text())
    assert written == settings
    assert (written["seed"], written["resolution"], written["num_views"], written["version"]) == (7, 16, 24, toyworld.VERSION)


def test_splits_disjoint_and_covering():
    splits = split_indices(1000, (0.9, 0.05, 0.05), seed=0)
    assert [len(splits[n]) for n in ("train", "val", "test")] == [900, 50, 50]
    sets = [set(splits[n]) for n in ("train", "val", "test")]
    assert set().union(*sets) == set(range(1000)) and sum(map(len, sets)) == 1000
    assert split_indices(1000, (0.9, 0.05, 0.05), seed=0) == splits
    assert split_indices(1000, (0.9, 0.05, 0.05), seed=1)["val"] != splits["val"]
    small = split_indices(7, (0.5, 0.25, 0.25), seed=3)
    assert sorted(sum(small.values(), [])) == list(range(7))
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, (0.5, 0.5, 0.5), seed=0)


def test_builder_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="num_objects"):
        build_dataset(tmp_path, num_objects=0, resolution=16)
    with pytest.raises(ValueError, match="resolution"):
        build_dataset(tmp_path, num_objects=1, resolution=4)


def test_cli_help_and_bad_arguments(tmp_path, capsys):
    script = REPO / "tools" / "make_toy_dataset.py"
    help_run = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert help_run.returncode == 0 and "--num-objects" in help_run.stdout
    cli = load_script("tools/make_toy_dataset.py")
    for args, message in [
        (["--num-objects", "0"], "--num-objects: must be >= 1"),
        (["--num-objects", "2", "--resolution", "4"], "--resolution: must be >= 8"),
        (["--num-objects", "2", "--split", "0.9,0.2"], "--split"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["--out", str(tmp_path / "x"), *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    cli.main(["--out", str(tmp_path / "y"), "--num-objects", "1", "--resolution", "8", "--num-views", "2", "--workers", "1"])
    assert len(list((tmp_path / "y").rglob("*.png"))) == 2


def test_ensure_toy_dataset_builds_once_and_renames_the_older_naming(tmp_path):
    from videomv.data import GObjaverseDataset
    from videomv.data.gobjaverse import LayoutError
    from videomv.toy import ensure_toy_dataset

    cfg = {"num_objects": 2, "resolution": 8, "seed": 1, "split": [0.5, 0.0, 0.5], "workers": 1}
    root = ensure_toy_dataset(tmp_path / "w", cfg)
    expected = GObjaverseDataset(root, resolution=8)[1]["images"]
    with pytest.raises(ValueError, match="rendered at 8 px"):
        ensure_toy_dataset(root, {**cfg, "resolution": 16})
    # turn it into a folder of the older naming, as earlier builds wrote it
    for png in root.glob("*/*/campos_512_v4/*/*.png"):
        for suffix in (".png", ".json"):
            png.with_suffix(suffix).rename(png.parent / f"00000{suffix}")
    settings = json.loads((root / "toyworld.json").read_text())
    (root / "toyworld.json").write_text(json.dumps({**settings, "layout": "old"}))
    with pytest.raises(LayoutError):
        GObjaverseDataset(root, resolution=8)
    ensure_toy_dataset(root, cfg)
    assert torch.equal(GObjaverseDataset(root, resolution=8)[1]["images"], expected)


def test_eval_scripts_build_the_default_toy_root_on_first_use(tmp_path, monkeypatch):
    from videomv.toy import cli

    monkeypatch.setattr(cli, "DEFAULT_ROOT", tmp_path / "toy_world_64")
    monkeypatch.setattr(cli, "DEFAULT_TOY", {"num_objects": 3, "resolution": 8, "seed": 0, "workers": 1})
    root = cli.prepare_data_root(tmp_path / "toy_world_64")
    assert (root / "test.txt").is_file() and json.loads((root / "toyworld.json").read_text())["num_objects"] == 3
    other = tmp_path / "elsewhere"
    other.mkdir()
    assert cli.prepare_data_root(other) == other and not (other / "toyworld.json").exists()  # not built


def test_extra_train_objects_keep_unseen_captions_unseen(tmp_path):
    from videomv.data import GObjaverseDataset
    from videomv.toy import ensure_toy_dataset
    from videomv.toy.world import sample_object

    cfg = {"num_objects": 40, "resolution": 8, "seed": 0, "split": [0.5, 0.25, 0.25], "workers": 1}
    root = ensure_toy_dataset(tmp_path / "w", {**cfg, "extra_train_objects": 60})
    before = {name: (root / f"{name}.txt").read_text() for name in ("train", "val", "test")}
    listed = (root / "train_plus60.txt").read_text().split()
    captions = json.loads((root / "captions.json").read_text())
    assert len(captions) == 100 and all(captions[object_key(i)] == sample_object(0, i).caption for i in range(100))
    train = before["train"].split()
    held_out = {sample_object(0, i).caption for i in range(40) if object_key(i) not in train} - {captions[o] for o in train}
    new = [object_key(i) for i in range(40, 100)]
    dropped = [o for o in new if captions[o] in held_out]
    assert dropped, "seed 0 gives three extra objects with a held-out caption"
    assert listed == train + [o for o in new if o not in dropped]
    assert not {captions[o] for o in listed} & held_out
    assert len(GObjaverseDataset(root, objects=root / "train_plus60.txt", resolution=8)) == len(listed)
    ensure_toy_dataset(root, {**cfg, "extra_train_objects": 60})  # done already: nothing changes
    assert {name: (root / f"{name}.txt").read_text() for name in before} == before
    with pytest.raises(ValueError, match="extra_train_objects must be >= 1"):
        from videomv.toy.writer import extend_train_split
        extend_train_split(root, 0)


def test_swapped_caption_reverses_the_parts_by_hand():
    from videomv.toy.world import swapped_caption

    stacked = ("stacked", (("cube", "red", None), ("cylinder", "blue", None)))
    assert swapped_caption(stacked) == "a blue cylinder on top of a red cube"
    row = ("row", (("cube", "red", None), ("sphere", "orange", None), ("cone", "green", None)))
    assert swapped_caption(row) == "a green cone, an orange sphere and a red cube in a row"
    assert swapped_caption(("side_by_side", (("cube", "red", None), ("torus", "white", None)))) == \
        "a white torus next to a red cube"
    assert swapped_caption(("two_tone", (("sphere", "red", "blue"),))) == "a sphere that is half blue and half red"
    assert swapped_caption(("single", (("cone", "yellow", None),))) == "a yellow cone"


def test_only_a_stack_has_a_part_order_in_its_views():
    from videomv.toy.world import order_shows, sample_object

    recipes = {obj.recipe[0]: obj.recipe for obj in (sample_object(0, i) for i in range(40))}
    assert set(recipes) == {"single", "two_tone", "stacked", "side_by_side", "row"}
    assert [name for name, recipe in recipes.items() if order_shows(recipe)] == ["stacked"]
    # a stack's first part is the one on top
    stack = next(o for o in (sample_object(0, i) for i in range(40)) if o.recipe[0] == "stacked")
    top, bottom = stack.primitives
    assert top.center[1] > bottom.center[1]
