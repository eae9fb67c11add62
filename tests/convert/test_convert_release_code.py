"""Converted weights against the release's own UNets (runs when VIDEOMV_RELEASE_SRC points at a
checkout of alibaba/VideoMV; skipped otherwise).

The release's `UNetSD_T2VBase` and `UNetSD_I2VGen` are built at a tiny config with random weights
on CPU, saved as a release checkpoint, converted, and both are run on the same latents, timestep,
text features and cameras (release camera vectors for the release, our c2w for ours). The CUDA-only
imports of the release (xformers, fairscale, tyro, rotary_embedding_torch, LGM's Gaussian renderer)
get small stand-ins in `sys.modules` for the duration of the test, and its `.cuda()` call becomes a
no-op. LGM's reconstructor network is compared the same way.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from videomv.convert import load_release_checkpoint, release_camera_vectors
from videomv.convert.release import build_camera_unet
from videomv.geometry import orbit_cameras

RELEASE_SRC = os.environ.get("VIDEOMV_RELEASE_SRC")
pytestmark = pytest.mark.skipif(
    not RELEASE_SRC or not (Path(RELEASE_SRC) / "tools" / "modules" / "unet" / "unet_t2v.py").is_file(),
    reason="set VIDEOMV_RELEASE_SRC to a checkout of alibaba/VideoMV",
)
TOLERANCE = 1e-5

# Tiny shapes, the same network on both sides. The release hard-codes GroupNorm(32) and a
# 1024-wide context in places, hence 32-multiples and cross_attention_dim 1024.
RELEASE_TINY = dict(in_dim=4, dim=32, y_dim=1024, context_dim=1024, out_dim=4, dim_mult=[1, 2], num_heads=8,
                    head_dim=8, num_res_blocks=1, attn_scales=[1.0], dropout=0.0, temporal_attention=True,
                    use_checkpoint=False, use_camera_condition=True, use_lgm_refine=False, use_image_dataset=False)
OURS_TINY = dict(block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1, cross_attention_dim=1024,
                 attention_head_dim=8, norm_num_groups=32)


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _memory_efficient_attention(q, k, v, attn_bias=None, op=None):
    assert attn_bias is None
    return F.scaled_dot_product_attention(q, k, v)


class _RotaryEmbedding(torch.nn.Module):
    def __init__(self, *args, **kwargs):
        super().__init__()


@pytest.fixture
def release_unets(monkeypatch):
    """The release's UNet module files, imported with stand-ins for what a CPU machine lacks."""
    src = Path(RELEASE_SRC).resolve()
    before = set(sys.modules)
    xformers_ops = _module("xformers.ops", memory_efficient_attention=_memory_efficient_attention)
    stand_ins = {
        "xformers": _module("xformers", ops=xformers_ops),
        "xformers.ops": xformers_ops,
        "fairscale": _module("fairscale"),
        "fairscale.nn": _module("fairscale.nn"),
        "fairscale.nn.checkpoint": _module("fairscale.nn.checkpoint", checkpoint_wrapper=lambda m: m),
        "rotary_embedding_torch": _module("rotary_embedding_torch", RotaryEmbedding=_RotaryEmbedding),
        "tyro": _module("tyro", extras=_module("tyro.extras", subcommand_type_from_defaults=lambda *a, **k: None)),
        # LGM's renderer (CUDA rasteriser, CUDA tensors at construction) is not part of the comparison
        "core.gs": _module("core.gs", GaussianRenderer=lambda opt: None),
    }
    # The release's packages without their __init__ (which import training and data code).
    for name, folder in [("utils", src / "utils"), ("tools", src / "tools"), ("tools.modules", src / "tools" / "modules"),
                         ("tools.modules.unet", src / "tools" / "modules" / "unet"), ("core", src / "core")]:
        stand_ins[name] = _module(name, __path__=[str(folder)])
    for name in ("utils.registry_class", "utils.registry", "tools.modules.unet.util", "tools.modules.unet.unet_t2v",
                 "tools.modules.unet.unet_i2vgen", "core.models", "core.options", "core.unet", "core.attention"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    for name, module in stand_ins.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    monkeypatch.setenv("XFORMERS_DISABLED", "1")  # LGM's attention falls back to plain PyTorch
    t2v = importlib.import_module("tools.modules.unet.unet_t2v")
    i2v = importlib.import_module("tools.modules.unet.unet_i2vgen")
    models = importlib.import_module("core.models")
    options = importlib.import_module("core.options")
    yield types.SimpleNamespace(t2v=t2v.UNetSD_T2VBase, i2v=i2v.UNetSD_I2VGen, lgm=models.LGM, options=options.Options)
    for name in set(sys.modules) - before:
        sys.modules.pop(name, None)


def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random (the release zero-initialises output convs and the camera branch,
    which would hide mapping errors)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") or ".in_layers.0.weight" in name or "out_layers.0.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) / max(1.0, p[0].numel()) ** 0.5)
    return model.eval()


