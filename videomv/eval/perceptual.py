"""LPIPS (Zhang et al. 2018) and CLIP score, from weights on local disk only.

LPIPS, as defined by the reference implementation (v0.1): images in [-1, 1] are shifted and scaled
per channel (shift -0.030, -0.088, -0.188; scale 0.458, 0.448, 0.450), passed through the ImageNet
backbone's convolutional features (VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 or AlexNet
relu1..relu5), each feature map is unit-normalised over channels (x / (||x|| + 1e-10)), the squared
difference of the two images' maps is weighted per channel by a learned 1x1 convolution, averaged
over space and summed over layers.

Weights needed: the torchvision backbone state dict (e.g. `vgg16-397923af.pth`,
`alexnet-owt-7be5be79.pth`, as torch hub caches them) and the LPIPS linear layers (`vgg.pth` /
`alex.pth` of the reference package; torchmetrics ships copies). They are looked up in an explicit
directory, `$VIDEOMV_LPIPS_WEIGHTS`, the torch hub checkpoint cache, and (linear layers only) the
installed torchmetrics package. No network is ever built from random weights.

CLIP score = 100 * max(cos(text embedding, image embedding), 0), averaged over views, with an
open_clip model loaded from a local checkpoint (explicit path or `$VIDEOMV_CLIP_WEIGHTS`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .availability import MetricUnavailable, find_file, load_state_dict_file, search_dirs
from .metrics import check_images

LPIPS_ENV = "VIDEOMV_LPIPS_WEIGHTS"
CLIP_ENV = "VIDEOMV_CLIP_WEIGHTS"

# Feature-layer boundaries: torchvision `features[start:end]` ends at each tapped ReLU.
_BACKBONES = {
    "vgg": {"arch": "vgg16", "slices": (4, 9, 16, 23, 30), "channels": (64, 128, 256, 512, 512)},
    "alex": {"arch": "alexnet", "slices": (2, 5, 8, 10, 12), "channels": (64, 192, 384, 256, 256)},
}
_BACKBONE_FILES = {
    "vgg": ("vgg16-397923af.pth", "vgg16*.pth", "vgg16*.safetensors"),
    "alex": ("alexnet-owt-7be5be79.pth", "alexnet*.pth", "alexnet*.safetensors"),
}
_LIN_FILES = {
    "vgg": ("vgg.pth", "vgg.safetensors", "lpips_vgg*.pth", "lpips_vgg*.safetensors"),
    "alex": ("alex.pth", "alex.safetensors", "lpips_alex*.pth", "lpips_alex*.safetensors"),
}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _check_net(net: str) -> dict:
    if net not in _BACKBONES:
        raise ValueError(f"LPIPS net must be one of {sorted(_BACKBONES)}, got {net!r}")
    return _BACKBONES[net]


def _feature_stack(net: str) -> nn.Sequential:
    """The torchvision architecture's convolutional trunk, truncated at the last tapped ReLU."""
    import torchvision

    spec = _check_net(net)
    with torch.device("meta"):  # skip initialising weights that are about to be replaced
        full = getattr(torchvision.models, spec["arch"])()
    return full.features[: spec["slices"][-1]]


