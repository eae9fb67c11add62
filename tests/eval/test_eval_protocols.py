"""Evaluation protocols: Table 1 (consistency by held-out-view reconstruction), Table 2 (image -> views
against ground truth, view subsets), Table 3 (geometry), the result tables and the scripts."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from tiny_videomv import tiny_image_videomv, tiny_text_videomv
from videomv.toy import world as toyworld
from videomv.toy.writer import write_object
from videomv.eval.geometry_eval import geometry_metrics, hull_mesh, silhouettes_from_background
from videomv.toy.references import toy_reference_mesh
from videomv.eval.i2mv import TABLE2_COLUMNS, compare_views, evaluate_i2mv
from videomv.eval.nvs import TABLE1_COLUMNS, FitSettings, nvs_consistency, train_test_split
from videomv.eval.report import UNAVAILABLE, mean_row, read_csv, write_table
from videomv.eval.subsets import view_subset
from videomv.eval.suite import MetricSuite
from videomv.eval.view_sets import ViewSet
from videomv.geometry import get_rays, orbit_camera, orbit_cameras
from repo_scripts import load_script

REPO = Path(__file__).resolve().parents[2]
GREY = (0.5, 0.5, 0.5)
SMALL_FIT = FitSettings(resolution=32, num_gaussians=300, iters=40, views_per_step=3, lr=2.0)
TINY_FIT = FitSettings(resolution=16, num_gaussians=50, iters=3, views_per_step=2)


def toy_view_set(index: int = 3, resolution: int = 32, azimuth_jitter: torch.Tensor | None = None,
                 name: str | None = None) -> ViewSet:
    """Ground-truth renders of a toy object on grey; with `azimuth_jitter` (degrees per view) each image
    is rendered from a camera rotated away from its recorded one (content drift / inaccurate poses)."""
    obj = toyworld.sample_object(0, index)
    cameras, elevations, azimuths = toyworld.orbit_for(obj)
    shown = cameras if azimuth_jitter is None else orbit_camera(elevations, azimuths + azimuth_jitter, toyworld.RADIUS)
    rgba = toyworld.render_object(obj, shown, resolution).permute(0, 3, 1, 2)
    images = rgba[:, :3] * rgba[:, 3:] + torch.tensor(GREY).view(1, 3, 1, 1) * (1 - rgba[:, 3:])
    return ViewSet(name or f"toy_{index}", images, cameras, toyworld.FOVY, prompt=obj.caption, background=GREY,
                   alphas=rgba[:, 3:])


@pytest.fixture(scope="module")
def no_weights(tmp_path_factory):
    """A metric suite in an environment without any metric weights on disk."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("empty_torch_home")))
    for var in ("VIDEOMV_LPIPS_WEIGHTS", "VIDEOMV_CLIP_WEIGHTS", "VIDEOMV_RAFT_WEIGHTS"):
        mp.delenv(var, raising=False)
    yield MetricSuite.load()
    mp.undo()


# ------------------------------------------------------------------------------------------------ #
# Table 1: consistency
# ------------------------------------------------------------------------------------------------ #


def test_consistency_protocol_separates_consistent_from_shuffled_and_drifting_views(no_weights):
    torch.manual_seed(0)
    truth = toy_view_set(name="truth")
    order = torch.randperm(24, generator=torch.Generator().manual_seed(1))
    shuffled = ViewSet("shuffled", truth.images[order], truth.cameras, truth.fovy, truth.prompt, GREY)
    jitter = torch.empty(24).uniform_(-40, 40, generator=torch.Generator().manual_seed(2))
    drifting = toy_view_set(azimuth_jitter=jitter, name="drifting")

    rows = {vs.name: nvs_consistency(vs, no_weights, SMALL_FIT).row for vs in (truth, shuffled, drifting)}
    good = rows["truth"]
    assert good["psnr"] > 26 and good["ssim"] > 0.8, good
    for bad in ("shuffled", "drifting"):
        assert good["psnr"] - rows[bad]["psnr"] > 3, rows
        assert good["ssim"] > rows[bad]["ssim"] + 0.05, rows
    # flow-warping RMSE between neighbouring views also sees the shuffle
    assert rows["shuffled"]["flow_rmse_f1"] > 1.5 * good["flow_rmse_f1"]
    assert good["flow_method"] == "farneback" and set(TABLE1_COLUMNS) <= set(good)


