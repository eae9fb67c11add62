"""The feed-forward reconstructor (paper Sec. 3.3, 7.3): LGM's asymmetric multi-view UNet turning
4 posed views into 3D Gaussians, one per output pixel ("splatter images").

Data flow: images (B, 4, 3, H, W) in [0, 1] + cameras in the project world
  -> resize to input_size, ImageNet-normalise; cameras -> LGM's canonical frame (`frames.py`)
  -> concat Plücker rays of the canonical cameras -> (B, 4, 9, S, S)
  -> UNet + 1x1 conv -> (B, 4, 14, s, s) -> activations -> (B, 4 s^2, 14) canonical Gaussians
  -> similarity back to the project world.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from videomv.gaussians.gaussian_set import GaussianSet
from videomv.geometry import plucker_rays

from . import checkpoint
from .frames import canonical_cameras, transform_gaussians
from .presets import PRESETS, ReconstructorConfig, get_preset
from .unet import MultiViewUNet

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _as_config(config: ReconstructorConfig | str | dict) -> ReconstructorConfig:
    if isinstance(config, ReconstructorConfig):
        return config.validate()
    if isinstance(config, str):
        return get_preset(config)
    if isinstance(config, dict):
        return ReconstructorConfig.from_dict(config)
    raise TypeError(f"config must be a ReconstructorConfig, a preset name or a dict, got {type(config).__name__}")


class Reconstructor(nn.Module):
    """4 posed views -> 3D Gaussians. Attributes `unet` and `conv` carry LGM's parameter names."""

    def __init__(self, config: ReconstructorConfig | str | dict = "tiny"):
        super().__init__()
        self.config = cfg = _as_config(config)
        self.unet = MultiViewUNet(
            cfg.in_channels,
            cfg.out_channels,
            down_channels=cfg.down_channels,
            down_attention=cfg.down_attention,
            mid_attention=cfg.mid_attention,
            up_channels=cfg.up_channels,
            up_attention=cfg.up_attention,
            layers_per_block=cfg.layers_per_block,
            attention_heads=cfg.attention_heads,
            num_views=cfg.num_input_views,
            num_groups=cfg.num_groups,
            eps=cfg.norm_eps,
        )
        self.conv = nn.Conv2d(cfg.out_channels, cfg.out_channels, kernel_size=1)
        with torch.no_grad():  # start from small, faint Gaussians (opacity ~0.12, scale ~0.013) rather
            self.conv.bias[3] = -2.0  # than 16k half-opaque blobs that cover every view
            self.conv.bias[4:7] = -2.0

    # ------------------------------------------------------------------------------------------ #
    # inputs
    # ------------------------------------------------------------------------------------------ #

    def _check_views(self, images: torch.Tensor, c2w: torch.Tensor) -> None:
        views = self.config.num_input_views
        if images.ndim != 5 or images.shape[1] != views or images.shape[2] != 3:
            raise ValueError(f"images: expected shape (B, {views}, 3, H, W), got {tuple(images.shape)}")
        if c2w.shape != (images.shape[0], views, 4, 4):
            raise ValueError(f"c2w: expected shape ({images.shape[0]}, {views}, 4, 4), got {tuple(c2w.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or inf")
        if images.min() < -0.5 or images.max() > 1.5:
            raise ValueError(
                f"images must be RGB in [0, 1], got values in [{images.min().item():.3g}, {images.max().item():.3g}]"
            )

    def prepare_inputs(
        self, images: torch.Tensor, c2w: torch.Tensor, fovy: float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, V, 3, H, W) in [0, 1], c2w (B, V, 4, 4) project world ->
        (network input (B, V, 9, S, S), canonical-to-world similarity (B, 4, 4)).
        `fovy` (degrees) of the input images defaults to the config's (LGM: 49.1)."""
        self._check_views(images, c2w)
        cfg = self.config
        batch, views = images.shape[:2]
        size = cfg.input_size
        x = images.reshape(batch * views, *images.shape[2:]).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = ((x - mean) / std).reshape(batch, views, 3, size, size)
        cams, world_from_canonical = canonical_cameras(c2w, cfg.cam_radius, cfg.rescale_cameras)
        rays = plucker_rays(cams.cpu(), size, size, cfg.fovy if fovy is None else fovy).to(x.device)  # (B, V, 6, S, S)
        return torch.cat([x, rays], dim=2), world_from_canonical.to(x.device)

    # ------------------------------------------------------------------------------------------ #
    # network
    # ------------------------------------------------------------------------------------------ #

    def forward_splatter(self, inputs: torch.Tensor) -> torch.Tensor:
        """(B, V, 9, S, S) -> raw splatter images (B, V, 14, s, s), before activations."""
        cfg = self.config
        expected = (cfg.num_input_views, cfg.in_channels, cfg.input_size, cfg.input_size)
        if inputs.ndim != 5 or tuple(inputs.shape[1:]) != expected:
            raise ValueError(f"inputs: expected shape (B, {', '.join(map(str, expected))}), got {tuple(inputs.shape)}")
        batch, views = inputs.shape[:2]
        x = self.conv(self.unet(inputs.reshape(batch * views, *inputs.shape[2:])))
        return x.reshape(batch, views, cfg.out_channels, cfg.splat_size, cfg.splat_size)

    def splat_rays(self, inputs: torch.Tensor) -> torch.Tensor:
        """The inputs' Plücker channels at splat resolution, (B, V, 6, s, s). Within a view the
        moment o x d is linear in d, so block averages stay exact rays (up to the norm of d)."""
        batch, views = inputs.shape[:2]
        rays = F.adaptive_avg_pool2d(inputs[:, :, 3:9].flatten(0, 1), self.config.splat_size)
        return rays.unflatten(0, (batch, views))

    def positions(self, raw: torch.Tensor, rays: torch.Tensor | None) -> torch.Tensor:
        """Gaussian centres (B, N, 3) from the raw position channels (see `ReconstructorConfig.position`)."""
        if self.config.position == "absolute":
            return raw.clamp(-1, 1)
        if rays is None:
            raise ValueError("position='ray' needs the rays of the splatter pixels")
        r = rays.permute(0, 1, 3, 4, 2).reshape(raw.shape[0], -1, 6)
        norm = r[..., 3:].norm(dim=-1, keepdim=True).clamp_min(1e-8)
        moment, direction = r[..., :3] / norm, r[..., 3:] / norm
        closest = torch.linalg.cross(direction, moment, dim=-1)  # d x (o x d): the ray's point nearest the origin
        return closest + direction * (self.config.ray_extent * torch.tanh(raw[..., :1]))

    def activate(self, splatter: torch.Tensor, rays: torch.Tensor | None = None) -> torch.Tensor:
        """Raw splatter images (B, V, 14, s, s) -> Gaussians (B, V*s*s, 14) in LGM's layout:
        pos 3 (see `positions`; rays (B, V, 6, s, s) needed for position='ray'), opacity 1
        (sigmoid), scale 3 (0.1 softplus), rotation 4 (normalised quaternion, w first),
        rgb 3 (0.5 tanh + 0.5)."""
        batch = splatter.shape[0]
        x = splatter.permute(0, 1, 3, 4, 2).reshape(batch, -1, splatter.shape[2])
        pos, opacity, scale, rot, rgb = x.split([3, 1, 3, 4, 3], dim=-1)
        rot_dim = 1 if self.config.lgm_release_rotation else -1  # see ReconstructorConfig
        return torch.cat(
            [
                self.positions(pos, rays),
                torch.sigmoid(opacity),
                0.1 * F.softplus(scale),
                F.normalize(rot, dim=rot_dim),
                0.5 * torch.tanh(rgb) + 0.5,
            ],
            dim=-1,
        )

    def forward_gaussians(self, inputs: torch.Tensor) -> torch.Tensor:
        """Network input (B, V, 9, S, S) -> Gaussians (B, V*s*s, 14) in the canonical frame."""
        rays = self.splat_rays(inputs) if self.config.position == "ray" else None
        return self.activate(self.forward_splatter(inputs), rays)

    forward = forward_gaussians

    def reconstruct_tensor(self, images: torch.Tensor, c2w: torch.Tensor, fovy: float | None = None) -> torch.Tensor:
        """images (B, V, 3, H, W) in [0, 1] and their cameras c2w (B, V, 4, 4) in the project world
        (field of view `fovy`, default the config's) -> activated Gaussians (B, V*s*s, 14) in the
        project world, LGM layout (see `activate`)."""
        inputs, world_from_canonical = self.prepare_inputs(images, c2w, fovy)
        dtype = next(self.parameters()).dtype
        gaussians = self.forward_gaussians(inputs.to(dtype)).float()
        if self.config.lgm_release_rotation:
            # LGM's rasteriser builds R from these near-zero, unnormalised quaternions (norm
            # ~1/sqrt(N)), which gives the identity up to O(|q|^2): keep exactly that rotation.
            identity = torch.tensor([1.0, 0.0, 0.0, 0.0], device=gaussians.device)
            gaussians = torch.cat([gaussians[..., :7], identity.expand_as(gaussians[..., 7:11]), gaussians[..., 11:]], -1)
        return transform_gaussians(gaussians, world_from_canonical)

    def reconstruct(self, images: torch.Tensor, c2w: torch.Tensor, fovy: float | None = None) -> list[GaussianSet]:
        """Like `reconstruct_tensor`, as one GaussianSet per batch element, in the project world:
        render it with `videomv.gaussians.render` at any camera of the inputs' world."""
        gaussians = self.reconstruct_tensor(images, c2w, fovy)
        return [
            GaussianSet(means=g[:, 0:3], opacities=g[:, 3:4], scales=g[:, 4:7], rotations=g[:, 7:11], colors=g[:, 11:14])
            for g in gaussians
        ]

    # ------------------------------------------------------------------------------------------ #
    # weights
    # ------------------------------------------------------------------------------------------ #

    def load_checkpoint(self, path: str | Path) -> "Reconstructor":
        """Load weights from a safetensors file (this project's or LGM's release). Keys and shapes
        must match exactly; `lpips_loss.*` keys are ignored."""
        state = checkpoint.read_state_dict(path)
        expected = {k: v.shape for k, v in self.state_dict().items()}
        checkpoint.check_state_dict(expected, state, source=f"checkpoint {path}")
        self.load_state_dict(state)
        return self

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `model.safetensors` + `config.json` into `directory` (atomically)."""
        return checkpoint.write_pretrained(directory, self.state_dict(), self.config.to_dict())

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        config: ReconstructorConfig | str | dict | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> "Reconstructor":
        """Build and load a reconstructor.

        `path`: a folder written by `save_pretrained` (or holding LGM's `model.safetensors`), or a
        safetensors file. `config`: preset name / config; defaults to the folder's `config.json`,
        else to the one preset whose shapes fit the weights (LGM's release -> `big`).
        """
        path = Path(path)
        if path.is_dir():
            weights = path / checkpoint.WEIGHTS_NAME
            saved = checkpoint.read_config(path)
        elif path.is_file():
            weights, saved = path, checkpoint.read_config(path.parent)
        elif str(path) in PRESETS:
            raise ValueError(f"{path!r} is a preset name, not a checkpoint: use Reconstructor({str(path)!r}) for fresh weights")
        else:
            raise FileNotFoundError(f"reconstructor checkpoint {path} does not exist")
        state = checkpoint.read_state_dict(weights)
        if config is None:
            config = saved if saved is not None else infer_preset(state)
        with torch.device("meta"):  # no memory for weights that are about to be replaced
            model = cls(config)
        expected = {k: v.shape for k, v in model.state_dict().items()}
        checkpoint.check_state_dict(expected, state, source=f"checkpoint {weights}")
        model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
        return model.to(device).eval()


def infer_preset(state: dict[str, torch.Tensor]) -> str:
    """The name of the preset whose parameter names and shapes match `state` exactly."""
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    for name in PRESETS:
        with torch.device("meta"):
            model = Reconstructor(name)
        if {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes:
            return name
    raise ValueError(
        f"the weights ({len(state)} tensors) match none of the presets {sorted(PRESETS)}; "
        "pass config= (a preset name, a ReconstructorConfig or a config dict)"
    )
