"""Reconstructor: LGM checkpoint compatibility, multi-view attention, activations, frame handling,
checkpoint I/O and input-view selection."""

from __future__ import annotations

import ast
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from scipy.spatial.transform import Rotation

from videomv.gaussians.gaussian_set import quaternion_to_matrix
from videomv.geometry import get_rays, normalize_to_first_view, orbit_camera, orbit_cameras, plucker_rays
from videomv.recon import (
    Reconstructor,
    ReconstructorConfig,
    canonical_cameras,
    get_preset,
    infer_preset,
    matrix_to_quaternion,
    quaternion_multiply,
    select_input_views,
    transform_gaussians,
)
from videomv.recon.unet import MultiViewAttention, MultiViewUNet, SelfAttention

LGM_BIG_UNET_PARAMS = 415_042_638
LGM_BIG_KEYS = Path(__file__).resolve().parents[1] / "fixtures" / "release_keys" / "lgm_big_state_dict.tsv"


def _random_rigid(generator: torch.Generator) -> torch.Tensor:
    q = torch.nn.functional.normalize(torch.randn(4, generator=generator), dim=0)
    rot = torch.from_numpy(Rotation.from_quat(q.numpy()).as_matrix()).float()
    g = torch.eye(4)
    g[:3, :3] = rot
    g[:3, 3] = torch.randn(3, generator=generator)
    return g


def _orbit_rig(elevation=15.0, radius=2.0, start=0.0) -> torch.Tensor:
    return orbit_cameras(24, elevation, radius, start)[[0, 6, 12, 18]]


# Same weights as `tiny`, 4x cheaper, with LGM's absolute positions (ray positions: their own test).
SMALL_INPUT = dict(input_size=32, splat_size=16, output_size=32, position="absolute")


@pytest.fixture
def tiny():
    """The `tiny` preset's network, run at 32^2 input to keep the tests fast."""
    torch.manual_seed(0)
    return Reconstructor(get_preset("tiny", **SMALL_INPUT)).eval()


# ---------------------------------------------------------------------------------------------- #
# LGM "big" compatibility
# ---------------------------------------------------------------------------------------------- #


def test_big_preset_has_exactly_lgm_parameter_names_and_shapes():
    tsv = LGM_BIG_KEYS
    rows = [line.rstrip("\n").split("\t") for line in tsv.read_text().splitlines() if line and not line.startswith("#")]
    assert rows[0] == ["key", "shape"]
    reference = {key: tuple(ast.literal_eval(shape)) for key, shape in rows[1:]}
    with torch.device("meta"):
        model = Reconstructor("big")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(reference) - set(ours)) == []
    assert sorted(set(ours) - set(reference)) == []
    assert {k: v for k, v in ours.items() if reference[k] != v} == {}
    unet_ref = sum(math.prod(s) for k, s in reference.items() if k.startswith("unet."))
    assert unet_ref == LGM_BIG_UNET_PARAMS
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("unet.")) == LGM_BIG_UNET_PARAMS


@pytest.mark.parametrize("preset, splat", [("big", 128), ("small", 64)])
def test_lgm_presets_output_splatter_resolution(preset, splat):
    with torch.device("meta"):
        model = Reconstructor(preset)
        out = model.forward_splatter(torch.empty(1, 4, 9, 256, 256))
    assert out.shape == (1, 4, 14, splat, splat)
    assert model.config.num_gaussians == 4 * splat * splat


# ---------------------------------------------------------------------------------------------- #
# UNet pieces
# ---------------------------------------------------------------------------------------------- #


def test_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    dim, heads = 32, 4
    ours = SelfAttention(dim, heads)
    ref = torch.nn.MultiheadAttention(dim, heads, bias=True, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.qkv.weight)
        ref.in_proj_bias.zero_()  # LGM's qkv has no bias
        ref.out_proj.weight.copy_(ours.proj.weight)
        ref.out_proj.bias.copy_(ours.proj.bias)
    x = torch.randn(2, 50, dim)
    expected, _ = ref(x, x, x, need_weights=False)
    torch.testing.assert_close(ours(x), expected, atol=1e-5, rtol=1e-5)


