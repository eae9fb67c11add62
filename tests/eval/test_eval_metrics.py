"""Image, perceptual and flow-warping metrics against closed forms and peer implementations."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from videomv.eval import availability, flow, metrics, perceptual
from videomv.eval.availability import MetricUnavailable


def smooth_texture(h, w, seed=0, blur=2.0):
    """Band-limited random RGB texture in [0, 1] (blurred noise, stretched to the full range)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, h, w, generator=g)
    k = torch.arange(-6, 7, dtype=torch.float32)
    taps = torch.exp(-(k**2) / (2 * blur**2))
    taps = taps / taps.sum()
    x = F.pad(noise, (6, 6, 6, 6), mode="circular")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(3, 1, 1, 13), groups=3)  # -> (h + 12, w)
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(3, 1, 13, 1), groups=3)  # -> (h, w)
    x = (x - x.amin()) / (x.amax() - x.amin())
    return x[0]


# --------------------------------------------------------------------------------------------- #
# PSNR / SSIM
# --------------------------------------------------------------------------------------------- #


def test_psnr_closed_form():
    target = torch.full((2, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1, :, :4] += 0.2  # half the pixels off by 0.2: MSE 0.02 -> 10 log10(50)
    values = metrics.psnr(pred, target)
    assert values.shape == (2,)
    torch.testing.assert_close(values, torch.tensor([20.0, 10 * np.log10(50.0)], dtype=torch.float32), atol=1e-4, rtol=0)
    torch.testing.assert_close(metrics.psnr(pred, target, reduction="mean"), values.mean())
    assert torch.isinf(metrics.psnr(target, target)).all()
    # data range 255: same images scaled by 255 give the same PSNR
    big = metrics.check_images(pred * 255, "x", value_range=None)
    mse = ((big - target * 255) ** 2).flatten(1).mean(1)
    torch.testing.assert_close(10 * torch.log10(255.0**2 / mse), values, atol=1e-4, rtol=0)


def test_psnr_and_ssim_reject_bad_input():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(x, x[:1])
    with pytest.raises(ValueError, match=r"pred: expected values in \[0.0, 1.0\]"):
        metrics.psnr(x * 2, x)
    with pytest.raises(ValueError, match="target: expected images of shape"):
        metrics.ssim(x, x[0, 0])
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(x[..., :8, :8], x[..., :8, :8])
    with pytest.raises(ValueError, match="reduction"):
        metrics.psnr(x, x, reduction="sum")


def test_ssim_matches_scikit_image_and_torchmetrics():
    from skimage.metrics import structural_similarity
    from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

    torch.manual_seed(0)
    target = torch.stack([smooth_texture(40, 48, seed=s) for s in range(3)])
    pred = (target + 0.08 * torch.randn_like(target)).clamp(0, 1)
    pred[2] = torch.rand(3, 40, 48)  # unrelated image: low SSIM
    ours = metrics.ssim(pred, target)
    assert ours.shape == (3,)
    reference = [
        structural_similarity(
            p.permute(1, 2, 0).double().numpy(), t.permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=2,
        )
        for p, t in zip(pred, target)
    ]
    np.testing.assert_allclose(ours.numpy(), reference, atol=1e-5)
    assert ours[0] > 0.5 and ours[2] < 0.2
    # torchmetrics handles borders by reflection padding, so allow a small difference there.
    tm = torch.stack([tm_ssim(p[None].double(), t[None].double(), gaussian_kernel=True, sigma=1.5, kernel_size=11, data_range=1.0) for p, t in zip(pred, target)])
    np.testing.assert_allclose(ours.numpy(), tm.numpy(), atol=2e-2)
    torch.testing.assert_close(metrics.ssim(target, target), torch.ones(3))


# --------------------------------------------------------------------------------------------- #
# LPIPS
# --------------------------------------------------------------------------------------------- #


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No weights anywhere: empty env dirs and an empty torch hub cache."""
    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    for var in (perceptual.LPIPS_ENV, perceptual.CLIP_ENV, flow.RAFT_ENV):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_lpips_unavailable_without_backbone_weights(empty_caches):
    with pytest.raises(MetricUnavailable, match="vgg16 backbone"):
        perceptual.load_lpips("vgg")
    note = availability.metric_or_note(perceptual.load_lpips, "alex")
    assert note.startswith("unavailable: ") and "alexnet" in note
    with pytest.raises(ValueError, match="LPIPS net must be one of"):
        perceptual.load_lpips("resnet")


def test_lpips_matches_torchmetrics_reference_with_same_weights(empty_caches, monkeypatch):
    """Random backbone + the reference linear layers, saved to files: our computation must equal
    torchmetrics' LPIPS module given the same weights (plumbing and formula, not a real metric)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    torch.manual_seed(0)
    ref = _LPIPS(pretrained=True, net="alex", pnet_rand=True).eval()
    backbone = {}
    for key, value in ref.net.state_dict().items():  # slice{k}.{index}.weight -> features.{index}.weight
        backbone["features." + key.split(".", 1)[1]] = value
    lins = {k: v.clone() for k, v in ref.state_dict().items() if k.startswith("lin") and not k.startswith("lins.")}
    weights = empty_caches / "lpips"
    weights.mkdir()
    torch.save(backbone, weights / "alexnet-owt-7be5be79.pth")
    save_file(lins, str(weights / "alex.safetensors"))
    monkeypatch.setenv(perceptual.LPIPS_ENV, str(weights))

    model = perceptual.load_lpips("alex")
    a = torch.stack([smooth_texture(64, 64, seed=s) for s in range(3)])
    b = torch.stack([smooth_texture(64, 64, seed=s + 10) for s in range(3)])
    ours = perceptual.lpips(a, b, model)
    with torch.no_grad():
        theirs = ref(a, b, normalize=True).flatten()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)
    assert (ours > 0).all()


