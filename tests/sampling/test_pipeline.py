"""Multi-view pipelines and the DDIM loop, checked against diffusers' video pipelines and closed forms."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, I2VGenXLPipeline, I2VGenXLUNet, TextToVideoSDPipeline, UNet3DConditionModel
from PIL import Image
from transformers import CLIPImageProcessor

from videomv.geometry import orbit_cameras
from videomv.models import I2MVUNet, T2MVUNet
from videomv.models.conditioning import ImageConditioner, TextConditioner
from videomv.sampling import I2MVPipeline, T2MVPipeline, ddim_sample, image_scheduler, text_scheduler
from videomv.sampling.ddim import z0_and_eps

from tiny_videomv import TINY_UNET

VIEWS = 4
STEPS = 3


def _tiny_vae():
    vae = AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=8,
                        sample_size=16, scaling_factor=0.18215).eval()
    # near-zero posterior variance: sampling the posterior (diffusers) equals taking its mode (ours)
    with torch.no_grad():
        vae.quant_conv.weight[4:] = 0
        vae.quant_conv.bias[4:] = -30
    return vae


def _with_camera_branch(base, cls):
    model = cls(**TINY_UNET).eval()
    model.load_state_dict(base.state_dict(), strict=False)
    return model


@pytest.fixture(scope="module")
def text_parts():
    torch.manual_seed(0)
    base = UNet3DConditionModel(**TINY_UNET).eval()
    text = TextConditioner.tiny(hidden_size=16, projection_dim=16)
    return dict(base=base, unet=_with_camera_branch(base, T2MVUNet), vae=_tiny_vae(), text=text)


def _t2mv(parts, scheduler=None):
    pipe = T2MVPipeline(vae=parts["vae"], text_encoder=parts["text"].text_encoder, tokenizer=parts["text"].tokenizer,
                        unet=parts["unet"], scheduler=scheduler or text_scheduler())
    return pipe


def _cams():
    return orbit_cameras(VIEWS, elevation=15.0, radius=2.0)


def test_t2mv_matches_diffusers_text_to_video(text_parts):
    pipe = _t2mv(text_parts)
    ours = pipe(["a red chair", "a blue car"], cameras=_cams(), num_inference_steps=STEPS, seed=5, progress=False,
                output_type="pt")
    ref = TextToVideoSDPipeline(vae=text_parts["vae"], text_encoder=text_parts["text"].text_encoder,
                                tokenizer=text_parts["text"].tokenizer, unet=text_parts["base"],
                                scheduler=text_scheduler())
    ref.set_progress_bar_config(disable=True)
    kwargs = dict(num_frames=VIEWS, num_inference_steps=STEPS, guidance_scale=9.0)
    ref_latents = ref(["a red chair", "a blue car"], generator=torch.Generator().manual_seed(5),
                      output_type="latent", **kwargs).frames
    torch.testing.assert_close(ours.latents, ref_latents, rtol=0, atol=1e-6)
    ref_video = ref(["a red chair", "a blue car"], generator=torch.Generator().manual_seed(5),
                    output_type="pt", **kwargs).frames  # (B, F, 3, H, W) in [0, 1]
    assert ours.images.shape == (2, VIEWS, 3, 16, 16) and ref_video.shape == ours.images.shape
    torch.testing.assert_close(ours.images, ref_video, rtol=0, atol=1e-5)


def test_t2mv_seeds_outputs_and_defaults(text_parts):
    pipe = _t2mv(text_parts)
    run = lambda **kw: pipe("a chair", progress=False, **{"num_inference_steps": 2, **kw})  # noqa: E731
    a = run(cameras=_cams(), seed=1, output_type="latent")
    assert a.images is None
    assert torch.equal(a.latents, run(cameras=_cams(), seed=1, output_type="latent").latents)
    assert not torch.allclose(a.latents, run(cameras=_cams(), seed=2, output_type="latent").latents)
    assert torch.equal(a.latents, run(cameras=_cams(), generator=torch.Generator().manual_seed(1),
                                      output_type="latent").latents)
    # cameras reach the UNet: with a non-zero camera branch, other cameras give other samples
    pipe_cam = _t2mv(dict(text_parts, unet=_with_camera_branch(text_parts["base"], T2MVUNet)))
    torch.nn.init.normal_(pipe_cam.unet.camera_embedding.linear_2.weight, std=0.5)
    c1 = pipe_cam("a chair", cameras=_cams(), num_inference_steps=2, seed=1, progress=False, output_type="latent")
    c2 = pipe_cam("a chair", cameras=orbit_cameras(VIEWS, elevation=40.0), num_inference_steps=2, seed=1,
                  progress=False, output_type="latent")
    assert not torch.allclose(c1.latents, c2.latents, atol=1e-4)
    # output formats
    np_out = run(cameras=_cams(), seed=1, output_type="np").images
    assert isinstance(np_out, np.ndarray) and np_out.shape == (1, VIEWS, 16, 16, 3)
    assert np_out.min() >= 0 and np_out.max() <= 1
    pil_out = run(cameras=_cams(), seed=1, output_type="pil").images
    assert len(pil_out) == 1 and len(pil_out[0]) == VIEWS and isinstance(pil_out[0][0], Image.Image)
    # default cameras: 24 views
    assert run(seed=1, output_type="latent", num_inference_steps=1).latents.shape == (1, 4, 24, 8, 8)
    with pytest.raises(ValueError, match="output_type"):
        run(cameras=_cams(), seed=1, output_type="jpg")
    with pytest.raises(ValueError, match="cameras"):
        run(cameras=torch.randn(VIEWS, 12), seed=1)
    with pytest.raises(ValueError, match="seed"):
        run(cameras=_cams(), seed=1, generator=torch.Generator())


def test_identity_hook_changes_nothing_and_sees_every_step(text_parts):
    pipe = _t2mv(text_parts)
    calls = []

    def identity(i, t, z0_cond, z0_uncond, latents):
        assert z0_cond.shape == z0_uncond.shape == latents.shape
        calls.append((i, int(t)))
        return z0_cond, z0_uncond

    plain = pipe("a chair", cameras=_cams(), num_inference_steps=STEPS, seed=3, progress=False, output_type="latent")
    hooked = pipe("a chair", cameras=_cams(), num_inference_steps=STEPS, seed=3, progress=False,
                  output_type="latent", z0_hook=identity)
    # float32 round trip z0 -> eps -> z0 only: relative error ~1e-6
    torch.testing.assert_close(hooked.latents, plain.latents, rtol=1e-5, atol=1e-5)
    assert calls == [(i, int(t)) for i, t in enumerate(pipe.scheduler.timesteps)]
    observer = pipe("a chair", cameras=_cams(), num_inference_steps=STEPS, seed=3, progress=False,
                    output_type="latent", z0_hook=lambda *args: None)
    assert torch.equal(observer.latents, plain.latents)


def test_text_schedule_timesteps_match_release():
    scheduler = text_scheduler()
    scheduler.set_timesteps(50)
    assert [int(scheduler.timesteps[i]) for i in (20, 30, 40)] == [581, 381, 181]


def _oracle_final(scheduler, z_T, z0):
    """Closed form of eta=0 DDIM when every step predicts the same z0: the noise implied at the first
    step stays constant, so z_final = sqrt(a_f) z0 + sqrt(1 - a_f) eps_0."""
    a_T = scheduler.alphas_cumprod[int(scheduler.timesteps[0])]
    eps0 = (z_T - a_T.sqrt() * z0) / (1 - a_T).sqrt()
    a_f = scheduler.final_alpha_cumprod
    return a_f.sqrt() * z0 + (1 - a_f).sqrt() * eps0


@pytest.mark.parametrize("make_scheduler", [text_scheduler, image_scheduler])
@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_hook_with_true_z0_gives_closed_form(make_scheduler, guidance_scale):
    torch.manual_seed(0)
    shape = (1, 4, 3, 2, 2)
    z_T = torch.randn(shape, dtype=torch.float64)
    target_cond, target_uncond = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)

    def wrong_model(model_input, t):  # any prediction; the hook overrides it
        return torch.randn_like(model_input)

    def hook(i, t, z0_cond, z0_uncond, latents):
        return target_cond, target_uncond

    scheduler = make_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()
    out = ddim_sample(wrong_model, z_T, scheduler, num_inference_steps=10, guidance_scale=guidance_scale,
                      z0_hook=hook, progress=False)
    z0 = target_uncond + guidance_scale * (target_cond - target_uncond) if guidance_scale > 1 else target_cond
    torch.testing.assert_close(out, _oracle_final(scheduler, z_T, z0), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("make_scheduler", [text_scheduler, image_scheduler])
def test_oracle_model_without_hook_gives_closed_form(make_scheduler):
    """A model whose output encodes a fixed z0 (eps- or v-prediction) follows the same closed form."""
    torch.manual_seed(1)
    shape = (1, 4, 3, 2, 2)
    z_T, z0 = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    scheduler = make_scheduler()
    scheduler.alphas_cumprod = scheduler.alphas_cumprod.double()
    scheduler.final_alpha_cumprod = scheduler.final_alpha_cumprod.double()

    def oracle(x, t):
        a = scheduler.alphas_cumprod[int(t)]
        eps = (x - a.sqrt() * z0) / (1 - a).sqrt()
        return eps if scheduler.config.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * z0

    seen = []
    hook = lambda i, t, zc, zu, x: seen.append(zc) or None  # noqa: E731
    out = ddim_sample(oracle, z_T, scheduler, num_inference_steps=10, z0_hook=hook, progress=False)
    torch.testing.assert_close(out, _oracle_final(scheduler, z_T, z0), rtol=1e-9, atol=1e-9)
    for zc in seen:  # the hook is shown the model's z0 prediction
        torch.testing.assert_close(zc, z0, rtol=1e-7, atol=1e-7)
    assert torch.allclose(z0_and_eps(scheduler, oracle(z_T, 981), z_T, 981)[0], z0)


def test_pipeline_save_load_round_trip(text_parts, tmp_path):
    pipe = _t2mv(text_parts)
    torch.nn.init.normal_(pipe.unet.camera_embedding.linear_2.weight, std=0.1)
    try:
        pipe.save_pretrained(tmp_path)
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            assert (tmp_path / sub).is_dir(), sub
        loaded = T2MVPipeline.from_pretrained(tmp_path)
        assert isinstance(loaded.unet, T2MVUNet)
        a = pipe("a chair", cameras=_cams(), num_inference_steps=2, seed=4, progress=False, output_type="latent")
        b = loaded("a chair", cameras=_cams(), num_inference_steps=2, seed=4, progress=False, output_type="latent")
        assert torch.equal(a.latents, b.latents)
    finally:
        torch.nn.init.zeros_(pipe.unet.camera_embedding.linear_2.weight)


def test_i2mv_matches_diffusers_i2vgen_xl():
    torch.manual_seed(0)
    base = I2VGenXLUNet(**TINY_UNET).eval()
    text = TextConditioner.tiny(hidden_size=16, projection_dim=16)
    vae = _tiny_vae()
    image_encoder = ImageConditioner.tiny_image_encoder(hidden_size=16, projection_dim=16, image_size=16)
    feature_extractor = CLIPImageProcessor(crop_size={"height": 16, "width": 16}, size={"shortest_edge": 16})
    parts = dict(vae=vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer, image_encoder=image_encoder,
                 feature_extractor=feature_extractor)
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255

    ours = I2MVPipeline(unet=_with_camera_branch(base, I2MVUNet), scheduler=image_scheduler(), **parts)
    out = ours(image, cameras=orbit_cameras(VIEWS, elevation=5.0, radius=1.7), num_inference_steps=STEPS,
               target_fps=8, seed=2, progress=False, output_type="latent", clip_skip=None)
    ref = I2VGenXLPipeline(unet=base, scheduler=image_scheduler(), **parts)
    ref.set_progress_bar_config(disable=True)
    ref_latents = ref(prompt="", image=Image.fromarray(pixels), height=16, width=16, target_fps=8,
                      num_frames=VIEWS, num_inference_steps=STEPS, guidance_scale=6.0,
                      generator=torch.Generator().manual_seed(2), output_type="latent", clip_skip=None).frames
    torch.testing.assert_close(out.latents, ref_latents, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="image"):
        ours(image[:2], num_inference_steps=1, progress=False)


def test_release_defaults_are_the_papers_and_reach_pipelines_and_settings():
    import inspect
    from dataclasses import asdict

    from videomv.defaults import IMAGE, TEXT, release_defaults
    from videomv.sampling.aware import aware_step_indices
    from videomv.sampling.system import VideoMVSettings

    # the official release (DESIGN.md): orbits 15 deg / 2.0 and 5 deg / 1.7, guidance 9 and 6,
    # grey 128 and white backgrounds, 24 views, 50 DDIM steps, fps 16, 3D-aware at steps 20, 30, 40
    assert (TEXT.elevation, TEXT.radius, TEXT.guidance_scale, TEXT.background) == (15.0, 2.0, 9.0, (128 / 255,) * 3)
    assert (IMAGE.elevation, IMAGE.radius, IMAGE.guidance_scale, IMAGE.background) == (5.0, 1.7, 6.0, (1.0,) * 3)
    assert (TEXT.num_views, TEXT.num_inference_steps, IMAGE.fps) == (24, 50, 16)
    assert aware_step_indices(TEXT.num_inference_steps) == [20, 30, 40]
    for cls, release in ((T2MVPipeline, TEXT), (I2MVPipeline, IMAGE)):
        params = inspect.signature(cls.__call__).parameters
        assert params["guidance_scale"].default == release.guidance_scale
        assert params["num_inference_steps"].default == release.num_inference_steps
        assert params["clip_skip"].default == release.clip_skip  # text: last layer; image: penultimate
        settings = asdict(VideoMVSettings.for_task(release.task))  # plus the release-parity settings
        assert {k: settings[k] for k in asdict(release)} == asdict(release)
    assert inspect.signature(I2MVPipeline.__call__).parameters["target_fps"].default == IMAGE.fps
    assert {k: v for k, v in asdict(VideoMVSettings()).items() if k in asdict(TEXT)} == asdict(TEXT)
    assert VideoMVSettings.for_task("image", guidance_scale=2.0).guidance_scale == 2.0
    with pytest.raises(ValueError, match="task"):
        release_defaults("video")
    with pytest.raises(TypeError, match="unknown settings"):
        VideoMVSettings.for_task("text", guidance=2.0)


def test_step_counts_the_spacing_cannot_give_are_refused():
    from videomv.sampling.ddim import ddim_with, set_step_count, text_scheduler

    trailing = ddim_with(text_scheduler().config, timestep_spacing="trailing")
    trailing.set_timesteps(61)  # diffusers: 62 timesteps, the last one -1
    assert len(trailing.timesteps) == 62 and int(trailing.timesteps[-1]) == -1
    with pytest.raises(ValueError, match=r"trailing spacing .* for 61 steps; try 60 or 62"):
        set_step_count(trailing, 61)
    set_step_count(trailing, 50)
    assert len(trailing.timesteps) == 50 and int(trailing.timesteps.min()) >= 0