def test_multiview_attention_attends_over_all_views_jointly():
    torch.manual_seed(0)
    views, dim, size = 4, 16, 3
    attn = MultiViewAttention(dim, num_heads=2, num_views=views, num_groups=4, eps=1e-5, skip_scale=math.sqrt(0.5))
    x = torch.randn(2 * views, dim, size, size)
    out = attn(x)
    # reference: per object, one token sequence made of all views' pixels, through the same layers
    ref_attn = torch.nn.MultiheadAttention(dim, 2, batch_first=True)
    with torch.no_grad():
        ref_attn.in_proj_weight.copy_(attn.attn.qkv.weight)
        ref_attn.in_proj_bias.zero_()
        ref_attn.out_proj.weight.copy_(attn.attn.proj.weight)
        ref_attn.out_proj.bias.copy_(attn.attn.proj.bias)
    normed = attn.norm(x)
    for b in range(2):
        frames = normed[b * views : (b + 1) * views]  # (V, C, H, W)
        tokens = torch.cat([f.flatten(1).T for f in frames])  # (V*H*W, C), view-major
        mixed, _ = ref_attn(tokens[None], tokens[None], tokens[None], need_weights=False)
        mixed = mixed[0].reshape(views, size * size, dim).permute(0, 2, 1).reshape(views, dim, size, size)
        expected = (mixed + x[b * views : (b + 1) * views]) * math.sqrt(0.5)
        torch.testing.assert_close(out[b * views : (b + 1) * views], expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="multiple of 4 views"):
        attn(torch.randn(6, dim, size, size))


def _unet(attention: bool) -> MultiViewUNet:
    torch.manual_seed(0)
    return MultiViewUNet(
        9, 14, (16, 32), (False, attention), attention, (32, 16), (attention, False),
        layers_per_block=1, attention_heads=2, num_views=4, num_groups=8,
    ).eval()


def test_views_interact_only_through_attention_and_objects_never():
    x = torch.randn(8, 9, 16, 16)  # 2 objects x 4 views
    y = x.clone()
    y[1] += torch.randn(9, 16, 16)  # change view 1 of object 0
    with torch.no_grad():
        for attention in (False, True):
            unet = _unet(attention)
            a, b = unet(x), unet(y)
            assert a.shape == (8, 14, 16, 16)
            view0_changed = not torch.allclose(a[0], b[0], atol=1e-6)
            assert view0_changed == attention
            torch.testing.assert_close(a[4:], b[4:])  # the other object is untouched