def test_consistency_report_is_deterministic_for_a_seed(no_weights):
    views = toy_view_set(index=5, resolution=16)
    first = nvs_consistency(views, no_weights, TINY_FIT)
    again = nvs_consistency(views, no_weights, TINY_FIT)
    assert first.row == again.row
    assert torch.equal(first.renders, again.renders)
    other_seed = nvs_consistency(views, no_weights, FitSettings(**{**TINY_FIT.__dict__, "seed": 1}))
    assert other_seed.row["psnr"] != first.row["psnr"]
    assert first.renders.shape == first.targets.shape == (12, 3, 16, 16)


def test_train_test_split_and_bad_view_counts():
    assert train_test_split(24) == (list(range(0, 24, 2)), list(range(1, 24, 2)))
    for bad in (3, 23, 2):
        with pytest.raises(ValueError, match="even number"):
            train_test_split(bad)
    with pytest.raises(ValueError, match="resolution"):
        FitSettings(resolution=8)


def test_metrics_without_weights_are_reported_unavailable(no_weights, tmp_path):
    assert no_weights.lpips_model is None and no_weights.clip_scorer is None
    assert set(no_weights.notes) == {"lpips", "clip"}
    assert all(note.startswith("unavailable:") for note in no_weights.notes.values())
    row = nvs_consistency(toy_view_set(index=5, resolution=16), no_weights, TINY_FIT).row
    assert row["lpips"] == UNAVAILABLE and row["clip"] == UNAVAILABLE
    assert math.isfinite(row["psnr"]) and math.isfinite(row["flow_rmse_f6"])
    paths = write_table(tmp_path, "table1", [row], TABLE1_COLUMNS, notes=no_weights.notes)
    table = read_csv(paths["csv"])
    assert [r["lpips"] for r in table] == [UNAVAILABLE, UNAVAILABLE]  # item row and mean row
    text = paths["markdown"].read_text()
    assert "- lpips: unavailable: LPIPS" in text and "- clip: unavailable: CLIP" in text


# ------------------------------------------------------------------------------------------------ #
# Tables
# ------------------------------------------------------------------------------------------------ #


def test_tables_are_well_formed_with_a_correct_mean_row(tmp_path):
    columns = ["item", "prompt", "psnr", "lpips", "flow_method"]
    rows = [{"item": "a", "prompt": 'a "quoted", comma prompt', "psnr": 20.5, "lpips": UNAVAILABLE, "flow_method": "farneback"},
            {"item": "b", "prompt": "a | pipe", "psnr": 31.25, "lpips": UNAVAILABLE, "flow_method": "farneback"},
            {"item": "c", "prompt": "x", "psnr": 25.0, "lpips": UNAVAILABLE, "flow_method": "farneback"}]
    mean = mean_row(rows, columns)
    assert mean["item"] == "mean" and mean["psnr"] == pytest.approx(np.mean([20.5, 31.25, 25.0]))
    assert mean["lpips"] == UNAVAILABLE and mean["flow_method"] == "farneback" and mean["prompt"] == ""

    paths = write_table(tmp_path, "t", rows, columns, settings={"seed": 3})
    parsed = list(csv.reader(io.StringIO(paths["csv"].read_text())))
    assert parsed[0] == columns and len(parsed) == 5 and all(len(r) == len(columns) for r in parsed)
    assert parsed[1][1] == 'a "quoted", comma prompt' and float(parsed[2][2]) == 31.25
    assert float(parsed[4][2]) == pytest.approx(mean["psnr"])
    lines = paths["markdown"].read_text().strip().splitlines()
    assert len(lines) == 2 + 4
    for line in lines:  # every line has one cell per column (escaped pipes do not split cells)
        assert len(re.split(r"(?<!\\)\|", line)) - 2 == len(columns), line
    assert json.loads(paths["settings"].read_text())["seed"] == 3
    with pytest.raises(ValueError, match="no rows"):
        write_table(tmp_path, "empty", [], columns)


