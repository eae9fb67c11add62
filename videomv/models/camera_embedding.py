"""Camera conditioning shared by the multi-view UNets.

A camera is the 4x4 OpenGL camera-to-world matrix flattened row-major to 16 numbers (the layout of
`videomv.geometry.camera_vector`). A two-layer MLP maps it to the width of the time embedding; the
result is added to the time embedding of each frame (frame = view). The last layer starts at zero
so a freshly added branch leaves the pretrained video model unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class CameraEmbedding(nn.Module):
    """Linear(camera_dim, D) -> SiLU -> Linear(D, D); the last layer is zero-initialised."""

    def __init__(self, camera_dim: int, embed_dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(camera_dim, embed_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(embed_dim, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, cameras: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(cameras)))


def camera_vectors(cameras: torch.Tensor, batch_size: int, num_frames: int, camera_dim: int) -> torch.Tensor:
    """Check and reshape cameras given as (B, F, camera_dim) vectors or (B, F, 4, 4) matrices to
    (B, F, camera_dim). Matrices are flattened row-major, as `videomv.geometry.camera_vector`."""
    if not torch.is_tensor(cameras):
        raise TypeError(f"cameras: expected a torch.Tensor, got {type(cameras).__name__}")
    if cameras.ndim == 4 and cameras.shape[-2:] == (4, 4):
        cameras = cameras.flatten(-2)
    if cameras.ndim != 3 or cameras.shape[-1] != camera_dim:
        raise ValueError(
            f"cameras: expected shape (batch, frames, {camera_dim}) or (batch, frames, 4, 4), "
            f"got {tuple(cameras.shape)}"
        )
    if cameras.shape[1] != num_frames:
        raise ValueError(
            f"cameras: got {cameras.shape[1]} cameras per sample but the sample has {num_frames} frames; "
            "give one camera per frame"
        )
    if cameras.shape[0] != batch_size:
        raise ValueError(f"cameras: batch size {cameras.shape[0]} does not match the sample's batch size {batch_size}")
    return cameras


class CameraConditionedMixin:
    """Camera branch plumbing shared by `T2MVUNet` and `I2MVUNet`.

    Subclasses define `base_class` (the diffusers UNet they extend) and create `self.camera_embedding`.
    """

    base_class: type = None

    def add_camera_embedding(
        self,
        emb: torch.Tensor,
        cameras: torch.Tensor | None,
        camera_mask: torch.Tensor | None,
        batch_size: int,
        num_frames: int,
    ) -> torch.Tensor:
        """Add the camera embedding to the per-frame time embedding `emb` of shape (B * F, D)."""
        if cameras is None:
            if camera_mask is not None:
                raise ValueError("camera_mask was given without cameras")
            return emb
        cameras = camera_vectors(cameras, batch_size, num_frames, self.config.camera_dim)
        cam_emb = self.camera_embedding(cameras.to(device=emb.device, dtype=emb.dtype))  # (B, F, D)
        if camera_mask is not None:
            camera_mask = torch.as_tensor(camera_mask, device=emb.device)
            if camera_mask.shape != (batch_size,):
                raise ValueError(
                    f"camera_mask: expected shape ({batch_size},) (one flag per sample), got {tuple(camera_mask.shape)}"
                )
            cam_emb = cam_emb * camera_mask.to(emb.dtype)[:, None, None]
        return emb + cam_emb.reshape(batch_size * num_frames, -1)

    def run_block(self, block, *args):
        """Call a UNet block, through gradient checkpointing when it is enabled and grads are on."""
        if torch.is_grad_enabled() and self.gradient_checkpointing:
            return self._gradient_checkpointing_func(block, *args)
        return block(*args)

    @classmethod
    def from_base(cls, pretrained_model_name_or_path, subfolder: str | None = "unet", camera_dim: int = 16,
                  camera_embed_dim: int | None = None, **kwargs):
        """Load a base video UNet (hub id or local diffusers folder) and add a zero-initialised camera
        branch. Only camera weights may be missing from the base checkpoint."""
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "token", "revision", "local_files_only") if k in kwargs}
        config = dict(cls.base_class.load_config(pretrained_model_name_or_path, subfolder=subfolder, **hub_kwargs))
        if "camera_dim" in config:
            raise ValueError(
                f"{pretrained_model_name_or_path}: this checkpoint already has a camera branch "
                f"({config.get('_class_name')}); load it with {cls.__name__}.from_pretrained"
            )
        base = cls.base_class.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        model = cls.from_config(base.config, camera_dim=camera_dim, camera_embed_dim=camera_embed_dim)
        result = model.load_state_dict(base.state_dict(), strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("camera_embedding.")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{pretrained_model_name_or_path}: weights do not fit {cls.__name__}; "
                f"missing (non-camera) keys: {missing}; unexpected keys: {result.unexpected_keys}"
            )
        return model.to(dtype=base.dtype)