def test_unet_is_equivariant_to_view_permutation():
    unet = _unet(True)
    x = torch.randn(4, 9, 16, 16)
    perm = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        torch.testing.assert_close(unet(x[perm]), unet(x)[perm], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------- #
# Activations
# ---------------------------------------------------------------------------------------------- #


def _constant_output(model: Reconstructor, raw: torch.Tensor) -> Reconstructor:
    """Make the last 1x1 conv output `raw` (14 values) at every pixel."""
    with torch.no_grad():
        model.conv.weight.zero_()
        model.conv.bias.copy_(raw)
    return model


def test_activations_match_lgm_closed_form(tiny):
    raw = torch.tensor([0.3, -2.0, 0.7, 0.0, 0.0, 1.0, -1.0, 3.0, 0.0, 4.0, 0.0, 0.0, 10.0, -0.5])
    _constant_output(tiny, raw)
    with torch.no_grad():
        g = tiny.forward_gaussians(torch.randn(2, 4, 9, 32, 32))
    assert g.shape == (2, 4 * 16 * 16, 14)
    softplus = lambda v: math.log1p(math.exp(v))
    expected = torch.tensor(
        [0.3, -1.0, 0.7, 0.5, 0.1 * math.log(2), 0.1 * softplus(1.0), 0.1 * softplus(-1.0),
         0.6, 0.0, 0.8, 0.0, 0.5, 0.5 * math.tanh(10.0) + 0.5, 0.5 * math.tanh(-0.5) + 0.5]
    )
    torch.testing.assert_close(g[0, 0], expected)
    torch.testing.assert_close(g, expected.expand_as(g))


def test_release_rotation_activation_normalises_across_gaussians(tiny):
    release = Reconstructor(get_preset("tiny", lgm_release_rotation=True, **SMALL_INPUT)).eval()
    release.load_state_dict(tiny.state_dict())
    x = torch.randn(1, 4, 9, 32, 32)
    with torch.no_grad():
        a, b = tiny(x), release(x)
    torch.testing.assert_close(a[..., 7:11].norm(dim=-1), torch.ones(1, a.shape[1]))
    torch.testing.assert_close(b[..., 7:11].square().sum(dim=1), torch.ones(1, 4))  # each channel over N
    torch.testing.assert_close(torch.cat([a[..., :7], a[..., 11:]], -1), torch.cat([b[..., :7], b[..., 11:]], -1))


# ---------------------------------------------------------------------------------------------- #
# Frames
# ---------------------------------------------------------------------------------------------- #


def test_matrix_to_quaternion_matches_scipy():
    rots = Rotation.random(200, random_state=0)
    mats = np.concatenate([rots.as_matrix(), Rotation.from_rotvec([[math.pi, 0, 0], [0, math.pi, 0], [0, 0, math.pi]]).as_matrix()])
    ours = matrix_to_quaternion(torch.from_numpy(mats).float())
    xyzw = Rotation.from_matrix(mats).as_quat()
    ref = torch.from_numpy(np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)).float()
    ref = torch.where(ref[:, :1] < 0, -ref, ref)
    # a quaternion and its negative are the same rotation; compare up to sign
    sign = torch.sign((ours * ref).sum(-1, keepdim=True))
    torch.testing.assert_close(ours, ref * sign, atol=1e-5, rtol=0)


def test_quaternion_multiply_composes_rotations():
    a, b = Rotation.random(50, random_state=1), Rotation.random(50, random_state=2)
    to_wxyz = lambda r: torch.from_numpy(np.roll(r.as_quat(), 1, axis=1)).float()
    product = quaternion_multiply(to_wxyz(a), to_wxyz(b))
    torch.testing.assert_close(quaternion_to_matrix(product), torch.from_numpy((a * b).as_matrix()).float(), atol=1e-5, rtol=0)


def test_lgm_inference_rig_is_already_canonical():
    # LGM's own inference cameras (elevation 0, azimuths 0/90/180/270, radius 1.5) are canonical.
    rig = orbit_camera(torch.zeros(4), torch.tensor([0.0, 90.0, 180.0, 270.0]), 1.5)[None]
    cams, world_from_canonical = canonical_cameras(rig, radius=1.5, rescale=True)
    torch.testing.assert_close(cams, rig, atol=1e-5, rtol=0)
    torch.testing.assert_close(world_from_canonical[0], torch.eye(4), atol=1e-5, rtol=0)