# ------------------------------------------------------------------------------------------------ #
# Table 2: subsets and comparison with ground truth
# ------------------------------------------------------------------------------------------------ #


def test_view_subsets_follow_the_paper_and_the_camera_azimuths():
    orbit = orbit_cameras(24, elevation=20.0, radius=1.7)
    assert view_subset("every3", orbit) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert view_subset("az45", orbit) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert view_subset("all", orbit) == list(range(24))
    shifted = orbit_cameras(24, elevation=20.0, radius=1.7, start_azimuth=30.0)  # azimuths 30, 45, 60, ...
    assert view_subset("az45", shifted) == [1, 4, 7, 10, 13, 16, 19, 22]
    assert view_subset("every3", shifted) == [0, 3, 6, 9, 12, 15, 18, 21]
    assert view_subset("az45", orbit_cameras(16, 30.0, 2.0)) == [0, 2, 4, 6, 8, 10, 12, 14]  # SyncDreamer's ring
    with pytest.raises(ValueError, match="no camera azimuth"):
        view_subset("az45", orbit_cameras(24, 15.0, 2.0, start_azimuth=7.0))
    with pytest.raises(ValueError, match="view subset must be one of"):
        view_subset("every2", orbit)


class OracleImageModel:
    """Stands in for an image VideoMV: returns the ground truth, optionally rotated by `shift` frames."""

    def __init__(self, truth: ViewSet, shift: int = 0):
        self.truth, self.shift = truth, shift
        self.settings = SimpleNamespace(task="image", resolution=truth.resolution, background=truth.background)
        self.calls = []

    def __call__(self, image, cameras, num_inference_steps, seed, three_d_aware, progress):
        self.calls.append((image, cameras))
        images = torch.roll(self.truth.images, self.shift, dims=0)
        return SimpleNamespace(images=images, cameras=cameras, gaussians=None)


def test_image_protocol_scores_generations_against_ground_truth(no_weights):
    truth = toy_view_set(index=7, resolution=32)
    perfect = OracleImageModel(truth)
    tables = evaluate_i2mv(perfect, [truth], ["every3", "az45"], no_weights, progress=False)
    assert torch.equal(perfect.calls[0][0], truth.images[0])  # conditioned on view 0
    assert torch.equal(perfect.calls[0][1], truth.cameras)  # at the object's own cameras
    row = tables["every3"][0]
    assert set(TABLE2_COLUMNS) <= set(row) and row["frames"] == "0 3 6 9 12 15 18 21"
    assert row["psnr"] == math.inf and row["ssim"] == pytest.approx(1.0) and row["lpips"] == UNAVAILABLE
    drifted = evaluate_i2mv(OracleImageModel(truth, shift=3), [truth], ["every3"], no_weights, progress=False)
    assert drifted["every3"][0]["psnr"] < 26 and drifted["every3"][0]["ssim"] < 0.7  # views 45 degrees off
    shifted = torch.roll(truth.images, 1, 0)
    direct = compare_views(truth.images, shifted, [0, 3], no_weights)
    expected = np.mean([peak_signal_noise_ratio(shifted[i].numpy(), truth.images[i].numpy(), data_range=1.0)
                        for i in (0, 3)])
    assert direct["psnr"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="differ in shape"):
        compare_views(truth.images, truth.images[:, :, :16], [0], no_weights)


# ------------------------------------------------------------------------------------------------ #
# Table 3: geometry
# ------------------------------------------------------------------------------------------------ #


