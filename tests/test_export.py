"""tools/export_embedded.py: model folders without the bundled tokenizer, sharing identical parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tiny_videomv import RESOLUTION, tiny_text_videomv
from videomv.models.conditioning import bundled_clip_tokenizer, is_bundled_clip_tokenizer
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[1]


def load_tool():
    spec = importlib.util.spec_from_file_location("export_embedded", REPO / "tools" / "export_embedded.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_tokenizer_is_recognised_and_others_are_not():
    assert is_bundled_clip_tokenizer(bundled_clip_tokenizer())
    used = bundled_clip_tokenizer()
    used(["a red cube"], padding="max_length", max_length=77, truncation=True)  # leaves call state behind
    assert is_bundled_clip_tokenizer(used)
    assert not is_bundled_clip_tokenizer(bundled_clip_tokenizer(model_max_length=32))
    assert not is_bundled_clip_tokenizer(bundled_clip_tokenizer(pad_token="<|endoftext|>"))


def test_export_leaves_out_the_tokenizer_links_shared_parts_and_loads_back(tmp_path):
    model = tiny_text_videomv(seed=0)
    model.pipeline.save_pretrained(tmp_path / "run" / "final")
    model.reconstructor.save_pretrained(tmp_path / "run" / "reconstructor")
    other = tiny_text_videomv(seed=1)  # different weights everywhere
    other.pipeline.vae = model.pipeline.vae  # ... but the same VAE
    other.pipeline.save_pretrained(tmp_path / "run2" / "final")

    tool = load_tool()
    common = ["--task", "text", "--resolution", str(RESOLUTION), "--dtype", "fp32", "--steps", "5"]
    first, second = tmp_path / "embedded" / "a", tmp_path / "embedded" / "b"
    tool.main(["--pipeline", str(tmp_path / "run" / "final"), "--reconstructor", str(tmp_path / "run" / "reconstructor"),
               "--out", str(first)] + common)
    tool.main(["--pipeline", str(tmp_path / "run2" / "final"), "--reconstructor",
               str(tmp_path / "run" / "reconstructor"), "--out", str(second), "--share-with", str(first)] + common)

    assert not (first / "tokenizer").exists() and not (second / "tokenizer").exists()
    linked = sorted(p.name for p in second.iterdir() if p.is_symlink())
    assert linked == ["reconstructor", "scheduler", "vae"]  # unet and text encoder differ
    assert (second / "vae").resolve() == (first / "vae").resolve()
    assert not (second / "vae").readlink().is_absolute()

    loaded = VideoMV.from_pretrained(first)
    assert is_bundled_clip_tokenizer(loaded.pipeline.tokenizer)
    kwargs = dict(num_inference_steps=3, guidance_scale=3.0, seed=0, three_d_aware=False, progress=False)
    torch.testing.assert_close(loaded("a red cube", **kwargs).images, model("a red cube", **kwargs).images)
    reloaded_second = VideoMV.from_pretrained(second)
    torch.testing.assert_close(reloaded_second("a red cube", **kwargs).images, other("a red cube", **kwargs).images)


def test_export_sets_the_timestep_spacing_and_keeps_the_rest_of_the_schedule(tmp_path):
    from diffusers import DDIMScheduler

    model = tiny_text_videomv(seed=0, with_reconstructor=False)
    zero_snr = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                    prediction_type="v_prediction", rescale_betas_zero_snr=True)
    model.pipeline.scheduler = DDIMScheduler(**zero_snr)
    model.pipeline.save_pretrained(tmp_path / "final")
    tool = load_tool()
    tool.main(["--task", "text", "--resolution", str(RESOLUTION), "--dtype", "fp32", "--pipeline",
               str(tmp_path / "final"), "--out", str(tmp_path / "out"), "--timestep-spacing", "trailing"])
    scheduler = VideoMV.from_pretrained(tmp_path / "out").pipeline.scheduler
    reference = DDIMScheduler(**zero_snr, timestep_spacing="trailing")
    assert scheduler.config.rescale_betas_zero_snr and scheduler.config.prediction_type == "v_prediction"
    torch.testing.assert_close(scheduler.alphas_cumprod, reference.alphas_cumprod, rtol=0, atol=0)
    scheduler.set_timesteps(50)
    reference.set_timesteps(50)
    assert scheduler.timesteps.tolist() == reference.timesteps.tolist() and scheduler.timesteps[0] == 999


def test_export_swaps_in_a_vae_only_when_its_encoder_is_the_same(tmp_path):
    import pytest
    from diffusers import AutoencoderKL

    model = tiny_text_videomv(seed=0, with_reconstructor=False)
    model.pipeline.save_pretrained(tmp_path / "final")
    new_decoder, new_encoder = tmp_path / "vae_dec", tmp_path / "vae_enc"
    for folder, part in ((new_decoder, "decoder"), (new_encoder, "encoder")):
        vae = AutoencoderKL.from_pretrained(tmp_path / "final" / "vae")
        with torch.no_grad():
            getattr(vae, part).conv_out.weight.add_(0.1)
        vae.save_pretrained(folder)
    tool = load_tool()
    common = ["--task", "text", "--resolution", str(RESOLUTION), "--dtype", "fp32", "--pipeline", str(tmp_path / "final")]
    tool.main(common + ["--out", str(tmp_path / "ok"), "--vae", str(new_decoder)])
    exported = AutoencoderKL.from_pretrained(tmp_path / "ok" / "vae")
    torch.testing.assert_close(exported.decoder.conv_out.weight,
                               AutoencoderKL.from_pretrained(new_decoder).decoder.conv_out.weight, rtol=0, atol=0)
    with pytest.raises(ValueError, match="encoder differs"):
        tool.main(common + ["--out", str(tmp_path / "bad"), "--vae", str(new_encoder)])
    assert not (tmp_path / "bad").exists()
