"""Release-parity settings (`videomv.sampling.parity`): one test per setting, against the release's
camera and reconstructor conventions written out here from its inference code, closed forms, or
the same sample produced the plain way."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPTextConfig, CLIPTextModel

from tiny_videomv import tiny_image_videomv, tiny_text_videomv
from videomv.convert import release_camera_vectors
from videomv.convert.release import release_text_encoder
from videomv.gaussians import GaussianSet
from videomv.geometry import orbit_angles, orbit_cameras
from videomv.recon.frames import canonical_cameras
from videomv.sampling.aware import ReconstructionHook
from videomv.sampling.ddim import image_scheduler
from videomv.sampling.parity import (
    RELEASE_NEGATIVE_PROMPT,
    release_reconstructor_settings,
    release_scheduler,
    settings_for,
)
from videomv.sampling.system import VideoMV, VideoMVSettings

# ---------------------------------------------------------------------------------------------- #
# the release's cameras, step by step as its inference code builds them
# ---------------------------------------------------------------------------------------------- #


def release_orbit(num_views: int, elevation: float, distance: float) -> torch.Tensor:
    """MVDream's get_camera (y-up look-at, then OpenGL -> Blender) followed by the release's row
    operations (`camera_data[:, :, 1, :] *= -1`, rows 0 and 1 swapped): the UNet's cameras (V, 4, 4)."""
    cams = []
    for k in range(num_views):
        el, az = math.radians(elevation), math.radians(k * 360.0 / num_views)
        pos = torch.tensor([distance * math.cos(el) * math.sin(az), distance * math.sin(el),
                            distance * math.cos(el) * math.cos(az)], dtype=torch.float64)
        forward = -pos / pos.norm()
        right = torch.linalg.cross(forward, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
        right = right / right.norm()
        up = torch.linalg.cross(right, forward)
        c2w = torch.eye(4, dtype=torch.float64)
        c2w[:3, :3] = torch.stack([right, up / up.norm(), -forward], dim=1)
        c2w[:3, 3] = pos
        flip_yz = torch.tensor([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
        cams.append(flip_yz @ c2w)
    data = torch.stack(cams)
    data[:, 1, :] *= -1
    data[:, [0, 1], :] = data[:, [1, 0], :]
    return data.float()


def release_reconstructor_rig(camera_data: torch.Tensor) -> torch.Tensor:
    """The release's `gs_camera` and its normalisation to view 0 (inference): (V, 4, 4)."""
    gs = camera_data.clone()
    gs[:, 1] *= -1
    gs[:, [1, 2]] = gs[:, [2, 1]]
    gs[:, :3, 1:3] *= -1
    distance = float(gs[0, :3, 3].norm())
    transform = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, distance], [0, 0, 0, 1]],
                             dtype=torch.float32) @ torch.inverse(gs[0])
    return transform[None] @ gs


@pytest.mark.parametrize("task", ["text", "image"])
def test_start_azimuth_gives_the_release_orbit(task):
    settings = settings_for(task, "release")
    assert settings.start_azimuth == 90.0
    ours = orbit_cameras(24, settings.elevation, settings.radius, start_azimuth=settings.start_azimuth)
    release = release_orbit(24, settings.elevation, settings.radius)
    torch.testing.assert_close(release_camera_vectors(ours), release.flatten(-2), rtol=0, atol=1e-5)
    # with the project default the orbit starts a quarter turn earlier
    plain = orbit_cameras(24, settings.elevation, settings.radius)
    assert (release_camera_vectors(plain) - release.flatten(-2)).abs().max() > 0.5
    _, azimuth, _ = orbit_angles(ours[:1])
    assert math.isclose(float(azimuth[0]) % 360, 90.0, abs_tol=1e-4)


@pytest.mark.parametrize("task", ["text", "image"])
def test_reconstructor_camera_flip_and_frame_match_the_release(task):
    settings = settings_for(task, "release")
    cams = orbit_cameras(24, settings.elevation, settings.radius, start_azimuth=settings.start_azimuth)
    views = [0, 6, 12, 18]
    flipped = settings.reconstructor_cameras(cams)
    recon = release_reconstructor_settings(task)
    canonical, _ = canonical_cameras(flipped[None, views], recon["cam_radius"], recon["rescale_cameras"])
    release = release_reconstructor_rig(release_orbit(24, settings.elevation, settings.radius))
    torch.testing.assert_close(canonical[0], release[views], rtol=0, atol=1e-5)
    # the flip makes the cameras look away from the object (their -z axis points away from the origin)
    looks_at_object = lambda c: torch.einsum("vi,vi->v", -c[:, :3, 2], -c[:, :3, 3]) > 0  # noqa: E731
    assert looks_at_object(cams).all() and not looks_at_object(flipped).any()
    assert torch.equal(VideoMVSettings.for_task(task).reconstructor_cameras(cams), cams)  # project default


