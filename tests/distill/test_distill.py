"""Multi-view score distillation: the SDS gradient against its formula on a tiny model, the step
draws, the config, seeded runs, the CLI, and the proxy PSNR rising on the embedded text model."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from tiny_videomv import tiny_text_videomv
from videomv.distill import (DistillConfig, MultiViewPrior, distill, load_config, random_orbit, sample_timestep,
                             sds_gradient, sds_loss)
from videomv.geometry import camera_vector, orbit_angles, orbit_cameras
from videomv.sampling.ddim import ddim_with

REPO = Path(__file__).resolve().parents[2]
EMBEDDED = REPO / "data" / "embedded" / "t2mv"
PROMPT = "a red sphere"


@pytest.fixture(scope="module")
def tiny():
    return tiny_text_videomv(with_reconstructor=False)


def expected_gradient(pipe, z, t, noise, c2w, scale, weight_one=False):
    """The SDS gradient by hand: w(t) (eps_hat - eps), eps_hat from the two guidance branches."""
    a = float(pipe.scheduler.alphas_cumprod[t])
    noisy = math.sqrt(a) * z + math.sqrt(1 - a) * noise
    text = pipe.encode_prompt([PROMPT], None, True)
    cams = camera_vector(c2w)[None]
    with torch.no_grad():
        out = pipe.unet(torch.cat([noisy, noisy]), torch.tensor(t), encoder_hidden_states=text,
                        cameras=torch.cat([cams, cams]), return_dict=False)[0]
    if pipe.scheduler.config.prediction_type == "v_prediction":
        out = math.sqrt(a) * out + math.sqrt(1 - a) * torch.cat([noisy, noisy])  # eps from v
    eps_hat = out[:1] + scale * (out[1:] - out[:1])
    return (1.0 if weight_one else 1 - a) * (eps_hat - noise)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
def test_sds_gradient_equals_its_formula(tiny, prediction):
    pipe = tiny.pipeline
    original = pipe.scheduler
    pipe.scheduler = ddim_with(original.config, prediction_type=prediction)
    try:
        prior = MultiViewPrior(pipe, PROMPT)
        g = torch.Generator().manual_seed(0)
        z0 = torch.randn(1, 4, 4, 16, 16, generator=g)
        noise = torch.randn(1, 4, 4, 16, 16, generator=g)
        c2w = orbit_cameras(4, 20.0, 2.0)
        z = z0.clone().requires_grad_(True)
        grad = sds_gradient(prior, z, 600, noise, c2w, 7.5)
        sds_loss(z, grad).backward()
        want = expected_gradient(pipe, z0, 600, noise, c2w, 7.5)
        torch.testing.assert_close(z.grad, want, rtol=1e-4, atol=1e-5)
        uniform = sds_gradient(prior, z0, 600, noise, c2w, 7.5, weighting="uniform")
        torch.testing.assert_close(uniform, expected_gradient(pipe, z0, 600, noise, c2w, 7.5, True), rtol=1e-4, atol=1e-5)
        # the render cameras are the camera condition: other cameras, another gradient
        other = sds_gradient(prior, z0, 600, noise, orbit_cameras(4, -10.0, 2.0, start_azimuth=45), 7.5)
        assert (other - want).abs().max() > 1e-4
    finally:
        pipe.scheduler = original


def test_sds_rejects_mismatched_inputs(tiny):
    prior = MultiViewPrior(tiny.pipeline, PROMPT)
    z = torch.zeros(1, 4, 4, 16, 16)
    with pytest.raises(ValueError, match="c2w"):
        sds_gradient(prior, z, 10, z, orbit_cameras(3), 5.0)
    with pytest.raises(ValueError, match="noise"):
        sds_gradient(prior, z, 10, z[:, :, :2], orbit_cameras(4), 5.0)
    with pytest.raises(ValueError, match="t must"):
        sds_gradient(prior, z, 1000, z, orbit_cameras(4), 5.0)
    with pytest.raises(ValueError, match="prompt"):
        MultiViewPrior(tiny.pipeline, "  ")


def test_step_draws():
    g = torch.Generator().manual_seed(1)
    ts = [sample_timestep(s, 100, (0.02, 0.98), "random", 1000, g) for s in range(200)]
    assert min(ts) >= 19 and max(ts) <= 980 and len(set(ts)) > 100
    # anneal: the upper end falls linearly from 0.98 to 0.02 of the 999 steps
    ts = [sample_timestep(s, 100, (0.02, 0.98), "anneal", 1000, g) for s in range(100)]
    assert all(t <= round((0.98 - 0.96 * s / 99) * 999) + 1 for s, t in enumerate(ts)) and ts[-1] <= 21
    cams = random_orbit(torch.Generator().manual_seed(3), orbit_views=24, window=8, elevation_range=(5, 30), radius=2.0)
    elevation, azimuth, radius = orbit_angles(cams)
    assert cams.shape == (8, 4, 4) and 5 <= float(elevation[0]) <= 30
    torch.testing.assert_close(elevation, elevation[:1].expand(8))
    torch.testing.assert_close(radius, torch.full((8,), 2.0))
    steps = (azimuth.diff() % 360)
    torch.testing.assert_close(steps, torch.full((7,), 15.0), atol=1e-3, rtol=0)
    assert float(azimuth[0] % 15) < 1e-3 or float(azimuth[0] % 15) > 15 - 1e-3  # on the trained 24-view orbit
    again = random_orbit(torch.Generator().manual_seed(3), orbit_views=24, window=8, elevation_range=(5, 30), radius=2.0)
    assert torch.equal(cams, again)
    with pytest.raises(ValueError, match="anneal"):
        sample_timestep(0, 10, (0.1, 0.9), "cosine", 1000, g)
    with pytest.raises(ValueError, match="window"):
        random_orbit(g, 24, 25)


def test_config_file_overrides_and_errors(tmp_path):
    path = tmp_path / "sds.yaml"
    path.write_text("steps: 50\nguidance: 12.5\n")
    cfg = load_config(path, ["views=8", "t_range=[0.1,0.9]"])
    assert (cfg.steps, cfg.guidance, cfg.views, cfg.t_range) == (50, 12.5, 8, [0.1, 0.9])
    with pytest.raises(ValueError, match="t_schedule"):
        load_config(None, ["t_schedule=cosine"])
    with pytest.raises(ValueError, match="stepz"):
        load_config(None, ["stepz=3"])
    with pytest.raises(ValueError, match="guidance"):
        load_config(None, ["guidance=0.5"])
    with pytest.raises(ValueError, match="views"):
        DistillConfig(views=30)
    path.write_text("steps: [1,\n")
    with pytest.raises(ValueError, match="distillation config"):
        load_config(path)


def small_config(**changes) -> DistillConfig:
    values = dict(steps=3, views=4, num_gaussians=64, reference_steps=2, eval_every=0, seed=5)
    return DistillConfig(**{**values, **changes})


def test_distill_is_seeded_and_moves_the_gaussians(tiny):
    a = distill(tiny, PROMPT, small_config(), progress=False)
    b = distill(tiny, PROMPT, small_config(), progress=False)
    assert [h["step"] for h in a.history] == [0, 3]
    assert torch.equal(a.gaussians.means, b.gaussians.means) and torch.equal(a.gaussians.colors, b.gaussians.colors)
    c = distill(tiny, PROMPT, small_config(seed=6), progress=False)
    assert not torch.equal(a.gaussians.means, c.gaussians.means)
    start = distill(tiny, PROMPT, small_config(steps=1, lr=1e-9), progress=False)
    assert (a.gaussians.means - start.gaussians.means).abs().max() > 1e-4
    assert a.renders.shape == a.reference.shape == (24, 3, 32, 32)


def _distill_main():
    spec = importlib.util.spec_from_file_location("distill_script", REPO / "scripts" / "distill.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_writes_everything_and_rejects_bad_input(tiny, tmp_path):
    from videomv.gaussians import load_ply

    model_dir = tmp_path / "model"
    tiny.save_pretrained(model_dir)
    main = _distill_main()
    out = tmp_path / "out"
    assert main(["--prompt", PROMPT, "--model", str(model_dir), "--out", str(out), "--video-resolution", "32",
                 "--device", "cpu", "steps=2", "views=4", "num_gaussians=32", "reference_steps=2"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"gaussians.ply", "views", "grid.png", "reference_grid.png", "history.json", "config.yaml"} <= names
    assert "turntable.mp4" in names or "turntable.gif" in names
    assert len(load_ply(out / "gaussians.ply")) == 32 and len(list((out / "views").iterdir())) == 24
    assert "steps: 2" in (out / "config.yaml").read_text()
    for bad in (["guidance=0"], ["t_schedule=cosine"], ["steps"]):
        with pytest.raises(SystemExit) as err:
            main(["--prompt", PROMPT, "--model", str(model_dir), "--out", str(tmp_path / "bad"), *bad])
        assert err.value.code == 2
    assert not (tmp_path / "bad").exists()


def _embedded_run(steps: int, **changes):
    if not EMBEDDED.is_dir():
        pytest.skip("embedded text model not present")
    from videomv.sampling.system import VideoMV

    torch.manual_seed(0)
    model = VideoMV.from_pretrained(EMBEDDED)
    return distill(model, PROMPT, DistillConfig(**{**EMBEDDED_SETTINGS, "steps": steps, **changes}), progress=False)


EMBEDDED_SETTINGS = dict(views=8, reference_steps=20, seed=0)


def test_proxy_psnr_rises_on_the_embedded_model():
    """Short run (CI): measured +0.30 dB after 20 steps (13.21 -> 13.51 dB, 8-view windows)."""
    result = _embedded_run(20, eval_every=0)
    first, last = result.history[0]["psnr"], result.history[-1]["psnr"]
    assert last > first + 0.1, result.history


@pytest.mark.slow
def test_proxy_psnr_rises_over_200_steps():
    """The 200-step run (8-view windows, guidance 20, annealed timesteps). Measured every 50 steps:
    13.21, 14.61, 19.60, 20.83, 20.42 dB."""
    result = _embedded_run(200, eval_every=50)
    psnrs = [h["psnr"] for h in result.history]
    assert psnrs[-1] > psnrs[0] + 3.0, result.history
    assert all(b > a - 1.0 for a, b in zip(psnrs, psnrs[1:])), result.history  # no collapse on the way
