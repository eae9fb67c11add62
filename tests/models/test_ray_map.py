"""The UNets' optional ray-map input (`add_ray_map`): zero at the start, added after conv_in,
per-frame rays of the right cameras, saved and loaded with the model."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from videomv.geometry import orbit_cameras
from videomv.models import I2MVUNet, T2MVUNet
from videomv.train.mv import build_unet

from tiny_videomv import TINY_UNET as TINY

B, F, H = 2, 3, 8
FOVY = 49.1


def _inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(
        sample=torch.randn(B, 4, F, H, H, generator=g),
        text=torch.randn(B, 5, 16, generator=g),
        image_latents=torch.randn(B, 4, F, H, H, generator=g),
        image_embeddings=torch.randn(B, 1, 16, generator=g),
        cameras=torch.stack([orbit_cameras(F, elevation=10.0), orbit_cameras(F, elevation=30.0, radius=1.5)]),
    )


def _run(model, x, **kw):
    with torch.no_grad():
        if isinstance(model, I2MVUNet):
            return model(x["sample"], 7, torch.tensor([8] * B), x["image_latents"], x["image_embeddings"],
                         x["text"], **kw).sample
        return model(x["sample"], 7, x["text"], **kw).sample


def _model(cls, seed=0):
    torch.manual_seed(seed)
    return cls(**TINY).eval()


def _randomise_ray_map(model, seed=3):
    torch.manual_seed(seed)
    torch.nn.init.normal_(model.ray_map_in.weight, std=0.3)
    torch.nn.init.normal_(model.ray_map_in.bias, std=0.3)


def _hand_plucker(c2w: torch.Tensor, height: int, width: int, fovy_deg: float) -> torch.Tensor:
    """(6, H, W) Plücker coordinates (o x d, d) pixel by pixel, OpenGL camera, rows downwards."""
    focal = height / 2 / math.tan(math.radians(fovy_deg) / 2)
    out = torch.zeros(6, height, width)
    origin = c2w[:3, 3]
    for i in range(height):
        for j in range(width):
            d_cam = torch.tensor([(j + 0.5 - width / 2) / focal, -(i + 0.5 - height / 2) / focal, -1.0])
            d = c2w[:3, :3] @ d_cam
            d = d / d.norm()
            out[:3, i, j] = torch.linalg.cross(origin, d)
            out[3:, i, j] = d
    return out


@pytest.mark.parametrize("cls", [T2MVUNet, I2MVUNet])
def test_added_ray_map_starts_at_zero_and_saves_its_field_of_view(cls, tmp_path):
    model = _model(cls)
    x = _inputs()
    before = _run(model, x, cameras=x["cameras"])
    model.add_ray_map(FOVY)
    assert model.config.ray_map_fovy == FOVY
    assert model.ray_map_in.out_channels == TINY["block_out_channels"][0] and model.ray_map_in.in_channels == 6
    assert torch.equal(_run(model, x, cameras=x["cameras"]), before)
    _randomise_ray_map(model)
    after = _run(model, x, cameras=x["cameras"])
    assert (after - before).abs().max() > 1e-2
    model.save_pretrained(tmp_path)
    loaded = cls.from_pretrained(tmp_path).eval()
    assert loaded.config.ray_map_fovy == FOVY
    assert torch.equal(loaded.ray_map_in.weight, model.ray_map_in.weight)
    assert torch.equal(_run(loaded, x, cameras=x["cameras"]), after)


def test_ray_map_is_a_conv_of_each_frames_plucker_rays_added_after_conv_in():
    """Reference: the same UNet without a ray map, its conv_in output shifted by a hand-built conv of
    hand-computed rays (each frame's own camera, latent-pixel centres)."""
    model = _model(T2MVUNet)
    model.add_ray_map(FOVY)
    _randomise_ray_map(model)
    x = _inputs()
    got = _run(model, x, cameras=x["cameras"])

    reference = _model(T2MVUNet)
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("ray_map_in.")})
    rays = torch.stack([_hand_plucker(c2w, H, H, FOVY) for c2w in x["cameras"].reshape(B * F, 4, 4)])
    shift = torch.nn.functional.conv2d(rays, model.ray_map_in.weight, model.ray_map_in.bias, padding=1)
    handle = reference.conv_in.register_forward_hook(lambda module, args, out: out + shift)
    try:
        expected = _run(reference, x, cameras=x["cameras"])
    finally:
        handle.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ray_map_rows_look_up_at_the_top_and_rays_follow_the_camera():
    model = _model(T2MVUNet)
    model.add_ray_map(90.0)
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([0.0, 0.0, 2.0])
    rays = model.ray_map(c2w[None, None].expand(1, 1, 4, 4), None, 1, 1, 2, 2)[0]
    # fovy 90 over 2 rows: focal 1, pixel (0, 0) looks along (-0.5, 0.5, -1) / |.|
    d = torch.tensor([-0.5, 0.5, -1.0]) / math.sqrt(1.5)
    torch.testing.assert_close(rays[3:, 0, 0], d)
    torch.testing.assert_close(rays[:3, 0, 0], torch.tensor([-2 * d[1], 2 * d[0], 0.0]))
    assert (rays[4, 0] > 0).all() and (rays[4, 1] < 0).all()  # top row looks up, bottom row down