def test_reconstructor_config_of_the_release_preset():
    text, image = release_reconstructor_settings("text"), release_reconstructor_settings("image")
    assert text["fovy"] == image["fovy"] == 39.6 and settings_for("text", "release").fovy == 39.6
    assert text["cam_radius"] == 2.0 and image["cam_radius"] == 1.7
    assert not text["rescale_cameras"] and text["lgm_release_rotation"]


# ---------------------------------------------------------------------------------------------- #
# settings that act inside sampling, on tiny models
# ---------------------------------------------------------------------------------------------- #


def with_settings(model: VideoMV, **changes) -> VideoMV:
    return VideoMV(model.pipeline, model.reconstructor, dataclasses.replace(model.settings, **changes))


def test_negative_prompt_setting():
    model = tiny_text_videomv(with_reconstructor=False)

    def run(m, **kw):
        return m(prompt="a chair", num_inference_steps=2, three_d_aware=False, progress=False, **kw).images

    plain = run(model)
    release = run(with_settings(model, negative_prompt=RELEASE_NEGATIVE_PROMPT))
    assert torch.equal(release, run(model, negative_prompt=RELEASE_NEGATIVE_PROMPT))
    assert not torch.equal(release, plain)
    assert settings_for("image", "release").negative_prompt == RELEASE_NEGATIVE_PROMPT


def test_prompt_suffix_setting():
    settings = settings_for("text", "release")
    assert settings.full_prompt("a chair") == "a chair, 3d asset"
    assert settings.full_prompt("a chair, 3D asset") == "a chair, 3D asset"
    assert VideoMVSettings.for_task("text").full_prompt("a chair") == "a chair"
    model = tiny_text_videomv(with_reconstructor=False)

    def run(m, p):
        return m(prompt=p, num_inference_steps=2, three_d_aware=False, progress=False).images

    suffixed = with_settings(model, prompt_suffix=", 3d asset")
    assert torch.equal(run(suffixed, "a chair"), run(model, "a chair, 3d asset"))


def test_fps_setting_reaches_the_unet(monkeypatch):
    model = tiny_image_videomv()
    seen = []
    forward = type(model.pipeline.unet).forward
    monkeypatch.setattr(type(model.pipeline.unet), "forward",
                        lambda self, *a, **kw: seen.append(kw["fps"]) or forward(self, *a, **kw))
    image = torch.rand(3, 32, 32)
    with_settings(model, fps=settings_for("image", "release").fps)(image=image, num_inference_steps=1,
                                                                    three_d_aware=False, progress=False)
    assert seen and all(torch.equal(f, torch.full_like(f, 8)) for f in seen)