@pytest.mark.parametrize("index", [0, 1, 3, 11])  # cube, cylinder, torus, cone, two-tone sphere between them
def test_occupancy_agrees_with_the_renderer(index):
    """A pixel is covered iff its ray passes through occupied space (checked by dense ray sampling)."""
    obj = toyworld.sample_object(0, index)
    cameras, _, _ = toyworld.orbit_for(obj, num_views=4)
    origins, dirs = get_rays(cameras, 24, 24, toyworld.FOVY)
    _, hit = toyworld.render_rays(obj, origins, dirs)
    t = torch.linspace(toyworld.RADIUS - 0.7, toyworld.RADIUS + 0.7, 400)
    points = origins[..., None, :] + t[:, None] * dirs[..., None, :]
    marched = toyworld.occupancy(obj, points).any(-1)
    assert hit.float().mean() > 0.05
    assert (marched == hit).float().mean() > 0.99


def test_occupancy_of_a_sphere_and_bad_points():
    obj = sphere_object(0.5)
    pts = torch.tensor([[0.0, 0.0, 0.0], [0.49, 0.0, 0.0], [0.0, 0.51, 0.0], [0.3, 0.3, 0.3], [0.3, 0.3, 0.2]])
    assert toyworld.occupancy(obj, pts).tolist() == [True, True, False, False, True]
    with pytest.raises(ValueError, match="points"):
        toyworld.occupancy(obj, torch.zeros(5, 2))


def sphere_object(radius: float) -> toyworld.ToyObject:
    return toyworld.ToyObject(recipe=("single", (("sphere", "red", None),)), caption="a red sphere",
                              primitives=[toyworld.Primitive("sphere", (radius,), (0.0, 0.0, 0.0), 0.0, "red")],
                              elevation=20.0)


def test_reference_mesh_and_visual_hull_of_a_sphere():
    obj = sphere_object(0.5)
    reference = toy_reference_mesh(obj, resolution=64)
    assert reference.signed_volume() == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.03)
    cameras, _, _ = toyworld.orbit_for(obj)
    rgba = toyworld.render_object(obj, cameras, 32)
    on_grey = rgba[..., :3] * rgba[..., 3:] + 0.5 * (1 - rgba[..., 3:])
    masks = silhouettes_from_background(on_grey.permute(0, 3, 1, 2), GREY, threshold=0.05)
    assert ((masks > 0.5) == (rgba[..., 3] > 0.5)).float().mean() > 0.98  # red differs from grey
    metrics = geometry_metrics(hull_mesh(masks, cameras, toyworld.FOVY, 48), reference, num_points=5000, resolution=48)
    assert metrics["volume_iou"] > 0.85 and metrics["chamfer"] < 0.03


def load_repo_script(name: str, folder: str = "scripts"):
    return load_script(f"{folder}/{name}")


def test_geometry_script_on_a_toy_sphere_object(tmp_path):
    """Ground-truth renders -> visual hull -> IoU against the analytic reference, through the script."""
    root, index = tmp_path / "toy", 32  # toy world (seed 0) object 32 is a single sphere
    assert re.fullmatch(r"an? \w+ sphere", toyworld.sample_object(0, index).caption)
    key, caption = write_object(root, 0, index, resolution=32)
    (root / "test.txt").write_text(key + "\n")
    (root / "captions.json").write_text(json.dumps({key: caption}))
    (root / "toyworld.json").write_text(json.dumps({"generator": "videomv.toy.world", "seed": 0, "resolution": 32,
                                                  "layout": "<dir_id>/<obj_id>/campos_512_v4/<view:05d>/<view:05d>.png"}))
    out = tmp_path / "t3"
    assert load_repo_script("eval_geometry.py").main(["--data-root", str(root), "--grid", "48", "--reference-resolution",
                                                 "64", "--out", str(out)]) == 0
    rows = read_csv(out / "table3.csv")
    assert [r["item"] for r in rows] == [key, "mean"]
    assert rows[0]["volume_iou"] > 0.8 and rows[0]["chamfer"] < 0.04


