"""The toy-model bar: floor and ceiling references behave as defined, on stand-in models."""

import math
from types import SimpleNamespace

import pytest
import torch

from videomv.toy import world as toyworld
from videomv.toy.bar import (
    composite,
    image_bar_psnr,
    neighbour_difference,
    text_bar_row,
)
from videomv.toy.references import toy_object_for
from videomv.toy.writer import build_dataset

RES = 24
GREY = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    build_dataset(root, 4, RES, seed=3, workers=1, progress=False, split=(0.5, 0.25, 0.25))
    return root


class StandIn:
    """A 'model' returning fixed views: truth, the same-caption twin, or the background."""

    def __init__(self, root, object_id, mode, task="text"):
        self.settings = SimpleNamespace(resolution=RES, fovy=toyworld.FOVY, background=GREY, task=task)
        obj = toy_object_for(root, object_id)
        cams, _, _ = toyworld.orbit_for(obj)
        if mode == "truth":
            self.views = composite(toyworld.render_object(obj, cams, RES), GREY)
        elif mode == "background":
            self.views = torch.full((len(cams), 3, RES, RES), 0.5)
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return SimpleNamespace(images=self.views)


def first_object(root):
    return (root / "train.txt").read_text().split()[0]


def test_generated_truth_beats_the_ceiling_and_background_sits_on_the_floor(toy_root):
    oid = first_object(toy_root)
    truth_model = StandIn(toy_root, oid, "truth")
    row = text_bar_row(truth_model, toy_root, oid)
    assert row.generated == float("inf") and row.gap_closed > 1
    assert row.ceiling > row.floor  # another object with the caption is closer than a blank image
    assert truth_model.calls[0]["prompt"] == toy_object_for(toy_root, oid).caption
    flat = text_bar_row(StandIn(toy_root, oid, "background"), toy_root, oid)
    assert flat.generated == pytest.approx(flat.floor) and flat.gap_closed == pytest.approx(0.0, abs=1e-6)
    assert flat.neighbour_generated == 0.0 < flat.neighbour_truth
    assert image_bar_psnr(StandIn(toy_root, oid, "truth", task="image"), toy_root, oid) == float("inf")


def test_neighbour_difference_closed_form():
    views = torch.zeros(4, 3, 2, 2)
    views[1] = 1.0  # 0 -> 1 -> 0 -> 0 -> (wrap) 0: two jumps of 1 out of four pairs
    assert neighbour_difference(views) == pytest.approx(0.5)


def test_gap_closed_closed_form():
    from videomv.toy.bar import gap_closed

    assert gap_closed(18.0, 16.0, 20.0) == pytest.approx(0.5)
    assert gap_closed(16.0, 16.0, 20.0) == 0.0
    assert gap_closed(15.0, 17.0, 16.0) != gap_closed(15.0, 17.0, 16.0)  # NaN: the twin is no better than blank


class ProbePipeline:
    """Stands in for the image pipeline: runs a loop calling the z0 hook with z0_cond = step + 1."""

    def __init__(self):
        self.hook_calls, self.cameras = 0, None

    def __call__(self, image, cameras, z0_hook, num_inference_steps, **kwargs):
        self.cameras = cameras
        for i in range(num_inference_steps):
            self.hook_calls += 1
            z0 = torch.full((1, 3, cameras.shape[1], RES, RES), float(i + 1))
            z0_hook(i, 999 - i, z0, -z0, None)
        raise AssertionError("the probe let the loop run past its first step")