@pytest.mark.parametrize("rescale", [False, True])
def test_canonical_frame_maps_back_to_world_cameras(rescale):
    gen = torch.Generator().manual_seed(3)
    rig = torch.stack([_random_rigid(gen) @ _orbit_rig(10.0, 2.0, 30.0), _orbit_rig(-5.0, 1.7)])  # (2, 4, 4, 4)
    cams, m = canonical_cameras(rig, radius=1.5, rescale=rescale)
    for b in range(2):
        torch.testing.assert_close(cams[b], normalize_to_first_view(rig[b], radius=1.5, rescale=rescale))
    # camera 0 canonical: at (0, 0, 1.5), identity rotation
    torch.testing.assert_close(cams[:, 0], normalize_to_first_view(rig[0], 1.5)[0].expand(2, 4, 4), atol=1e-5, rtol=0)
    centres = torch.cat([cams[..., :3, 3], torch.ones(2, 4, 1)], -1)
    torch.testing.assert_close((m[:, None] @ centres[..., None])[..., :3, 0], rig[..., :3, 3], atol=1e-5, rtol=0)
    scale = m[:, :3, :3].det().abs() ** (1 / 3)
    expected_scale = rig[:, 0, :3, 3].norm(dim=-1) / 1.5 if rescale else torch.ones(2)
    torch.testing.assert_close(scale, expected_scale)
    torch.testing.assert_close((m[:, None, :3, :3] / scale[:, None, None, None]) @ cams[..., :3, :3], rig[..., :3, :3], atol=1e-5, rtol=0)


def test_transform_gaussians_carries_a_gaussian_on_each_canonical_camera_to_the_world_camera():
    gen = torch.Generator().manual_seed(4)
    rig = (_random_rigid(gen) @ _orbit_rig(20.0, 2.5))[None]
    cams, m = canonical_cameras(rig, radius=1.5, rescale=True)
    s = 1.5 / rig[0, 0, :3, 3].norm()
    # one Gaussian per camera, centred on it and oriented like it, scales (0.1, 0.2, 0.3)
    g = torch.zeros(1, 4, 14)
    g[0, :, 0:3] = cams[0, :, :3, 3]
    g[0, :, 3] = 0.7
    g[0, :, 4:7] = torch.tensor([0.1, 0.2, 0.3])
    g[0, :, 7:11] = matrix_to_quaternion(cams[0, :, :3, :3])
    g[0, :, 11:] = torch.tensor([0.2, 0.4, 0.6])
    world = transform_gaussians(g, m)
    torch.testing.assert_close(world[0, :, 0:3], rig[0, :, :3, 3], atol=1e-5, rtol=0)
    torch.testing.assert_close(world[0, :, 4:7], torch.tensor([0.1, 0.2, 0.3]).expand(4, 3) / s)
    torch.testing.assert_close(quaternion_to_matrix(world[0, :, 7:11]), rig[0, :, :3, :3], atol=1e-5, rtol=0)
    torch.testing.assert_close(world[0, :, 3], g[0, :, 3])
    torch.testing.assert_close(world[0, :, 11:], g[0, :, 11:])
    with pytest.raises(ValueError, match=r"gaussians: expected shape \(B, N, 14\)"):
        transform_gaussians(torch.zeros(4, 14), m)


