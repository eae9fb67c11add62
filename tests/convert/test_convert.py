"""Release checkpoint conversion: key maps at full scale (meta device), the tensor changes on top of
the renaming, the checkpoint loader's refusals, and a whole conversion of a tiny model folder."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
import torch

from videomv.convert import (
    camera_vector_permutation,
    check_against,
    convert_unet_state_dict,
    fold_camera_frame,
    load_release_checkpoint,
    release_camera_vectors,
    to_release_state_dict,
)
from videomv.geometry import orbit_cameras
from videomv.models import I2MVUNet, T2MVUNet
from videomv.recon import Reconstructor

# Names and shapes of the release's full-scale state dicts, as built by its own code on the meta device.
KEY_LISTS = Path(__file__).resolve().parents[1] / "fixtures" / "release_keys"


def read_key_list(name: str) -> dict[str, tuple[int, ...]]:
    path = KEY_LISTS / name
    shapes = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or line.startswith("key\t") or not line.strip():
            continue
        key, shape = line.split("\t")
        shapes[key] = tuple(ast.literal_eval(shape))
    return shapes


def meta_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(s, device="meta") for k, s in shapes.items()}


# ---------------------------------------------------------------------------------------------- #
# full scale, meta device
# ---------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("task,cls,name,ours", [
    ("text", T2MVUNet, "videomv_release_t2v_unet_state_dict.tsv", 1484),
    ("image", I2MVUNet, "videomv_release_i2v_unet_state_dict.tsv", 1515),
])
def test_full_scale_key_map(task, cls, name, ours):
    release = read_key_list(name)
    with torch.device("meta"):
        model = cls()  # defaults: ModelScope-T2V / I2VGen-XL at full scale
    expected = {k: v.shape for k, v in model.state_dict().items()}
    conversion = convert_unet_state_dict(meta_state(release), dict(model.config), task)
    check_against(conversion, expected, name)  # raises naming any bad key
    assert len(release) == {"text": 1484, "image": 1513}[task]
    assert len(conversion.state_dict) == len(expected) == ours
    assert {k: tuple(v.shape) for k, v in conversion.state_dict.items()} == {k: tuple(v) for k, v in expected.items()}
    # every release key is the source of some converted key
    assert set(conversion.sources.values()) == set(release)


def test_full_scale_reconstructor_keys():
    lgm = read_key_list("lgm_big_state_dict.tsv")
    with torch.device("meta"):
        model = Reconstructor("big")
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == lgm


def test_unmapped_missing_and_wrong_shape_keys_are_named():
    release = meta_state(read_key_list("videomv_release_t2v_unet_state_dict.tsv"))
    with torch.device("meta"):
        model = T2MVUNet()
    expected = {k: v.shape for k, v in model.state_dict().items()}
    release["extra.weight"] = torch.empty(3, device="meta")
    del release["middle_block.1.proj_in.weight"]
    release["out.2.bias"] = torch.empty(5, device="meta")
    with pytest.raises(ValueError) as err:
        check_against(convert_unet_state_dict(release, dict(model.config), "text"), expected, "ckpt")
    message = str(err.value)
    assert "extra.weight" in message
    assert "mid_block.attentions.0.proj_in.weight" in message
    assert "conv_out.bias (from out.2.bias): (5,) vs model (4,)" in message


# ---------------------------------------------------------------------------------------------- #
# tensor changes
# ---------------------------------------------------------------------------------------------- #

TINY = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1, cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=32)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return model.eval()


def test_camera_vector_permutation_is_the_frame_change():
    c2w = orbit_cameras(6, elevation=20.0, radius=1.7)
    perm = camera_vector_permutation()
    assert torch.equal(perm.abs().sum(0), torch.ones(16)) and torch.equal(perm.abs().sum(1), torch.ones(16))
    torch.testing.assert_close(release_camera_vectors(c2w), c2w.flatten(-2) @ perm.T)
    # the release's world is z up: our +y (up) camera position is its +z
    release = release_camera_vectors(c2w).view(-1, 4, 4)
    torch.testing.assert_close(release[:, 2, 3], c2w[:, 1, 3])
    torch.testing.assert_close(release[:, 1, 3], -c2w[:, 2, 3])


def test_camera_fold_equals_converting_cameras():
    """A UNet with the folded camera linear fed our cameras == the same UNet unfolded fed the
    release's camera vectors."""
    release_unet = randomised(T2MVUNet(**TINY), seed=1)
    folded = T2MVUNet(**TINY).eval()
    state = release_unet.state_dict()
    state["camera_embedding.linear_1.weight"] = fold_camera_frame(state["camera_embedding.linear_1.weight"])
    folded.load_state_dict(state)

    c2w = orbit_cameras(4, elevation=15.0, radius=2.0)[None]
    sample = torch.randn(1, 4, 4, 8, 8)
    text = torch.randn(1, 5, 32)
    with torch.no_grad():
        ours = folded(sample, 500, text, cameras=c2w).sample
        theirs = release_unet(sample, 500, text, cameras=release_camera_vectors(c2w)).sample
        unconverted = release_unet(sample, 500, text, cameras=c2w).sample
    assert (ours - theirs).abs().max() <= 1e-5
    assert (ours - unconverted).abs().max() > 1e-3  # the change of frame matters


