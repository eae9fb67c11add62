"""tools/export_embedded.py: model folders without the bundled tokenizer, sharing identical parts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tiny_videomv import RESOLUTION, tiny_text_videomv
from videomv.geometry import orbit_cameras
from videomv.models.conditioning import bundled_clip_tokenizer, is_bundled_clip_tokenizer
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[2]


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


# -- VideoMV.from_parts / save_pretrained ----------------------------------------------------------

RUN = dict(num_inference_steps=2, guidance_scale=3.0, seed=0, three_d_aware=False, progress=False,
           cameras=orbit_cameras(4, 15.0, 2.0))


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_from_parts_and_save_pretrained_round_trip(tmp_path):
    import json

    from safetensors import safe_open

    from videomv import VideoMV as TopLevel
    from videomv.defaults import TEXT

    assert TopLevel is VideoMV
    model = tiny_text_videomv(seed=0)
    model.pipeline.save_pretrained(tmp_path / "run" / "final")
    model.reconstructor.save_pretrained(tmp_path / "run" / "reconstructor")
    joined = VideoMV.from_parts(pipeline=tmp_path / "run" / "final", reconstructor=tmp_path / "run" / "reconstructor",
                                settings={"resolution": RESOLUTION, "guidance_scale": 3.0})
    assert joined.settings.task == "text" and joined.settings.elevation == TEXT.elevation
    assert joined.settings.guidance_scale == 3.0 and joined.settings.resolution == RESOLUTION
    expected = model("a red cube", **RUN).images
    assert torch.equal(joined("a red cube", **RUN).images, expected)

    # fp32 storage: the same model back, bit for bit
    saved = joined.save_pretrained(tmp_path / "fp32")
    assert json.loads((saved / "videomv.json").read_text())["guidance_scale"] == 3.0
    assert not (saved / "tokenizer").exists()  # the bundled tokenizer is left out
    assert all("_name_or_path" not in p.read_text() for p in saved.rglob("*.json"))
    assert torch.equal(VideoMV.from_pretrained(saved)("a red cube", **RUN).images, expected)

    # fp16 storage: weights stored rounded, the model in memory untouched
    unet_before, recon_before = _state(joined.pipeline.unet), _state(joined.reconstructor)
    half = joined.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    for name, before in ((("unet", "diffusion_pytorch_model.safetensors"), unet_before),
                         (("reconstructor", "model.safetensors"), recon_before)):
        with safe_open(half.joinpath(*name), "pt") as f:
            stored = {k: f.get_tensor(k) for k in f.keys()}
        assert {v.dtype for v in stored.values()} == {torch.float16}
        assert all(torch.equal(stored[k], before[k].half()) for k in before)
    assert all(torch.equal(v, unet_before[k]) for k, v in joined.pipeline.unet.state_dict().items())
    assert all(torch.equal(v, recon_before[k]) for k, v in joined.reconstructor.state_dict().items())
    assert joined.pipeline.unet.dtype == torch.float32
    loaded = VideoMV.from_pretrained(half)
    assert all(torch.equal(v, unet_before[k].half().float()) for k, v in loaded.pipeline.unet.state_dict().items())


def test_save_pretrained_links_shared_parts_relatively(tmp_path):
    import shutil

    first = tiny_text_videomv(seed=0)
    second = tiny_text_videomv(seed=1)
    second.pipeline.vae, second.reconstructor = first.pipeline.vae, first.reconstructor
    first.save_pretrained(tmp_path / "models" / "a")
    second.save_pretrained(tmp_path / "models" / "b", share_with=tmp_path / "models" / "a")
    linked = sorted(p.name for p in (tmp_path / "models" / "b").iterdir() if p.is_symlink())
    assert linked == ["reconstructor", "scheduler", "vae"]  # unet and text encoder differ
    shutil.move(tmp_path / "models", tmp_path / "moved")  # relative links survive a move of both
    reloaded = VideoMV.from_pretrained(tmp_path / "moved" / "b")
    assert torch.equal(reloaded("a red cube", **RUN).images, second("a red cube", **RUN).images)


def test_save_pretrained_refuses_a_non_empty_folder_and_bad_parts(tmp_path):
    import pytest

    model = tiny_text_videomv(seed=0, with_reconstructor=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        model.save_pretrained(tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary left behind
    (tmp_path / "empty").mkdir()
    model.save_pretrained(tmp_path / "empty")  # an empty folder is fine
    assert (tmp_path / "empty" / "videomv.json").is_file()

    from videomv.sampling.system import VideoMVSettings

    with pytest.raises(ValueError, match="task 'image'"):
        VideoMV.from_parts(model.pipeline, settings=VideoMVSettings.for_task("image"))
    with pytest.raises(TypeError, match="T2MVPipeline or an I2MVPipeline"):
        VideoMV.from_parts(model.pipeline.unet)
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        VideoMV.from_parts(tmp_path / "out")


def test_export_refuses_a_non_empty_out_and_keeps_its_files(tmp_path, capsys):
    import pytest

    model = tiny_text_videomv(seed=0, with_reconstructor=False)
    model.pipeline.save_pretrained(tmp_path / "final")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    tool = load_tool()
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--task", "text", "--resolution", str(RESOLUTION), "--pipeline", str(tmp_path / "final"),
                   "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"--out {out} exists and is not empty" in err
    assert (out / "notes.txt").read_text() == "keep me" and [p.name for p in out.iterdir()] == ["notes.txt"]
    with pytest.raises(SystemExit):  # the pipeline's task must be --task
        tool.main(["--task", "image", "--resolution", str(RESOLUTION), "--pipeline", str(tmp_path / "final"),
                   "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_settings_clip_skip_reaches_the_pipeline_and_older_folders_get_the_task_default(tmp_path):
    import json

    from videomv.defaults import TEXT

    model = tiny_text_videomv(with_reconstructor=False, seed=0)
    skipped = VideoMV.from_parts(pipeline=model.pipeline, settings={"resolution": RESOLUTION, "clip_skip": 1})
    direct = model.pipeline("a red cube", cameras=RUN["cameras"][None], num_inference_steps=2, guidance_scale=3.0,
                            height=RESOLUTION, width=RESOLUTION, seed=0, clip_skip=1, progress=False).images[0]
    assert torch.equal(skipped("a red cube", **RUN).images, direct)
    assert not torch.equal(model("a red cube", **RUN).images, direct)  # the last layer is another context

    saved = skipped.save_pretrained(tmp_path / "model")
    settings = json.loads((saved / "videomv.json").read_text())
    assert settings.pop("clip_skip") == 1
    (saved / "videomv.json").write_text(json.dumps(settings))  # a folder written before settings had clip_skip
    assert VideoMV.from_pretrained(saved).settings.clip_skip == TEXT.clip_skip


def test_settings_unconditional_image_reaches_the_image_pipeline_and_is_refused_where_it_cannot_apply(tmp_path):
    import json

    import pytest

    from tiny_videomv import tiny_image_videomv

    model = tiny_image_videomv(seed=0)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    cameras = orbit_cameras(4, 5.0, 1.7)
    kwargs = dict(cameras=cameras, num_inference_steps=2, guidance_scale=3.0, seed=0, three_d_aware=False,
                  progress=False)
    whole = VideoMV.from_parts(pipeline=model.pipeline, settings={"resolution": 32, "unconditional_image": "image"})
    direct = model.pipeline(image, cameras=cameras[None], num_inference_steps=2, guidance_scale=3.0, height=32,
                            width=32, seed=0, unconditional_image="image", progress=False).images[0]
    assert torch.equal(whole(image=image, **kwargs).images, direct)
    embedding = VideoMV.from_parts(pipeline=model.pipeline, settings={"resolution": 32})
    assert embedding.settings.unconditional_image == "embedding"  # the release's unconditional branch
    assert not torch.equal(embedding(image=image, **kwargs).images, direct)  # the check can fail

    saved = whole.save_pretrained(tmp_path / "model")
    assert json.loads((saved / "videomv.json").read_text())["unconditional_image"] == "image"
    assert VideoMV.from_pretrained(saved).settings.unconditional_image == "image"
    with pytest.raises(ValueError, match="unconditional_image must be one of"):
        VideoMV.from_parts(pipeline=model.pipeline, settings={"unconditional_image": "latents"})
    with pytest.raises(ValueError, match="unconditional_image is for the image task"):
        VideoMV.from_parts(pipeline=tiny_text_videomv(with_reconstructor=False).pipeline,
                           settings={"unconditional_image": "image"})
    with pytest.raises(ValueError, match="unconditional_image: expected one of"):
        model.pipeline(image, cameras=cameras[None], num_inference_steps=1, unconditional_image="none")


def test_clean_input_view_keeps_view_0_at_the_input_through_guidance_and_3d_aware_sampling(tmp_path):
    import json

    import pytest

    from tiny_videomv import tiny_image_videomv

    model = tiny_image_videomv(with_reconstructor=True, seed=0)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    cameras = orbit_cameras(4, 5.0, 1.7)
    input_latent = model.pipeline.image_conditioner.image_latents(image[None], 4, 32, 32)[:, :, :1]
    for guidance in (1.0, 3.0):
        latents = model.pipeline(image, cameras=cameras[None], num_inference_steps=3, guidance_scale=guidance,
                                 seed=0, clean_input_view=True, unconditional_image="image", output_type="latent",
                                 progress=False).latents
        torch.testing.assert_close(latents[:, :, :1], input_latent, rtol=1e-4, atol=1e-5)

    given = VideoMV.from_parts(pipeline=model.pipeline, reconstructor=model.reconstructor,
                               settings={"resolution": 32, "clean_input_view": True, "num_inference_steps": 4})
    kwargs = dict(cameras=cameras, guidance_scale=3.0, seed=0, progress=False)
    aware = given(image=image, three_d_aware=True, **kwargs)
    assert aware.aware_steps  # the reconstruction replaced z0, and view 0 came back to the input
    torch.testing.assert_close(aware.images[0], model.decode(input_latent)[0, 0].cpu(), rtol=1e-3, atol=1e-3)
    plain = VideoMV.from_parts(pipeline=model.pipeline, reconstructor=model.reconstructor,
                               settings={"resolution": 32, "num_inference_steps": 4})
    assert (plain(image=image, three_d_aware=True, **kwargs).images[0] - aware.images[0]).abs().max() > 0.01

    model.pipeline.save_pretrained(tmp_path / "final")
    load_tool().main(["--task", "image", "--resolution", "32", "--dtype", "fp32", "--pipeline",
                      str(tmp_path / "final"), "--out", str(tmp_path / "out"), "--clean-input-view"])
    assert json.loads((tmp_path / "out" / "videomv.json").read_text())["clean_input_view"] is True
    assert VideoMV.from_pretrained(tmp_path / "out").settings.clean_input_view
    with pytest.raises(ValueError, match="clean_input_view is for the image task"):
        VideoMV.from_parts(pipeline=tiny_text_videomv(with_reconstructor=False).pipeline,
                           settings={"clean_input_view": True})