# ------------------------------------------------------------------------------------------------ #
# Scripts on tiny random models
# ------------------------------------------------------------------------------------------------ #


@pytest.fixture(scope="module")
def tiny_text_dir(tmp_path_factory):


    path = tmp_path_factory.mktemp("tiny_t2mv")
    tiny_text_videomv(with_reconstructor=False).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    from videomv.toy.writer import build_dataset

    root = tmp_path_factory.mktemp("toy_world")
    build_dataset(root, num_objects=6, resolution=32, seed=0, split=(0.5, 0.0, 0.5), workers=1, progress=False)
    return root


def test_eval_t2mv_generates_scores_and_rereads_view_sets(tiny_text_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red cube\n\na blue sphere next to a green cone\n")
    out = tmp_path / "run"
    fit = ["--fit-iters", "2", "--fit-gaussians", "50", "--fit-resolution", "16"]
    script = load_repo_script("eval_t2mv.py")
    assert script.main(["--prompts", str(prompts), "--model", str(tiny_text_dir), "--steps", "2", "--seed", "3",
                        "--no-3d-aware", "--out", str(out), *fit]) == 0
    printed = capsys.readouterr().out
    rows = read_csv(out / "table1.csv")
    assert [r["item"] for r in rows] == ["000_a_red_cube", "001_a_blue_sphere_next_to_a_green_cone", "mean"]
    assert rows[0]["prompt"] == "a red cube" and rows[0]["lpips"] == UNAVAILABLE
    assert rows[2]["psnr"] == pytest.approx((rows[0]["psnr"] + rows[1]["psnr"]) / 2)
    assert "| mean |" in printed and (out / "table1.md").read_text() in printed
    settings = json.loads((out / "table1_settings.json").read_text())
    assert settings["steps"] == 2 and settings["three_d_aware"] is False and settings["seed"] == 3
    assert settings["fit"]["iters"] == 2 and settings["flow_method"] == "farneback" and "lpips" in settings["notes"]
    assert len(list((out / "views" / "000_a_red_cube" / "views").glob("*.png"))) == 24

    again = tmp_path / "again"
    assert script.main(["--views-dir", str(out / "views"), "--seed", "3", "--out", str(again), *fit]) == 0
    reread = read_csv(again / "table1.csv")
    assert [r["item"] for r in reread] == [r["item"] for r in rows] and reread[0]["prompt"] == "a red cube"
    for a, b in zip(rows, reread):  # the same views, up to 8-bit PNG quantisation
        assert a["psnr"] == pytest.approx(b["psnr"], abs=0.5)


def test_eval_t2mv_ground_truth_mode_and_bad_input(toy_root, tmp_path, capsys):
    script = load_repo_script("eval_t2mv.py")
    out = tmp_path / "gt"
    assert script.main(["--data-root", str(toy_root), "--limit", "1", "--fit-iters", "2", "--fit-gaussians", "50",
                        "--fit-resolution", "16", "--out", str(out)]) == 0
    rows = read_csv(out / "table1.csv")
    first = (toy_root / "test.txt").read_text().split()[0]
    assert rows[0]["item"] == first and rows[0]["prompt"] == json.loads((toy_root / "captions.json").read_text())[first]
    for args, message in ((["--prompts", str(tmp_path / "missing.txt")], "is not a file"),
                          (["--data-root", str(toy_root), "--limit", "0"], "--limit"),
                          (["--data-root", str(toy_root), "--out", str(out)], "not an empty folder"),
                          (["--data-root", str(toy_root), "--split", "nosuch", "--out", str(tmp_path / "x")], "nosuch.txt")):
        with pytest.raises(SystemExit) as exc:
            script.main(args)
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_eval_i2mv_script_with_a_tiny_image_model(toy_root, tmp_path):
    model_dir = tmp_path / "tiny_i2mv"
    tiny_image_videomv().save_pretrained(model_dir)
    out = tmp_path / "t2"
    assert load_repo_script("eval_i2mv.py").main(["--data-root", str(toy_root), "--model", str(model_dir), "--limit", "1",
                                             "--steps", "2", "--no-3d-aware", "--subset", "every3", "az45",
                                             "--out", str(out)]) == 0
    for subset in ("every3", "az45"):
        rows = read_csv(out / f"table2_{subset}.csv")
        assert len(rows) == 2 and rows[0]["subset"] == subset and 0 < rows[0]["ssim"] < 1
        assert rows[0]["frames"] == "0 3 6 9 12 15 18 21"  # toy orbits start at azimuth 0
    saved = list((out / "views").iterdir())
    assert len(saved) == 1 and len(list((saved[0] / "views").glob("*.png"))) == 24


def test_results_tables_tool_end_to_end(toy_root, tmp_path):
    """tools/make_results_tables.py: Table 1 rows for ground truth, base and 3D-aware sampling; Table 2
    rows for base and 3D-aware sampling on every subset; the page lists the exact commands."""


    t2mv, i2mv = tmp_path / "tiny_t2mv", tmp_path / "tiny_i2mv"
    tiny_text_videomv(with_reconstructor=True).save_pretrained(t2mv)
    tiny_image_videomv(with_reconstructor=True).save_pretrained(i2mv)
    results, runs = tmp_path / "results.md", tmp_path / "runs"
    tool = load_repo_script("make_results_tables.py", folder="tools")
    results.write_text(f"# Kept above\n\n{tool.BEGIN}\nold tables\n{tool.END}\n\nKept below\n")
    assert tool.main(["--data-root", str(toy_root), "--t2mv", str(t2mv), "--i2mv", str(i2mv), "--out", str(runs),
                      "--results", str(results), "--limit", "1", "--steps", "2", "--fit-iters", "2",
                      "--fit-gaussians", "50", "--fit-resolution", "16", "--jobs", "2", "--threads", "1"]) == 0
    page = results.read_text()
    assert page.startswith("# Kept above\n\n" + tool.BEGIN) and page.endswith(tool.END + "\n\nKept below\n")
    assert "old tables" not in page and sorted(p.name for p in runs.glob("*.log")) == [
        "t1_aware.log", "t1_base.log", "t1_gt.log", "t2_aware.log", "t2_base.log"]
    tables = [line for line in page.splitlines() if line.startswith("| ")]
    labels = [line.split(" | ")[0][2:] for line in tables if not line.startswith("| Method")]
    assert labels == ["Ground-truth renders (upper bound)", "VideoMV (base)", "VideoMV"] + ["VideoMV (base)", "VideoMV"] * 3
    assert json.loads((runs / "t1_aware" / "table1_settings.json").read_text())["three_d_aware"] is True
    assert json.loads((runs / "t1_base" / "table1_settings.json").read_text())["three_d_aware"] is False
    gt_mean = read_csv(runs / "t1_gt" / "table1.csv")[-1]
    assert f"| {gt_mean['psnr']:.4f} |" in tables[1]
    aware_az45 = read_csv(runs / "t2_aware" / "table2_az45.csv")[-1]
    assert f"| {aware_az45['psnr']:.4f} |" in tables[-1]
    commands = [line for line in page.splitlines() if line.startswith("python scripts/")]
    assert len(commands) == 5 and sum("--no-3d-aware" in c for c in commands) == 2


def test_eval_t2mv_defaults_to_the_shipped_t3bench_prompts(tmp_path):
    script = load_repo_script("eval_t2mv.py")
    args = script.parse_args(["--out", str(tmp_path / "o")])
    assert args.prompts == REPO / "data" / "prompts" / "t3bench_prompt_single.txt" and args.prompts.is_file()
    from videomv.eval.generation import read_prompts

    prompts = read_prompts(args.prompts)
    assert len(prompts) == 100 and prompts[0] == "A cactus with pink flowers"