def test_lpips_vgg_plumbing_with_unit_linear_layers(tmp_path):
    import torchvision

    torch.manual_seed(0)
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, tmp_path / "vgg16-test.pth")
    ones = {f"lin{k}.model.1.weight": torch.ones(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(ones, tmp_path / "vgg.pth")
    model = perceptual.load_lpips("vgg", backbone_path=tmp_path / "vgg16-test.pth", lin_path=tmp_path / "vgg.pth")
    assert model.features[0].weight.data_ptr() != 0 and torch.equal(model.features[0].weight, features[0].weight)
    a = torch.stack([smooth_texture(32, 32, seed=s) for s in range(2)])
    b = torch.stack([smooth_texture(32, 32, seed=s + 5) for s in range(2)])
    d_ab, d_ba, d_aa = perceptual.lpips(a, b, model), perceptual.lpips(b, a, model), perceptual.lpips(a, a, model)
    assert d_ab.shape == (2,)
    torch.testing.assert_close(d_aa, torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(d_ab, d_ba)
    assert (d_ab > 1e-3).all()
    # With unit weights, a layer's term is the mean over pixels of |f0/|f0| - f1/|f1||^2, in [0, 4] each.
    assert (d_ab <= 4 * 5).all()
    # As a loss: gradients reach the images, never the frozen network.
    x = a.clone().requires_grad_(True)
    model(x, b).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    # A malformed linear-layer file is rejected with a clear message.
    torch.save({"lin0.model.1.weight": torch.ones(1, 3, 1, 1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"layer 0 must have shape \(1, 64, 1, 1\)"):
        perceptual.load_lpips("vgg", backbone_path=tmp_path / "vgg16-test.pth", lin_path=tmp_path / "bad.pth")


# --------------------------------------------------------------------------------------------- #
# CLIP score
# --------------------------------------------------------------------------------------------- #


def test_clip_unavailable_without_checkpoint(empty_caches):
    with pytest.raises(MetricUnavailable, match="no local open_clip checkpoint"):
        perceptual.load_clip("ViT-B-32")
    with pytest.raises(MetricUnavailable, match="does not exist"):
        perceptual.load_clip("ViT-B-32", checkpoint=empty_caches / "missing.pt")


def test_clip_score_plumbing_with_tiny_local_model(tmp_path, monkeypatch):
    import open_clip

    name = "videomv-test-tiny-clip"
    config = {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    save_file(model.state_dict(), str(tmp_path / "tiny.safetensors"))
    monkeypatch.setenv(perceptual.CLIP_ENV, str(tmp_path / "tiny.safetensors"))

    scorer = perceptual.load_clip(name)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(scorer.model.state_dict()[key], value)
    views = torch.stack([smooth_texture(48, 48, seed=s) for s in range(4)])
    cos = scorer.cosine(views, "a red chair")
    per_view = perceptual.clip_score(views, "a red chair", scorer, reduction="none")
    assert per_view.shape == (4,) and (per_view >= 0).all() and (per_view <= 100).all()
    torch.testing.assert_close(per_view, 100 * cos.clamp(min=0))
    torch.testing.assert_close(perceptual.clip_score(views, "a red chair", scorer), per_view.mean())
    # The same view repeated scores the same; the prompt matters.
    same = perceptual.clip_score(views[:1].repeat(3, 1, 1, 1), "a red chair", scorer, reduction="none")
    torch.testing.assert_close(same, same[:1].expand(3))
    assert not torch.allclose(scorer.cosine(views, "a blue car"), cos)


# --------------------------------------------------------------------------------------------- #
# Flow-warping RMSE
# --------------------------------------------------------------------------------------------- #


def shifted_views(num, dx, dy, size=96, seed=0):
    """Crops of one texture, each moved by (dx, dy) pixels: view[t+1](p) = view[t](p + (dx, dy))."""
    tex = smooth_texture(size + num * dy + 2, size + num * dx + 2, seed=seed, blur=2.5)
    return torch.stack([tex[:, t * dy : t * dy + size, t * dx : t * dx + size] for t in range(num)])


def test_backward_warp_integer_shift_is_exact():
    src = torch.rand(1, 3, 10, 12)
    shift = torch.zeros(1, 2, 10, 12)
    shift[:, 0], shift[:, 1] = 2.0, 1.0  # sample source at (x + 2, y + 1)
    warped, valid = flow.backward_warp(src, shift)
    torch.testing.assert_close(warped[..., :-1, :-2], src[..., 1:, 2:])
    assert valid[..., :-1, :-2].all() and not valid[..., -1, :].any() and not valid[..., :, -2:].any()
    with pytest.raises(ValueError, match="flow: expected shape"):
        flow.backward_warp(src, shift[..., :5])


def test_farneback_recovers_translation_and_warp_rmse():
    dx, dy = 3, 2
    views = shifted_views(3, dx, dy)
    est = flow.FarnebackFlow()(views[:1], views[1:2])[0]
    interior = est[:, 16:-16, 16:-16]
    assert abs(interior[0].median().item() - dx) < 0.3 and abs(interior[1].median().item() - dy) < 0.3

    result = flow.flow_warping_rmse(views, interval=1, flow=flow.FarnebackFlow())
    assert result.method == "farneback" and result.interval == 1 and len(result.per_pair) == 2
    assert result.rmse < 0.03
    far = flow.flow_warping_rmse(views, interval=2, flow=flow.FarnebackFlow())
    assert len(far.per_pair) == 1 and far.rmse < 0.05

    unrelated = torch.stack([smooth_texture(96, 96, seed=s, blur=2.5) for s in (1, 2, 3)])
    bad = flow.flow_warping_rmse(unrelated, interval=1, flow=flow.FarnebackFlow())
    assert bad.rmse > 4 * result.rmse and bad.rmse > 0.1

    same = flow.flow_warping_rmse(views[:1].repeat(3, 1, 1, 1), interval=1, flow=flow.FarnebackFlow())
    assert same.rmse < 1e-3


def test_flow_pairs_and_errors(empty_caches):
    assert flow.flow_pairs(24, 6)[:2] == [(0, 6), (1, 7)] and len(flow.flow_pairs(24, 6)) == 18
    assert flow.flow_pairs(4, 1, cyclic=True)[-1] == (3, 0)
    with pytest.raises(ValueError, match="need more than 6 views"):
        flow.flow_warping_rmse(torch.rand(4, 3, 16, 16), interval=6)
    with pytest.raises(ValueError, match="views: expected RGB"):
        flow.flow_warping_rmse(torch.rand(4, 1, 16, 16))
    assert isinstance(flow.default_flow(), flow.FarnebackFlow)  # no RAFT weights anywhere


def test_raft_loads_only_from_local_file(empty_caches, monkeypatch):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    path = empty_caches / "raft_small_C_T_V2-01064c6d.pth"
    torch.save(raft_small(weights=None).state_dict(), path)
    monkeypatch.setenv(flow.RAFT_ENV, str(path))
    estimator = flow.default_flow()
    assert isinstance(estimator, flow.RaftFlow) and estimator.name == "raft_small"
    estimator.iterations = 2  # random weights: only the plumbing is checked, keep it quick
    views = shifted_views(2, 1, 1, size=60)
    est = estimator(views[:1], views[1:])  # upsampled to RAFT's minimum of 128 and padded internally
    assert est.shape == (1, 2, 60, 60) and torch.isfinite(est).all()
    torch.save({"not": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="do not fit torchvision's raft_small"):
        flow.RaftFlow("raft_small", path)