class LPIPS(nn.Module):
    """LPIPS distance. Build with `load_lpips`, which fills in real weights."""

    def __init__(self, net: str = "vgg"):
        super().__init__()
        spec = _check_net(net)
        self.net_name = net
        self.features = _feature_stack(net)
        self.slices = spec["slices"]
        self.lins = nn.ModuleList(nn.Conv2d(ch, 1, 1, bias=False, device="meta") for ch in spec["channels"])
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        for module in self.features:
            if isinstance(module, nn.ReLU):
                module.inplace = False

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, start = [], 0
        for end in self.slices:
            for module in self.features[start:end]:
                x = module(x)
            taps.append(x)
            start = end
        return taps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS for (B, 3, H, W) images in [0, 1]. Differentiable in the images (usable
        as a loss); the network's own weights are frozen."""
        pred, target = check_images(pred, "pred"), check_images(target, "target")
        if pred.shape != target.shape or pred.shape[1] != 3:
            raise ValueError(f"pred and target must both be (B, 3, H, W), got {tuple(pred.shape)} and {tuple(target.shape)}")
        device = self.shift.device
        x = torch.cat([pred, target]).to(device=device, dtype=torch.float32)
        x = ((2 * x - 1) - self.shift) / self.scale
        total = torch.zeros(pred.shape[0], device=device)
        for feat, lin in zip(self._taps(x), self.lins):
            feat = feat / (feat.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            f0, f1 = feat.chunk(2)
            total = total + lin((f0 - f1) ** 2).mean(dim=(1, 2, 3))
        return total


def _lin_state(state: dict[str, torch.Tensor], channels, path) -> dict[str, torch.Tensor]:
    """Map the reference package's keys (`lin{k}.model.1.weight`, or `lins.{k}...`) to `lins.{k}.weight`."""
    out = {}
    for key, value in state.items():
        match = re.match(r"^(?:lins\.|lin)(\d+)\.(?:model\.\d+\.)?weight$", key)
        if match:
            out[f"lins.{int(match.group(1))}.weight"] = value
    for k, ch in enumerate(channels):
        w = out.get(f"lins.{k}.weight")
        if w is None or tuple(w.shape) != (1, ch, 1, 1):
            got = None if w is None else tuple(w.shape)
            raise ValueError(f"LPIPS linear weights {path}: layer {k} must have shape (1, {ch}, 1, 1), got {got}")
    return {k: out[f"lins.{k}.weight"] for k in range(len(channels))}


def _backbone_state(state: dict[str, torch.Tensor], features: nn.Sequential, path) -> dict[str, torch.Tensor]:
    """Keep the convolutional trunk's tensors, accepting a full torchvision state dict or `features` only."""
    stripped = {k[len("features.") :] if k.startswith("features.") else k: v for k, v in state.items()}
    wanted = features.state_dict(keep_vars=True)
    missing = [k for k in wanted if k not in stripped]
    if missing:
        raise ValueError(f"LPIPS backbone weights {path}: missing tensors {missing[:4]}{'...' if len(missing) > 4 else ''}")
    for k, v in wanted.items():
        if tuple(stripped[k].shape) != tuple(v.shape):
            raise ValueError(f"LPIPS backbone weights {path}: {k} has shape {tuple(stripped[k].shape)}, expected {tuple(v.shape)}")
    return {k: stripped[k].float() for k in wanted}


def _torchmetrics_lpips_dir() -> Path | None:
    try:
        import torchmetrics.functional.image.lpips as tm_lpips
    except Exception:
        return None
    return Path(tm_lpips.__file__).parent / "lpips_models"


def find_lpips_weights(net: str = "vgg", weights_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(backbone path, linear-layer path) for `net`, or `MetricUnavailable` saying what is missing."""
    _check_net(net)
    dirs = search_dirs(weights_dir, LPIPS_ENV)
    backbone = find_file(dirs, _BACKBONE_FILES[net])
    tm_dir = _torchmetrics_lpips_dir()
    lin = find_file(dirs + ([tm_dir] if tm_dir else []), _LIN_FILES[net])
    missing = []
    if backbone is None:
        missing.append(f"ImageNet {_BACKBONES[net]['arch']} backbone weights ({_BACKBONE_FILES[net][0]})")
    if lin is None:
        missing.append(f"LPIPS linear layers ({_LIN_FILES[net][0]})")
    if missing:
        where = ", ".join(str(d) for d in dirs)
        raise MetricUnavailable(f"LPIPS-{net}: no {' and no '.join(missing)} in {where} (set ${LPIPS_ENV})")
    return backbone, lin


def load_lpips(
    net: str = "vgg",
    backbone_path: str | Path | None = None,
    lin_path: str | Path | None = None,
    weights_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """LPIPS with weights from explicit files, else found by `find_lpips_weights`."""
    spec = _check_net(net)
    if backbone_path is None or lin_path is None:
        found_backbone, found_lin = find_lpips_weights(net, weights_dir)
        backbone_path = backbone_path or found_backbone
        lin_path = lin_path or found_lin
    model = LPIPS(net)
    features = _backbone_state(load_state_dict_file(backbone_path), model.features, backbone_path)
    lins = _lin_state(load_state_dict_file(lin_path), spec["channels"], lin_path)
    model.features.load_state_dict(features, assign=True)
    for k, lin in enumerate(model.lins):
        lin.load_state_dict({"weight": lins[k].float()}, assign=True)
    return model.to(device).eval().requires_grad_(False)


def lpips(pred: torch.Tensor, target: torch.Tensor, model: LPIPS, batch_size: int = 16, reduction: str = "none"):
    """Per-image LPIPS with a loaded model, in batches, for evaluation (no gradients)."""
    pred, target = check_images(pred, "pred"), check_images(target, "target")
    with torch.no_grad():
        values = torch.cat([model(p, t).cpu() for p, t in zip(pred.split(batch_size), target.split(batch_size))])
    if reduction == "mean":
        return values.mean()
    if reduction != "none":
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    return values


# --------------------------------------------------------------------------------------------- #
# CLIP score
# --------------------------------------------------------------------------------------------- #


class ClipScorer:
    """An open_clip model, its eval preprocessing and tokenizer."""

    def __init__(self, model, preprocess, tokenizer, device="cpu"):
        self.model, self.preprocess, self.tokenizer, self.device = model, preprocess, tokenizer, device

    @torch.no_grad()
    def cosine(self, images: torch.Tensor, text: str) -> torch.Tensor:
        """Cosine similarity between `text` and each of (V, 3, H, W) images in [0, 1]: (V,)."""
        from PIL import Image

        images = check_images(images, "images")
        if images.shape[1] != 3:
            raise ValueError(f"images: expected 3 channels, got {images.shape[1]}")
        if not isinstance(text, str):
            raise TypeError(f"text: expected a string prompt, got {type(text).__name__}")
        pixels = (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        batch = torch.stack([self.preprocess(Image.fromarray(p)) for p in pixels]).to(self.device)
        image_emb = F.normalize(self.model.encode_image(batch).float(), dim=-1)
        text_emb = F.normalize(self.model.encode_text(self.tokenizer([text]).to(self.device)).float(), dim=-1)
        return (image_emb @ text_emb.T).squeeze(-1).cpu()


def load_clip(model_name: str = "ViT-B-32", checkpoint: str | Path | None = None, device="cpu") -> ClipScorer:
    """open_clip model from a local checkpoint file (explicit or `$VIDEOMV_CLIP_WEIGHTS`), never downloaded."""
    import open_clip

    path = checkpoint or os.environ.get(CLIP_ENV)
    if not path:
        raise MetricUnavailable(f"CLIP score: no local open_clip checkpoint given (pass a path or set ${CLIP_ENV})")
    path = Path(path).expanduser()
    if not path.is_file():
        raise MetricUnavailable(f"CLIP score: checkpoint {path} does not exist")
    if model_name not in open_clip.list_models():
        raise ValueError(f"CLIP model name {model_name!r} is not an open_clip model config")
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(path), device=device)
    return ClipScorer(model.eval(), preprocess, open_clip.get_tokenizer(model_name), device)


def clip_score(images: torch.Tensor, text: str, scorer: ClipScorer, reduction: str = "mean") -> torch.Tensor:
    """100 * max(cos, 0) between the prompt and each view; averaged over views by default."""
    values = 100.0 * scorer.cosine(images, text).clamp(min=0)
    if reduction == "mean":
        return values.mean()
    if reduction != "none":
        raise ValueError(f"reduction must be 'none' or 'mean', got {reduction!r}")
    return values
