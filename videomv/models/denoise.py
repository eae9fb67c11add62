"""The conditioning layer: one call from (latents, timestep, condition) to the multi-view UNet's
output, used by the pipelines, stage-1 training, the stage-2 generator and the probes.

A `MultiViewCondition` holds everything the UNet sees besides the noisy latents and the timestep:
the text embeddings, the per-view cameras and, for the image model, the image condition and fps.
Encoding prompts and images stays with the conditioners (`videomv.models.conditioning`), whose
inputs differ per caller (clip skip, a trainable text encoder, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import torch
from diffusers.models.unets.unet_3d_condition import UNet3DConditionModel
from diffusers.models.unets.unet_i2vgen_xl import I2VGenXLUNet

from .conditioning import ImageConditioning


@dataclass
class MultiViewCondition:
    """text: (B, T, D) prompt embeddings; cameras: (B, F, 16) camera vectors or (B, F, 4, 4) c2w, or
    None for no camera; camera_mask: (B,) 1 keeps, 0 drops a sample's cameras; image: the image
    model's condition (CLIP embedding + image latents), None for the text model; fps: the image
    model's frame-rate condition, (B,) or one number."""

    text: torch.Tensor
    cameras: torch.Tensor | None = None
    camera_mask: torch.Tensor | None = None
    image: ImageConditioning | None = None
    fps: torch.Tensor | int | None = None

    def __post_init__(self):
        if not torch.is_tensor(self.text) or self.text.ndim != 3:
            shape = tuple(self.text.shape) if torch.is_tensor(self.text) else type(self.text).__name__
            raise ValueError(f"text: expected (batch, tokens, dim) prompt embeddings, got {shape}")
        if (self.image is None) != (self.fps is None):
            raise ValueError("image and fps go together: give both (image model) or neither (text model)")

    @property
    def batch_size(self) -> int:
        return self.text.shape[0]

    def unconditional(self, text: torch.Tensor, image: str = "embedding") -> "MultiViewCondition":
        """The classifier-free-guidance partner of this condition: `text` (the negative prompt's
        embeddings), a zero CLIP image embedding, and the same image latents, fps and cameras (as
        `I2VGenXLPipeline`); image="image" zeroes the image latent too (`ImageConditioning.dropped`)."""
        return replace(self, text=text, image=None if self.image is None else self.image.unconditional(image))

    def with_unconditional(self, text: torch.Tensor, image: str = "embedding") -> "MultiViewCondition":
        """[unconditional; this] stacked along the batch, the layout `ddim_sample` expects when
        guidance is on."""
        return MultiViewCondition.cat([self.unconditional(text, image), self])

    @staticmethod
    def cat(conditions: Sequence["MultiViewCondition"]) -> "MultiViewCondition":
        """Conditions stacked along the batch."""
        if not conditions:
            raise ValueError("conditions: expected at least one condition")

        def stacked(name, values):
            present = [v is not None for v in values]
            if not any(present):
                return None
            if not all(present):
                raise ValueError(f"conditions: {name} is given for some conditions but not for others")
            return torch.cat(values)

        fps = [c.fps for c in conditions]
        if all(f is not None and not torch.is_tensor(f) for f in fps) and len(set(fps)) == 1:
            fps = fps[0]  # one number for all
        else:
            fps = stacked("fps", [torch.full((c.batch_size,), f) if f is not None and not torch.is_tensor(f) else f
                                  for c, f in zip(conditions, fps)])
        images = [c.image for c in conditions]
        image = None
        if any(i is not None for i in images):
            if not all(i is not None for i in images):
                raise ValueError("conditions: image is given for some conditions but not for others")
            if len({i.clean_input_view for i in images}) > 1:
                raise ValueError("conditions: clean_input_view differs between the image conditions")
            image = ImageConditioning(torch.cat([i.image_embeddings for i in images]),
                                      torch.cat([i.image_latents for i in images]), images[0].clean_input_view)
        return MultiViewCondition(
            text=torch.cat([c.text for c in conditions]),
            cameras=stacked("cameras", [c.cameras for c in conditions]),
            camera_mask=stacked("camera_mask", [c.camera_mask for c in conditions]),
            image=image,
            fps=fps,
        )


def denoise(unet, latents: torch.Tensor, timestep, condition: MultiViewCondition,
            cross_attention_kwargs: dict | None = None) -> torch.Tensor:
    """The UNet's prediction (noise or v, as it was trained) for `latents` (B, C, F, h, w) at
    `timestep` (a number or (B,)) under `condition`. `unet` is a `T2MVUNet` for a text condition,
    an `I2MVUNet` for an image condition (also wrapped, e.g. by DDP). An image condition with
    `clean_input_view` puts the input image's latent in place of view 0's noisy latents."""
    if condition.batch_size != latents.shape[0]:
        raise ValueError(f"condition: batch size {condition.batch_size} does not match the latents' "
                         f"{latents.shape[0]}")
    model = getattr(unet, "module", unet)  # DDP-wrapped in training
    if isinstance(model, (UNet3DConditionModel, I2VGenXLUNet)):
        is_image_model = isinstance(model, I2VGenXLUNet)
        if is_image_model != (condition.image is not None):
            wanted = "an image condition (image and fps)" if is_image_model else "a text condition (no image or fps)"
            raise ValueError(f"condition: {type(model).__name__} needs {wanted}")
    common = dict(encoder_hidden_states=condition.text, cameras=condition.cameras, camera_mask=condition.camera_mask,
                  cross_attention_kwargs=cross_attention_kwargs)
    if condition.image is None:
        return unet(latents, timestep, **common).sample
    if condition.image.clean_input_view:
        latents = torch.cat([condition.image.input_view_latent.to(latents.dtype), latents[:, :, 1:]], dim=2)
    return unet(latents, timestep, fps=condition.fps, image_latents=condition.image.image_latents,
                image_embeddings=condition.image.image_embeddings, **common).sample