def test_camera_mask_and_no_cameras_drop_the_ray_map():
    model = _model(T2MVUNet)
    plain = _run(model, _inputs())
    model.add_ray_map(FOVY)
    _randomise_ray_map(model)
    x = _inputs()
    # no cameras: neither the camera embedding nor the ray map (2D images trained as 1-frame clips)
    assert torch.equal(_run(model, x), plain)
    masked = _run(model, x, cameras=x["cameras"], camera_mask=torch.tensor([0.0, 1.0]))
    full = _run(model, x, cameras=x["cameras"])
    all_dropped = _run(model, x, cameras=torch.zeros_like(x["cameras"]) + torch.eye(4),
                                   camera_mask=torch.zeros(B))
    torch.testing.assert_close(masked[1], full[1], rtol=0, atol=1e-6)
    # a dropped camera leaves the conv's bias: the same as any camera masked out
    torch.testing.assert_close(masked[0], all_dropped[0], rtol=0, atol=1e-6)
    assert (masked[0] - full[0]).abs().max() > 1e-3


def test_bad_ray_map_settings():
    model = _model(T2MVUNet)
    for bad in (0, 180, -5.0, True, "49"):
        with pytest.raises(ValueError, match="ray_map_fovy"):
            model.add_ray_map(bad)
    model.add_ray_map(FOVY)
    with pytest.raises(ValueError, match="already has a ray map"):
        model.add_ray_map(30.0)
    with pytest.raises(ValueError, match="ray_map_fovy"):
        T2MVUNet(**TINY, ray_map_fovy=200.0)


def test_build_unet_adds_a_ray_map_to_a_loaded_unet(tmp_path):
    _model(T2MVUNet).save_pretrained(tmp_path / "unet")
    cfg = OmegaConf.create({"pretrained": str(tmp_path), "subfolder": "unet", "ray_map_fovy": FOVY})
    unet = build_unet(cfg, "t2mv")
    assert unet.config.ray_map_fovy == FOVY and torch.count_nonzero(unet.ray_map_in.weight) == 0
    unet.save_pretrained(tmp_path / "with_rays" / "unet")
    again = build_unet(OmegaConf.merge(cfg, {"pretrained": str(tmp_path / "with_rays")}), "t2mv")
    assert again.config.ray_map_fovy == FOVY  # the same field of view: kept, not added twice
    with pytest.raises(ValueError, match="already has a ray map"):
        build_unet(OmegaConf.merge(cfg, {"pretrained": str(tmp_path / "with_rays"), "ray_map_fovy": 30.0}), "t2mv")
    assert build_unet(OmegaConf.create({"init": dict(TINY)}), "t2mv").ray_map_in is None