def test_first_step_probe_returns_the_conditional_estimate_of_the_first_step(toy_root):
    from videomv.toy.bar import first_step_views

    oid = first_object(toy_root)
    model = StandIn(toy_root, oid, "truth", task="image")
    model.settings.__dict__.update(guidance_scale=6.0, num_inference_steps=50, fps=16, sampler="ddim")
    model.pipeline = ProbePipeline()
    model.decode = lambda z: z.permute(0, 2, 1, 3, 4)  # (B, C=3, F, H, W) "latents" are the images
    x0, truth = first_step_views(model, toy_root, oid, num_frames=5)
    assert model.pipeline.hook_calls == 1 and model.pipeline.cameras.shape[1] == 5
    assert x0.shape == truth.shape == (5, 3, RES, RES) and bool((x0 == 1.0).all())  # step 0, conditional branch
    assert torch.equal(truth, model.views[:5])
    with pytest.raises(ValueError, match="num_frames"):
        first_step_views(model, toy_root, oid, num_frames=0)
    with pytest.raises(ValueError, match="image model"):
        first_step_views(StandIn(toy_root, oid, "truth"), toy_root, oid, num_frames=5)


def test_x0_estimates_are_taken_at_the_asked_steps_and_stop_the_loop(toy_root):
    from videomv.toy.bar import x0_estimates

    oid = first_object(toy_root)
    model = StandIn(toy_root, oid, "truth", task="image")
    model.settings.__dict__.update(guidance_scale=6.0, num_inference_steps=20, fps=16, sampler="dpmsolver++")
    model.pipeline = ProbePipeline()
    halves = lambda z: z.permute(0, 2, 1, 3, 4) / 2  # noqa: E731  a stand-in decoder
    estimates, truth = x0_estimates(model, toy_root, oid, [4, 0, 2], decode=halves)
    assert model.pipeline.hook_calls == 5  # stopped after index 4
    assert sorted(estimates) == [0, 2, 4] and truth.shape[0] == model.pipeline.cameras.shape[1]
    assert all(bool((estimates[i] == (i + 1) / 2).all()) for i in estimates)  # conditional branch, decoded
    for bad in ([], [20], [-1]):
        with pytest.raises(ValueError, match="step_indices"):
            x0_estimates(model, toy_root, oid, bad)


def test_prompt_losses_closed_form_and_prompt_blind_model(tmp_path):
    from diffusers import DDIMScheduler
    from tiny_videomv import tiny_image_videomv, tiny_text_videomv

    from videomv.toy.bar import object_views, prompt_losses

    model = tiny_text_videomv(with_reconstructor=False)
    pipe = model.pipeline
    toy_root = tmp_path / "toy"  # seed 3's first 8 objects hold a stack, a pair and a two-tone object
    build_dataset(toy_root, 8, RES, seed=3, workers=1, progress=False, split=(0.5, 0.25, 0.25))
    ids = [o for split in ("train", "val", "test") for o in (toy_root / f"{split}.txt").read_text().split()]
    arrangements = {o: toy_object_for(toy_root, o).recipe[0] for o in ids}
    stacked = next(o for o in ids if arrangements[o] == "stacked")
    # a stacked object and one whose parts' order does not show (its "swapped" caption is not scored)
    objects = [stacked, next(o for o in ids if arrangements[o] in ("side_by_side", "row", "two_tone"))]
    # A UNet that ignores the prompt scores every prompt the same.
    real = prompt_losses(model, toy_root, objects, [500])
    blind = pipe.encode_prompt
    pipe.encode_prompt = lambda prompt, *a, **k: blind([""] * len(prompt), *a, **k)
    same = prompt_losses(model, toy_root, objects, [500])[500]
    assert same["own"] == same["other"] == same["empty"] > 0
    assert same["stacked_own"] == same["stacked_swapped"] > 0
    pipe.encode_prompt = blind
    assert real[500]["own"] != real[500]["other"]  # the random tiny text encoder does tell captions apart
    assert real[500]["stacked_swapped"] != real[500]["stacked_own"]
    # without a stacked object the pair is NaN
    others = [o for o in ids if arrangements[o] != "stacked"][:2]
    none = prompt_losses(model, toy_root, others, [500])[500]
    assert math.isnan(none["stacked_own"]) and math.isnan(none["stacked_swapped"])

    # Closed form: zero terminal SNR, v-prediction, a UNet predicting 0. At t = 999 the noisy input
    # is pure noise and the v target is -z0, so the loss is the mean square of the clean latents.
    pipe.scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                   prediction_type="v_prediction", rescale_betas_zero_snr=True)
    forward = pipe.unet.forward
    pipe.unet.forward = lambda sample, *a, **k: SimpleNamespace(sample=torch.zeros_like(sample))
    try:
        loss = prompt_losses(model, toy_root, objects, [999])[999]
    finally:
        pipe.unet.forward = forward
    each = [float(model.encode(object_views(model, toy_root, o)[2][None]).pow(2).mean()) for o in objects]
    expected = sum(each) / 2
    assert loss["own"] == pytest.approx(expected, rel=1e-5) and loss["empty"] == pytest.approx(expected, rel=1e-5)
    # the stacked pair is over the stacked object alone
    assert loss["stacked_own"] == pytest.approx(each[0], rel=1e-5)
    assert loss["stacked_swapped"] == pytest.approx(each[0], rel=1e-5)

    with pytest.raises(ValueError, match="at least 2"):
        prompt_losses(model, toy_root, objects[:1], [500])
    with pytest.raises(ValueError, match="text model"):
        prompt_losses(tiny_image_videomv(with_reconstructor=False), toy_root, objects, [500])