def convert(release_model, tmp_path: Path, task: str):
    path = tmp_path / f"{task}.pth"
    torch.save({"state_dict": release_model.state_dict(), "step": 1}, path)
    ckpt = load_release_checkpoint(path)
    return build_camera_unet(ckpt.unet, OURS_TINY, task, str(path))


def report(name: str, ours: torch.Tensor, theirs: torch.Tensor) -> float:
    diff = float((ours - theirs).abs().max())
    print(f"{name}: max |ours - release| = {diff:.3e} (output max |.| {float(theirs.abs().max()):.3f})")
    return diff


def test_text_unet_matches_the_release(release_unets, tmp_path):
    release = randomise(release_unets.t2v(**RELEASE_TINY), seed=0)
    ours = convert(release, tmp_path, "text")
    gen = torch.Generator().manual_seed(1)
    frames = 6
    x = torch.randn(2, 4, frames, 8, 8, generator=gen)
    t = torch.tensor([321, 321])
    y = torch.randn(2, 7, 1024, generator=gen)
    c2w = torch.stack([orbit_cameras(frames, 15.0, 2.0), orbit_cameras(frames, 30.0, 1.5, )])
    with torch.no_grad():
        theirs = release(x, t, y=y, camera_data=release_camera_vectors(c2w))
        mine = ours(x, t, encoder_hidden_states=y, cameras=c2w).sample
        without_camera = ours(x, t, encoder_hidden_states=y).sample
    assert report("text UNet", mine, theirs) <= TOLERANCE
    assert float((without_camera - theirs).abs().max()) > 100 * TOLERANCE  # cameras reach the output


def test_image_unet_matches_the_release(release_unets, tmp_path):
    release = randomise(release_unets.i2v(**RELEASE_TINY, concat_dim=4, num_tokens=4), seed=2)
    ours = convert(release, tmp_path, "image")
    gen = torch.Generator().manual_seed(3)
    frames = 6
    x = torch.randn(1, 4, frames, 8, 8, generator=gen)
    t = torch.tensor([555])
    y = torch.randn(1, 7, 1024, generator=gen)
    clip_image = torch.randn(1, 1024, generator=gen)
    local_image = torch.randn(1, 4, 1, 8, 8, generator=gen)
    fps = torch.tensor([8])
    c2w = orbit_cameras(frames, 5.0, 1.7)[None]
    # our image latents: the first frame, then position-mask frames (i + 1) / (F - 1), as I2VGen-XL's
    masks = [torch.full_like(local_image, (i + 1) / (frames - 1)) for i in range(frames - 1)]
    image_latents = torch.cat([local_image, *masks], dim=2)
    with torch.no_grad():
        theirs = release(x, t, y=y, image=clip_image, local_image=local_image, fps=fps,
                         camera_data=release_camera_vectors(c2w))
        mine = ours(x, t, fps=fps, image_latents=image_latents, image_embeddings=clip_image[:, None],
                    encoder_hidden_states=y, cameras=c2w).sample
    assert report("image UNet", mine, theirs) <= TOLERANCE


def test_reconstructor_matches_the_releases_lgm(release_unets, tmp_path):
    """lgm_big.* of a release checkpoint -> our Reconstructor gives LGM's Gaussians (release rotation)."""
    from videomv.recon import Reconstructor, ReconstructorConfig
    from videomv.recon.checkpoint import check_state_dict

    shape = dict(down_channels=(32, 64, 64), down_attention=(False, True, True), mid_attention=True,
                 up_channels=(64, 64), up_attention=(True, False))
    lgm = randomise(release_unets.lgm(release_unets.options(input_size=32, splat_size=16, output_size=32,
                                                             lambda_lpips=0.0, **shape)), seed=4)
    path = tmp_path / "lgm.pth"
    torch.save({"state_dict": {f"lgm_big.{k}": v for k, v in lgm.state_dict().items()}, "step": 1}, path)
    weights = load_release_checkpoint(path).reconstructor
    ours = Reconstructor(ReconstructorConfig(input_size=32, splat_size=16, output_size=32, layers_per_block=2,
                                             attention_heads=16, num_groups=32, lgm_release_rotation=True, **shape))
    check_state_dict({k: v.shape for k, v in ours.state_dict().items()}, weights, str(path))
    ours.load_state_dict(weights)
    ours.eval()
    inputs = torch.randn(2, 4, 9, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        theirs = lgm.forward_gaussians(inputs)
        mine = ours.forward_gaussians(inputs)
    assert report("reconstructor", mine, theirs) <= TOLERANCE