def test_conv_in_doubling_equals_doubled_image_features(monkeypatch):
    """Release weights run by our UNet with image features added twice == converted weights run
    by our UNet as is."""
    release_like = randomised(I2MVUNet(**TINY), seed=2)
    release_sd = to_release_state_dict(release_like.state_dict(), dict(release_like.config), "image")
    # to_release halves conv_in[:, 4:8]; undo it so `release_like` holds the release's own conv_in
    # (every other tensor converts back to release_like's own, the camera linear included)
    release_sd["input_blocks.0.0.weight"] = release_like.state_dict()["conv_in.weight"]
    conversion = convert_unet_state_dict(release_sd, dict(release_like.config), "image")
    converted = I2MVUNet(**TINY).eval()
    converted.load_state_dict(conversion.state_dict)
    assert torch.equal(conversion.state_dict["conv_in.weight"][:, 4:], 2 * release_sd["input_blocks.0.0.weight"][:, 4:])

    inputs = dict(sample=torch.randn(1, 4, 3, 8, 8), timestep=300, fps=8, image_latents=torch.randn(1, 4, 3, 8, 8),
                  image_embeddings=torch.randn(1, 1, 32), encoder_hidden_states=torch.randn(1, 5, 32),
                  cameras=torch.randn(1, 3, 16))
    with torch.no_grad():
        ours = converted(**inputs).sample
        features = I2MVUNet.image_latent_features
        monkeypatch.setattr(I2MVUNet, "image_latent_features", lambda self, x: 2 * features(self, x))
        doubled = release_like(**inputs).sample
    assert (ours - doubled).abs().max() <= 1e-5


def test_qkv_split_and_conv1d_projections():
    model = randomised(I2MVUNet(**TINY), seed=3)
    config = dict(model.config)
    release = to_release_state_dict(model.state_dict(), config, "image")
    qkv = release["local_temporal_encoder.layers.0.0.fn.to_qkv.weight"]
    assert qkv.shape == (3 * 8, 4)
    assert release["input_blocks.0.1.proj_in.weight"].shape == model.transformer_in.proj_in.weight.shape + (1,)
    back = convert_unet_state_dict(release, config, "image")
    assert not back.unmapped
    assert set(back.state_dict) == set(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict[key], value, rtol=0, atol=1e-6, msg=key)
    to_q = back.state_dict["image_latents_temporal_encoder.attn1.to_q.weight"]
    assert torch.equal(to_q, qkv[:8])


def test_text_round_trip_names_every_key():
    model = randomised(T2MVUNet(**TINY), seed=4)
    config = dict(model.config)
    release = to_release_state_dict(model.state_dict(), config, "text")
    assert len(release) == len(model.state_dict())
    assert "input_blocks.1.0.temopral_conv.conv1.0.weight" in release
    assert "output_blocks.1.1.conv.weight" in release  # level-0 upsampler sits after the resnet
    back = convert_unet_state_dict(release, config, "text")
    check_against(back, {k: v.shape for k, v in model.state_dict().items()}, "round trip")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(back.state_dict[key], value, rtol=0, atol=1e-6, msg=key)


# ---------------------------------------------------------------------------------------------- #
# checkpoint files
# ---------------------------------------------------------------------------------------------- #


class CarriesCode:
    """Unpickling this runs a function: weights_only loading must refuse it."""

    def __reduce__(self):
        return (print, ("code ran while unpickling",))


def test_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "step": 1, "hook": CarriesCode()}, path)
    with pytest.raises(ValueError, match="refused"):
        load_release_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_checkpoint_layout_errors(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="'state_dict'"):
        load_release_checkpoint(path)
    torch.save({"state_dict": {"module.w": torch.zeros(1)}, "step": 3}, path)
    with pytest.raises(ValueError, match="module"):
        load_release_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_release_checkpoint(tmp_path / "missing.pth")


def test_checkpoint_split(tmp_path):
    path = tmp_path / "ok.pth"
    torch.save({"state_dict": {"out.2.bias": torch.ones(4), "lgm_big.conv.weight": torch.ones(2)}, "step": 7}, path)
    ckpt = load_release_checkpoint(path)
    assert ckpt.step == 7
    assert list(ckpt.unet) == ["out.2.bias"] and list(ckpt.reconstructor) == ["conv.weight"]
    assert math.isclose(float(ckpt.reconstructor["conv.weight"].sum()), 2.0)


@pytest.mark.parametrize("task,base_cls,name", [
    ("text", "UNet3DConditionModel", "videomv_release_t2v_unet_state_dict.tsv"),
    ("image", "I2VGenXLUNet", "videomv_release_i2v_unet_state_dict.tsv"),
])
def test_full_scale_from_a_base_config(tmp_path, task, base_cls, name):
    """The camera UNet built from a diffusers base's unet/config.json (full-scale defaults, as the
    published ModelScope-T2V / I2VGen-XL configs) takes the converted release weights."""
    import diffusers

    from videomv.convert.release import unet_class, unet_config

    with torch.device("meta"):
        base = getattr(diffusers, base_cls)()
    base.save_config(tmp_path / "unet")
    config = unet_config(str(tmp_path), task)
    with torch.device("meta"):
        model = unet_class(task).from_config(config)
    conversion = convert_unet_state_dict(meta_state(read_key_list(name)), dict(model.config), task)
    check_against(conversion, {k: v.shape for k, v in model.state_dict().items()}, name)
    base_shapes = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.startswith("camera_embedding.")}
    assert ours == base_shapes  # the camera branch is the only addition to the base