def test_toy_objects_reads_the_split_and_rejects_bad_arguments(toy_root, tmp_path, capsys):
    import argparse

    from videomv.toy.cli import add_toy_objects_args, toy_objects

    p = argparse.ArgumentParser(prog="tool")
    add_toy_objects_args(p, split="train", limit=1)
    args = p.parse_args(["--data-root", str(toy_root)])
    assert toy_objects(p, args) == (toy_root / "train.txt").read_text().split()[:1]
    for argv, message in ((["--data-root", str(tmp_path)], "make_toy_dataset.py"),
                          (["--data-root", str(toy_root), "--limit", "0"], "--limit must be >= 1")):
        with pytest.raises(SystemExit) as e:
            toy_objects(p, p.parse_args(argv))
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_bar_rows_carry_part_scores(toy_root):
    from videomv.toy.bar import image_bar_row

    oid = first_object(toy_root)
    n_parts = len(toy_object_for(toy_root, oid).primitives) + (toy_object_for(toy_root, oid).recipe[0] == "two_tone")
    truth = text_bar_row(StandIn(toy_root, oid, "truth"), toy_root, oid).parts
    assert truth.present == [True] * n_parts and truth.in_place == [True] * n_parts
    blank = text_bar_row(StandIn(toy_root, oid, "background"), toy_root, oid).parts
    assert blank.present == [False] * n_parts and blank.layout in (None, False)
    row = image_bar_row(StandIn(toy_root, oid, "truth", task="image"), toy_root, oid)
    assert row.psnr == float("inf") and row.parts.in_place == [True] * n_parts


class RoundTrip:
    """Stands in for a model's VAE: latents (B, C, F, h, w) are the images themselves, and the
    decoder adds `shift` to every pixel."""

    def __init__(self, shift=0.0):
        self.settings = SimpleNamespace(resolution=RES, fovy=toyworld.FOVY, background=GREY, task="text")
        self.pipeline = SimpleNamespace(unet=SimpleNamespace(dtype=torch.float32))
        self.shift = shift

    def encode(self, images):
        return images.permute(0, 2, 1, 3, 4)

    def decode(self, latents):
        return latents.permute(0, 2, 1, 3, 4) + self.shift


def test_vae_round_trip_row_scores_the_decoded_ground_truth(toy_root):
    from videomv.toy.bar import vae_round_trip_row

    oid = first_object(toy_root)
    n_parts = len(toy_object_for(toy_root, oid).primitives) + (toy_object_for(toy_root, oid).recipe[0] == "two_tone")
    exact = vae_round_trip_row(RoundTrip(), toy_root, oid)
    assert exact.psnr == float("inf") and exact.parts.present == [True] * n_parts
    assert exact.caption == toy_object_for(toy_root, oid).caption
    # 0.1 brighter everywhere: 20 dB, a little more where a bright pixel clips at 1
    assert 20.0 - 1e-4 <= vae_round_trip_row(RoundTrip(shift=0.1), toy_root, oid).psnr < 21.0


