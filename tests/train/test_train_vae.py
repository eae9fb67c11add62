"""Toy VAE training: loss falls, the exported model loads with diffusers, its config carries the
latent scaling factor (1/std), and the reported held-out PSNR matches scikit-image's; the
decoder-only phase on several backgrounds leaves the encoder and the scaling untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from diffusers import AutoencoderKL
from skimage.metrics import peak_signal_noise_ratio

from videomv.train.config import load_config
from videomv.train.datasets import build_multiview_dataset
from videomv.train.engine import train
from videomv.data.common import composite, parse_background
from videomv.train.schema import VAEConfig
from videomv.train.losses import reconstruction_loss
from videomv.train.vae import VAETask, latent_std, recomposite

from videomv.toy import build_configured_world

REPO = Path(__file__).resolve().parents[2]

TINY = [
    "data.toy.num_objects=6", "data.toy.resolution=16",
    "data.toy.split=[0.5,0.25,0.25]", "data.toy.workers=1", "data.resolution=16",
    "vae.init.block_out_channels=[8,16]", "vae.init.down_block_types=[DownEncoderBlock2D,DownEncoderBlock2D]",
    "vae.init.up_block_types=[UpDecoderBlock2D,UpDecoderBlock2D]", "vae.init.norm_num_groups=4",
    "vae.init.sample_size=16", "dataloader.batch_size=2", "views_per_object=4", "logging.trackers=[]",
    "lr_scheduler.name=constant", "lr_scheduler.warmup_steps=0",
]


def run(config: str, overrides: list[str]):
    AcceleratorState._reset_state(True)
    try:
        cfg = load_config(REPO / "configs" / config, TINY + overrides, VAEConfig)
        return cfg, train(cfg, VAETask, prepare=build_configured_world)
    finally:
        AcceleratorState._reset_state(True)


@pytest.fixture(scope="module")
def first_phase(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vae")
    out = tmp / "vae_run"
    cfg, summary = run("toy_vae.yaml", [f"data.root={tmp / 'world16'}", f"output_dir={out}", "max_steps=30",
                                        "optimizer.lr=3e-3", "checkpoint.every=15", "validation.every=15"])
    return tmp, out, cfg, summary


def test_toy_vae_training_and_export(first_phase):
    tmp_path, out, cfg, summary = first_phase
    losses = [h["loss"] for h in summary["history"]]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses

    vae = AutoencoderKL.from_pretrained(out / "vae")
    assert (out / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    assert tuple(vae.config.block_out_channels) == (8, 16)  # factor 2 at this test size
    train_set = build_multiview_dataset(cfg.data, "train")
    assert vae.config.scaling_factor == pytest.approx(1.0 / latent_std(vae, train_set), rel=1e-5)
    assert vae.config.scaling_factor != 0.18215  # replaced, not the diffusers default

    metrics = json.loads((out / "vae" / "metrics.json").read_text())
    val_set = build_multiview_dataset(cfg.data, "val")
    assert len(val_set) > 0
    scores = []
    with torch.no_grad():
        for i in range(len(val_set)):
            x = val_set[i]["images"][[0, 6, 12, 18]]
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
            ref = ((x + 1) / 2).clamp(0, 1).numpy()
            rec = ((recon + 1) / 2).clamp(0, 1).numpy()
            scores.append(peak_signal_noise_ratio(ref, rec, data_range=1.0))
    assert metrics["heldout_psnr"] == pytest.approx(float(np.mean(scores)), abs=1e-3)
    assert metrics["scaling_factor"] == pytest.approx(vae.config.scaling_factor)
    validations = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [v["step"] for v in validations] == [15, 30]


def test_recomposite_equals_compositing_on_the_new_background():
    torch.manual_seed(0)
    rgb, alpha = torch.rand(2, 3, 8, 8), torch.rand(2, 1, 8, 8)
    grey, white = parse_background("grey"), parse_background("white")
    on_grey = composite(rgb, alpha, grey) * 2 - 1
    on_white = composite(rgb, alpha, white) * 2 - 1
    torch.testing.assert_close(recomposite(on_grey, alpha, grey, torch.stack([white, white])), on_white)


def test_object_weighted_reconstruction_loss_by_hand():
    recon = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]]).expand(1, 3, 2, 2)
    target = torch.zeros(1, 3, 2, 2)
    alpha = torch.tensor([[[[0.0, 0.0], [1.0, 0.5]]]])
    assert float(reconstruction_loss(recon, target)) == pytest.approx(7 / 4)
    assert float(reconstruction_loss(recon, target, "mse")) == pytest.approx(21 / 4)
    # weights 1, 1, 1 + 3, 1 + 1.5: (0 + 1 + 4 * 2 + 2.5 * 4) / (1 + 1 + 4 + 2.5)
    assert float(reconstruction_loss(recon, target, "l1", 1 + 3 * alpha)) == pytest.approx(19 / 8.5)
    torch.testing.assert_close(reconstruction_loss(recon, target, "l1", torch.ones(1, 1, 2, 2)),
                               reconstruction_loss(recon, target))


@pytest.mark.parametrize("config", ["toy_vae_backgrounds.yaml", "toy_vae_colours.yaml"])
def test_decoder_only_phase_keeps_the_latent_space(first_phase, config):
    tmp_path, first, _, _ = first_phase
    out = tmp_path / f"decoder_run_{config}"
    with pytest.raises(ValueError, match="vae.path"):
        run(config, [f"data.root={tmp_path / 'world16'}", f"output_dir={out}", "vae.path=null"])
    run(config, [f"data.root={tmp_path / 'world16'}", f"output_dir={out}", f"vae.path={first / 'vae'}",
                                     "max_steps=10", "validation.every=0", "optimizer.lr=3e-3"])
    before, after = AutoencoderKL.from_pretrained(first / "vae"), AutoencoderKL.from_pretrained(out / "vae")
    assert after.config.scaling_factor == before.config.scaling_factor
    for name, p in after.state_dict().items():
        same = torch.equal(p, before.state_dict()[name])
        assert same == (name.startswith("encoder.") or name.startswith("quant_conv.")), name
    metrics = json.loads((out / "vae" / "metrics.json").read_text())
    assert set(metrics) == {"heldout_psnr", "scaling_factor", "psnr_grey", "psnr_white"}
    assert metrics["psnr_grey"] == pytest.approx(metrics["heldout_psnr"])


class RecordInput(torch.nn.Module):
    """Stands in for `Autoencode`: keeps the images it is given, reconstructs them exactly."""

    def forward(self, x, latent_noise=0.0, cell=4):
        self.seen = x
        return x, torch.zeros(1), torch.zeros(1)


@pytest.mark.parametrize("backgrounds", [["white"], ["grey"], ["grey", "white"]])
def test_decoder_trains_on_its_backgrounds_even_one_unlike_the_datasets(first_phase, backgrounds):
    from accelerate import Accelerator

    tmp_path, first, _, _ = first_phase
    cfg = load_config(REPO / "configs" / "toy_vae_colours.yaml",
                      TINY + [f"data.root={tmp_path / 'world16'}", f"vae.path={first / 'vae'}",
                              f"backgrounds={backgrounds}".replace("'", "")], VAEConfig)
    task = VAETask(cfg, Accelerator(cpu=True))
    items = [task.train_dataset[i] for i in range(2)]
    batch = {k: torch.stack([item[k] for item in items]) for k in ("images", "alphas")}
    recorder = RecordInput()
    task.loss(batch, {"vae": recorder}, step=0)
    x = recorder.seen  # (B * views_per_object, 3, H, W), views drawn at random: compare per image
    on_grey = batch["images"].flatten(0, 1)
    alphas = batch["alphas"].flatten(0, 1)
    candidates = {name: recomposite(on_grey, alphas, parse_background("grey"), parse_background(name))
                  for name in ("grey", "white")}
    for image in x:
        matches = {name for name, c in candidates.items() if any(torch.allclose(image, v, atol=1e-6) for v in c)}
        assert matches and matches <= set(backgrounds), (backgrounds, matches)
    if backgrounds == ["white"]:
        assert (x[:, :, 0, 0] > 0.99).all()  # a corner pixel is background: white is 1 in [-1, 1]


def test_latent_noise_is_smooth_and_relative_to_the_latents_spread():
    from videomv.models.latents import smooth_noise
    from videomv.train.vae import Autoencode

    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=4, latent_channels=4,
                        sample_size=16).eval()
    seen = []
    vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    torch.manual_seed(5)
    _, mean, _ = Autoencode(vae)(x, latent_noise=0.5, cell=4)
    torch.manual_seed(5)
    with torch.no_grad():
        z = vae.encode(x).latent_dist.sample()  # the same posterior sample, then the noise drawn after it
        expected = z + 0.5 * z.std() * smooth_noise(z.shape, 4)
        torch.testing.assert_close(seen[0], vae.post_quant_conv(expected))
    _, mean_plain, _ = Autoencode(vae)(x)
    torch.testing.assert_close(mean_plain, mean)  # the encoder's output is unchanged: noise is the decoder's
    with pytest.raises(ValueError, match="latent_noise"):
        load_config(REPO / "configs" / "toy_vae_robust.yaml", ["latent_noise=-0.1"], VAEConfig)
    with pytest.raises(ValueError, match="latent_noise_cell"):
        load_config(REPO / "configs" / "toy_vae_robust.yaml", ["latent_noise_cell=0"], VAEConfig)