def test_aware_latents_sample_is_the_seeded_posterior_sample():
    model = tiny_text_videomv(with_reconstructor=False)
    images = torch.rand(1, 2, 3, 32, 32)
    vae = model.pipeline.vae
    dist = vae.encode(images.flatten(0, 1) * 2 - 1).latent_dist
    noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(7))
    expected = ((dist.mean + dist.std * noise) * vae.config.scaling_factor).unflatten(0, (1, 2)).permute(0, 2, 1, 3, 4)
    sampled = model.encode(images, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(sampled, expected)
    mode = model.encode(images)
    expected_mode = (dist.mode() * vae.config.scaling_factor).unflatten(0, (1, 2)).permute(0, 2, 1, 3, 4)
    torch.testing.assert_close(mode, expected_mode)
    assert not torch.allclose(sampled, mode)


def test_aware_latents_sample_in_sampling_is_reproducible():
    model = tiny_text_videomv(with_reconstructor=True)

    def run(m, seed):
        return m(prompt="a chair", num_inference_steps=3, aware_steps=[1], seed=seed, progress=False).images

    sampling = with_settings(model, aware_latents="sample")
    first = run(sampling, 1)
    assert torch.equal(first, run(sampling, 1))
    assert not torch.equal(first, run(model, 1))
    with pytest.raises(ValueError, match="aware_latents"):
        VideoMVSettings(aware_latents="mean")


def random_gaussians(n: int = 64, seed: int = 0) -> GaussianSet:
    gen = torch.Generator().manual_seed(seed)
    return GaussianSet(means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.8,
                       scales=torch.full((n, 3), 0.05), rotations=F.normalize(torch.randn(n, 4, generator=gen), dim=-1),
                       opacities=torch.rand(n, 1, generator=gen), colors=torch.rand(n, 3, generator=gen))


def hook_for(cams, background=(0.5, 0.5, 0.5), render_size=None) -> ReconstructionHook:
    return ReconstructionHook(None, None, None, cams[None], 39.6, background, [1], [0, 1, 2, 3],
                              render_size=render_size, render_backend="torch")


def test_aware_render_size_renders_large_then_nearest_downsamples():
    cams = orbit_cameras(4, 15.0, 2.0)
    gaussians = [random_gaussians()]
    small = hook_for(cams, render_size=64).render_views(gaussians, 32, 32)
    large = hook_for(cams).render_views(gaussians, 64, 64)
    torch.testing.assert_close(small, F.interpolate(large[0], size=(32, 32), mode="nearest")[None])
    direct = hook_for(cams).render_views(gaussians, 32, 32)
    assert not torch.allclose(small, direct)
    assert settings_for("text", "release").aware_render_size == 512


@pytest.mark.parametrize("task,value", [("text", 0.5), ("image", 0.7)])
def test_release_render_background(task, value):
    settings = settings_for(task, "release")
    assert settings.background == (value,) * 3
    empty = random_gaussians()
    empty = dataclasses.replace(empty, opacities=torch.zeros_like(empty.opacities))
    rendered = hook_for(orbit_cameras(4, 15.0, 2.0), background=settings.background).render_views([empty], 16, 16)
    torch.testing.assert_close(rendered, torch.full_like(rendered, value))
    assert VideoMVSettings.for_task(task).background != settings.background


def test_reconstructor_gets_flipped_cameras_in_sampling(monkeypatch):
    model = with_settings(tiny_text_videomv(with_reconstructor=True), reconstructor_camera_flip=True)
    seen = []
    reconstruct = type(model.reconstructor).reconstruct
    monkeypatch.setattr(type(model.reconstructor), "reconstruct",
                        lambda self, images, c2w, fovy=None: seen.append(c2w) or reconstruct(self, images, c2w, fovy))
    cams = model.default_cameras()
    model(prompt="a chair", num_inference_steps=2, aware_steps=[1], progress=False)
    flip = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert len(seen) == 3  # both guidance branches at step 1, then the final reconstruction
    for c2w in seen:
        torch.testing.assert_close(c2w[0].cpu(), cams[[0, 6, 12, 18]] @ flip)


# ---------------------------------------------------------------------------------------------- #
# scheduler and text features of a converted folder
# ---------------------------------------------------------------------------------------------- #


def test_image_scheduler_last_step_uses_alphas_cumprod_0():
    release, ours = release_scheduler("image"), image_scheduler()
    assert float(release.final_alpha_cumprod) == float(release.alphas_cumprod[0]) < 1.0
    assert float(ours.final_alpha_cumprod) == 1.0
    release.set_timesteps(50)
    t = release.timesteps[-1]
    x, v = torch.randn(1, 4, 2, 4, 4), torch.randn(1, 4, 2, 4, 4)
    a_t, a_prev = release.alphas_cumprod[t], release.alphas_cumprod[0]
    x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * v
    eps = a_t.sqrt() * v + (1 - a_t).sqrt() * x
    expected = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(release.step(v, t, x, eta=0.0).prev_sample, expected)


def final_norm(model: CLIPTextModel):
    return getattr(model, "text_model", model).final_layer_norm


def test_text_features_are_the_release_layer(tmp_path):
    config = CLIPTextConfig(vocab_size=1000, bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_size=16,
                            intermediate_size=32, num_hidden_layers=24,
                            num_attention_heads=2, max_position_embeddings=77)
    torch.manual_seed(0)
    full = CLIPTextModel(config).eval()
    full.save_pretrained(tmp_path / "text_encoder")
    ids = torch.randint(0, 1000, (2, 77))
    with torch.no_grad():
        hidden = full(ids, output_hidden_states=True).hidden_states[-2]
        expected = final_norm(full)(hidden)  # OpenCLIP's layer 23 + final LayerNorm

        cut, note = release_text_encoder(str(tmp_path), "text")
        assert cut.config.num_hidden_layers == 23 and "23 of 24" in note
        torch.testing.assert_close(cut(ids).last_hidden_state, expected)

        kept, note = release_text_encoder(str(tmp_path), "image")
        assert kept.config.num_hidden_layers == 24 and note is None
        penultimate = kept(ids, output_hidden_states=True).hidden_states[-2]  # the image pipeline's clip_skip 1
        torch.testing.assert_close(final_norm(kept)(penultimate), expected)

    cut.save_pretrained(tmp_path / "cut" / "text_encoder")
    with pytest.raises(ValueError, match="23 layers"):
        release_text_encoder(str(tmp_path / "cut"), "image")