def test_vae_round_trip_row_adds_the_latent_noise_it_is_given(toy_root):
    from videomv.models.latents import smooth_noise
    from videomv.toy.bar import object_views, vae_round_trip_row

    oid = first_object(toy_root)
    model = RoundTrip()
    _, _, truth = object_views(model, toy_root, oid)
    noisy = vae_round_trip_row(model, toy_root, oid, latent_noise=0.05, seed=7, noise_cell=2)
    # identity VAE: the views are truth + 0.05 x the same smooth noise, clipped to [0, 1]
    noise = smooth_noise((1, 3, len(truth), RES, RES), 2, torch.Generator().manual_seed(7))
    expected = (truth + 0.05 * noise[0].permute(1, 0, 2, 3)).clamp(0, 1)
    mse = ((expected - truth) ** 2).flatten(1).mean(1)
    assert noisy.psnr == pytest.approx(float((-10 * torch.log10(mse)).mean()), rel=1e-5)
    assert 24.0 < noisy.psnr < 28.0  # 0.05 std: 26 dB less what clipping at 0 and 1 removes
    assert vae_round_trip_row(model, toy_root, oid, latent_noise=0.05, seed=8, noise_cell=2).psnr != noisy.psnr


def test_percent_counts_the_true_hits():
    from videomv.toy.bar import percent

    assert percent([True, False, True, True]) == "75 % (3/4)"
    assert percent(h for h in [False]) == "0 % (0/1)"
    assert percent([]) == "n/a"


def test_part_summary_counts_parts_and_the_layouts_scored():
    from videomv.toy.bar import part_summary
    from videomv.toy.parts import PartScore

    rows = [SimpleNamespace(parts=PartScore("stacked", ("red", "blue"), [True, False], [True, True], True)),
            SimpleNamespace(parts=PartScore("single", ("green",), [True], [False], None))]
    assert part_summary(rows, "in_place") == ("67 % (2/3)", "100 % (1/1)")  # single objects have no layout
    assert part_summary(rows, "present") == ("67 % (2/3)", "100 % (1/1)")
    assert part_summary(rows[1:], "present") == ("0 % (0/1)", "n/a")


def test_training_captions_are_the_train_splits(toy_root):
    import json

    from videomv.toy.bar import training_captions

    captions = json.loads((toy_root / "captions.json").read_text())  # as written with the renders
    train = (toy_root / "train.txt").read_text().split()
    assert training_captions(toy_root) == {captions[o] for o in train}


def load_tool():
    from repo_scripts import load_script

    return load_script("tools/toy_model_bar.py")


def test_tool_reports_seen_and_unseen_groups_over_seeds(toy_root, tmp_path, capsys):
    import json

    from tiny_videomv import tiny_image_videomv, tiny_text_videomv

    tool = load_tool()
    tiny_text_videomv(with_reconstructor=False).save_pretrained(tmp_path / "t2mv")
    tiny_image_videomv().save_pretrained(tmp_path / "i2mv")
    tool.main(["--data-root", str(toy_root), "--split", "test", "--limit", "1", "--seeds", "2", "--steps", "2",
               "--no-3d-aware", "--text-model", str(tmp_path / "t2mv"), "--image-model", str(tmp_path / "i2mv")])
    out = capsys.readouterr().out
    test_id = (toy_root / "test.txt").read_text().split()[0]
    assert out.count(f"| {test_id} | 0 |") == 2 and out.count(f"| {test_id} | 1 |") == 2  # text and image, 2 seeds
    assert "| all | 2 |" in out and "over 1 objects x 2 seeds" in out
    assert out.count("VAE round trip of the ground truth") == 2 and out.count("| all | 1 |") == 2  # one per model
    captions = json.loads((toy_root / "captions.json").read_text())
    seen = captions[test_id] in {captions[o] for o in (toy_root / "train.txt").read_text().split()}
    assert (f"| seen | {2 if seen else 0} |" in out) and (f"| unseen | {0 if seen else 2} |" in out)
    # a row for the object's arrangement, in each table; none for arrangements no object has
    arrangement = toy_object_for(toy_root, test_id).recipe[0]
    assert out.count(f"| {arrangement} | 2 |") == 2 and out.count(f"| {arrangement} | 1 |") == 2
    assert not any(f"| {other} |" in out for other in toyworld.ARRANGEMENTS if other != arrangement)
    with pytest.raises(SystemExit) as e:
        tool.main(["--data-root", str(toy_root), "--seeds", "0"])
    assert e.value.code == 2 and "--seeds must be >= 1" in capsys.readouterr().err
    # --captions: the train split's own objects are all "seen"
    missing = tmp_path / "missing"
    tool.main(["--data-root", str(toy_root), "--split", "train", "--captions", "seen", "--limit", "1",
               "--text-model", str(missing), "--image-model", str(missing)])
    assert "no text model" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        tool.main(["--data-root", str(toy_root), "--split", "train", "--captions", "unseen"])
    assert e.value.code == 2 and "--captions unseen: no such object" in capsys.readouterr().err