def test_constant_canonical_gaussians_land_at_closed_form_world_points(tiny):
    # all Gaussians at canonical (0, 0, 0.5): between the object centre and view 0 at 1/3 of the
    # way, i.e. world point t0 * 0.5 / 1.5 for cameras looking at the origin.
    raw = torch.zeros(14)
    raw[2] = 0.5
    _constant_output(tiny, raw)
    rig = _orbit_rig(15.0, 2.0, 40.0)[None]
    with torch.no_grad():
        g = tiny.reconstruct_tensor(torch.rand(1, 4, 3, 48, 48), rig)
    expected = rig[0, 0, :3, 3] * (0.5 / 1.5)
    torch.testing.assert_close(g[0, :, :3], expected.expand(g.shape[1], 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(g[0, :, 4:7], torch.full((g.shape[1], 3), 0.1 * math.log(2) * 2.0 / 1.5))


def _check_moved(base, moved, move):
    torch.testing.assert_close(moved.means, base.means @ move[:3, :3].T + move[:3, 3], atol=1e-4, rtol=0)
    torch.testing.assert_close(moved.covariances(), move[:3, :3] @ base.covariances() @ move[:3, :3].T, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(moved.colors, base.colors)
    torch.testing.assert_close(moved.opacities, base.opacities)


def test_reconstruction_follows_a_rotated_and_scaled_camera_rig(tiny):
    # with rescaling (default), the canonical frame ignores rotations and scalings about the origin
    gen = torch.Generator().manual_seed(5)
    rig = _orbit_rig(15.0, 2.0)
    turn = _random_rigid(gen)
    turn[:3, 3] = 0
    images = torch.rand(1, 4, 3, 32, 32, generator=gen)
    scaled_rig = rig.clone()
    scaled_rig[:, :3, 3] *= 1.7
    with torch.no_grad():
        base, turned, scaled = (tiny.reconstruct(images, r[None])[0] for r in (rig, turn @ rig, scaled_rig))
    _check_moved(base, turned, turn)
    torch.testing.assert_close(scaled.means, base.means * 1.7, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled.scales, base.scales * 1.7, atol=1e-6, rtol=1e-5)


def test_reconstruction_without_rescaling_follows_any_rigid_move(tiny):
    model = Reconstructor(get_preset("tiny", rescale_cameras=False, **SMALL_INPUT)).eval()
    model.load_state_dict(tiny.state_dict())
    gen = torch.Generator().manual_seed(6)
    rig, move = _orbit_rig(15.0, 1.5), _random_rigid(gen)
    images = torch.rand(1, 4, 3, 32, 32, generator=gen)
    with torch.no_grad():
        base, moved = (model.reconstruct(images, r[None])[0] for r in (rig, move @ rig))
    _check_moved(base, moved, move)


def test_rendered_reconstruction_lands_where_the_world_point_projects(tiny):
    # End to end through the project renderer: every Gaussian at canonical (0, 0, 0.5), i.e. the
    # world point t0 / 3; rendered from new cameras, the alpha centroid must sit at that point's
    # pinhole projection (computed here directly, not through the reconstructor's frame code).
    from videomv.gaussians.render import render

    raw = torch.zeros(14)
    raw[2], raw[3], raw[4:7] = 0.5, 5.0, -2.0  # position, opaque, small
    _constant_output(tiny, raw)
    rig = _orbit_rig(15.0, 2.0, 40.0)
    with torch.no_grad():
        gaussians = tiny.reconstruct(torch.rand(1, 4, 3, 32, 32), rig[None])[0]
        views = orbit_cameras(4, 25.0, 2.2, 10.0)
        alpha = render(gaussians, views, 49.1, 48, 48, background=(0.0, 0.0, 0.0))["alpha"][:, 0]
    point = torch.cat([rig[0, :3, 3] / 3, torch.ones(1)])
    focal = 0.5 * 48 / math.tan(math.radians(49.1) / 2)
    ys, xs = torch.meshgrid(torch.arange(48.0) + 0.5, torch.arange(48.0) + 0.5, indexing="ij")
    for v in range(4):
        cam = torch.linalg.inv(views[v]) @ point  # OpenGL camera: looks along -z, y up
        expected = (24 + focal * cam[0] / -cam[2], 24 - focal * cam[1] / -cam[2])
        centroid = ((alpha[v] * xs).sum() / alpha[v].sum(), (alpha[v] * ys).sum() / alpha[v].sum())
        assert alpha[v].sum() > 1.0
        assert abs(centroid[0] - expected[0]) < 0.5 and abs(centroid[1] - expected[1]) < 0.5, (v, centroid, expected)


def test_prepare_inputs_normalises_images_and_uses_canonical_rays(tiny):
    images = torch.full((1, 4, 3, 128, 128), 0.5)
    images[..., 0, :, :] = 0.485  # ImageNet red mean -> 0
    rig = _orbit_rig(15.0, 2.0)[None]
    inputs, _ = tiny.prepare_inputs(images, rig)
    assert inputs.shape == (1, 4, 9, 32, 32)
    torch.testing.assert_close(inputs[:, :, 0], torch.zeros(1, 4, 32, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(inputs[:, :, 1], torch.full((1, 4, 32, 32), (0.5 - 0.456) / 0.224))
    expected_rays = plucker_rays(normalize_to_first_view(rig[0], 1.5, rescale=True), 32, 32, 49.1)
    torch.testing.assert_close(inputs[0, :, 3:], expected_rays)
    wide, _ = tiny.prepare_inputs(images, rig, fovy=60.0)  # images taken with another lens
    torch.testing.assert_close(wide[0, :, 3:], plucker_rays(normalize_to_first_view(rig[0], 1.5, rescale=True), 32, 32, 60.0))


def test_bad_inputs_are_rejected_with_clear_messages(tiny):
    rig = _orbit_rig()[None]
    with pytest.raises(ValueError, match=r"images: expected shape \(B, 4, 3, H, W\)"):
        tiny.reconstruct(torch.rand(1, 3, 3, 64, 64), rig)
    with pytest.raises(ValueError, match=r"c2w: expected shape \(1, 4, 4, 4\)"):
        tiny.reconstruct(torch.rand(1, 4, 3, 64, 64), rig[0])
    with pytest.raises(ValueError, match=r"images must be RGB in \[0, 1\]"):
        tiny.reconstruct(torch.rand(1, 4, 3, 64, 64) * 255, rig)
    with pytest.raises(ValueError, match="inputs: expected shape"):
        tiny.forward_gaussians(torch.rand(1, 4, 9, 64, 64))
    bad = rig.clone()
    bad[0, 1, :3, :3] *= 2
    with pytest.raises(ValueError, match="orthonormal"):
        tiny.reconstruct(torch.rand(1, 4, 3, 64, 64), bad)


def test_gradients_reach_every_parameter(tiny):
    tiny.train()
    g = tiny.reconstruct_tensor(torch.rand(1, 4, 3, 32, 32), _orbit_rig()[None])
    g.square().mean().backward()
    missing = [n for n, p in tiny.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


# ---------------------------------------------------------------------------------------------- #
# Config and checkpoints
# ---------------------------------------------------------------------------------------------- #


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="splat_size 64 does not match"):
        get_preset("tiny", splat_size=64)
    with pytest.raises(ValueError, match="not divisible by num_groups"):
        get_preset("tiny", down_channels=(12, 32, 64, 64))
    with pytest.raises(ValueError, match="unknown reconstructor preset 'huge'"):
        get_preset("huge")
    with pytest.raises(ValueError, match=r"unknown keys \['bogus'\]"):
        ReconstructorConfig.from_dict({**get_preset("tiny").to_dict(), "bogus": 1})


def test_save_and_reload_gives_identical_outputs(tiny, tmp_path):
    out_dir = tiny.save_pretrained(tmp_path / "recon")
    assert sorted(os.listdir(out_dir)) == ["config.json", "model.safetensors"]  # no temp files left
    loaded = Reconstructor.from_pretrained(out_dir)
    assert loaded.config == tiny.config
    x = torch.randn(1, 4, 9, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny(x), atol=0, rtol=0)
    # a bare weights file (no config next to it) is matched to its preset by shape
    bare_dir = tmp_path / "bare"
    bare_dir.mkdir()
    bare = bare_dir / "weights.safetensors"
    save_file(load_file(str(out_dir / "model.safetensors")), str(bare))
    assert infer_preset(load_file(str(bare))) == "tiny"
    from_bare = Reconstructor.from_pretrained(bare)
    assert from_bare.config == get_preset("tiny")
    for (name, a), (_, b) in zip(from_bare.state_dict().items(), tiny.state_dict().items()):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)


def test_lgm_style_file_with_lpips_keys_and_fp16_loads(tiny, tmp_path):
    state = {k: v.half() for k, v in tiny.state_dict().items()}
    state["lpips_loss.net.slice1.0.weight"] = torch.zeros(64, 3, 3, 3)
    path = tmp_path / "model_fp16.safetensors"
    save_file(state, str(path))
    loaded = Reconstructor.from_pretrained(path, config="tiny")
    assert next(loaded.parameters()).dtype == torch.float32
    torch.testing.assert_close(loaded.conv.weight, tiny.conv.weight.half().float())
    fresh = Reconstructor("tiny").load_checkpoint(path)
    torch.testing.assert_close(fresh.unet.conv_in.weight, tiny.unet.conv_in.weight.half().float())


def test_mismatched_checkpoint_names_missing_unexpected_and_misshapen_keys(tiny, tmp_path):
    state = dict(tiny.state_dict())
    del state["conv.bias"]
    state["unet.extra.weight"] = torch.zeros(3)
    state["unet.conv_in.weight"] = torch.zeros(16, 9, 1, 1)
    path = tmp_path / "broken.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as err:
        Reconstructor.from_pretrained(path, config="tiny")
    message = str(err.value)
    assert "missing keys 1: conv.bias" in message
    assert "unexpected keys 1: unet.extra.weight" in message
    assert "unet.conv_in.weight (16, 9, 1, 1) vs model (16, 9, 3, 3)" in message
    with pytest.raises(ValueError, match="missing keys"):
        Reconstructor("tiny").load_checkpoint(path)
    with pytest.raises(ValueError, match="match none of the presets"):
        Reconstructor.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Reconstructor.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match="is a preset name"):
        Reconstructor.from_pretrained("big")


# ---------------------------------------------------------------------------------------------- #
# Input views
# ---------------------------------------------------------------------------------------------- #


def test_select_input_views():
    assert select_input_views(24) == [0, 6, 12, 18]
    assert select_input_views(24, first=3) == [3, 9, 15, 21]
    picks = select_input_views(24, mode="random", generator=torch.Generator().manual_seed(0))
    assert len(set(picks)) == 4 and all(0 <= i < 24 for i in picks)
    assert picks == select_input_views(24, mode="random", generator=torch.Generator().manual_seed(0))
    seen = {tuple(select_input_views(24, mode="random", generator=torch.Generator().manual_seed(s))) for s in range(5)}
    assert len(seen) > 1
    with pytest.raises(ValueError, match="mode must be"):
        select_input_views(24, mode="spiral")
    with pytest.raises(ValueError, match="count must be"):
        select_input_views(3, count=4)
    with pytest.raises(ValueError, match="evenly spaced"):
        select_input_views(10, count=4)


def test_ray_positions_lie_on_the_pixel_rays():
    """position='ray': each Gaussian sits on its pixel's camera ray, at signed distance
    ray_extent * tanh(x0) from the ray's point nearest the origin."""
    model = Reconstructor(get_preset("tiny", input_size=32, splat_size=16, output_size=32)).eval()
    assert model.config.position == "ray"
    raw = torch.zeros(14)
    raw[0] = 0.5
    _constant_output(model, raw)
    cams = orbit_cameras(4, 20.0, 2.0)[None]
    images = torch.rand(1, 4, 3, 32, 32)
    inputs, _ = model.prepare_inputs(images, cams)
    with torch.no_grad():
        g = model.forward_gaussians(inputs)[0, :, :3].reshape(4, 16, 16, 3)
    canonical, _ = canonical_cameras(cams, model.config.cam_radius, model.config.rescale_cameras)
    origins, dirs = get_rays(canonical[0], 16, 16, model.config.fovy)  # splat-pixel rays
    along = ((g - origins) * dirs).sum(-1, keepdim=True)
    off_ray = (g - origins - along * dirs).norm(dim=-1)
    assert off_ray.max() < 2e-3  # on the ray (block-averaged rays vs exact pixel rays)
    nearest = origins - (origins * dirs).sum(-1, keepdim=True) * dirs
    signed = ((g - nearest) * dirs).sum(-1)
    torch.testing.assert_close(signed, torch.full_like(signed, math.tanh(0.5)), atol=2e-3, rtol=0)