def test_cross_attention_by_timestep_closed_form(toy_root):
    from tiny_videomv import tiny_image_videomv, tiny_text_videomv

    from videomv.eval.cross_attention import cross_attention_layers, token_roles
    from videomv.toy.bar import cross_attention_by_timestep

    model = tiny_text_videomv(with_reconstructor=False)
    pipe = model.pipeline
    objects = (toy_root / "test.txt").read_text().split()[:2]
    tables = cross_attention_by_timestep(model, toy_root, objects, [999, 100])
    layers = cross_attention_layers(pipe.unet)
    assert list(tables) == [999, 100] and all(len(rows) == len(layers) + 1 for rows in tables.values())
    for rows in tables.values():
        for r in rows:
            assert sum(r.shares.values()) == pytest.approx(1.0, abs=1e-5) and 0 < r.entropy <= r.uniform + 1e-6
    # Closed form: with zero queries every location attends uniformly, so each role's share is its
    # token count over 77 and the entropy is log 77.
    for layer in layers.values():
        torch.nn.init.zeros_(layer.to_q.weight)
    captions = [toy_object_for(toy_root, o).caption for o in objects]
    roles = token_roles(pipe.text_conditioner.tokenize(captions), pipe.tokenizer.eos_token_id)
    counts = torch.stack([(roles == k).float().sum(1) for k in range(4)], 1).mean(0) / roles.shape[1]
    for r in cross_attention_by_timestep(model, toy_root, objects, [500])[500]:
        assert list(r.shares.values()) == pytest.approx(counts.tolist(), abs=1e-5)
        assert r.entropy == pytest.approx(math.log(77), abs=1e-4) and r.uniform == pytest.approx(math.log(77))
    with pytest.raises(ValueError, match="text model"):
        cross_attention_by_timestep(tiny_image_videomv(with_reconstructor=False), toy_root, objects, [500])
    with pytest.raises(ValueError, match="at least one"):
        cross_attention_by_timestep(model, toy_root, [], [500])


def test_grounding_by_timestep_closed_form(toy_root):
    from tiny_videomv import tiny_text_videomv

    from videomv.eval.cross_attention import cross_attention_layers
    from videomv.toy.bar import grounding_by_timestep

    model = tiny_text_videomv(with_reconstructor=False)
    objects = (toy_root / "test.txt").read_text().split()[:2]
    result = grounding_by_timestep(model, toy_root, objects, [999, 100])
    assert list(result) == [999, 100]
    assert all(0 <= inside <= 1 and 0 < uniform < 1 for inside, uniform in result.values())
    # Closed form: with zero queries every location attends uniformly, so a word's share on its
    # part is the part's share of the layer's grid.
    for layer in cross_attention_layers(model.pipeline.unet).values():
        torch.nn.init.zeros_(layer.to_q.weight)
    inside, uniform = grounding_by_timestep(model, toy_root, objects, [500])[500]
    assert inside == pytest.approx(uniform, abs=1e-6)
