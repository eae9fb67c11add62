"""The bar the embedded toy models must clear, on toy test objects they never saw.

Text -> views: PSNR of the generated views against the ground-truth renders of a test object with
that caption, at that object's cameras. Two references bound it: the floor, a constant background
image, and the ceiling, another toy object with the same caption (same recipe, other sizes and
turns) rendered at the same cameras. `gap_closed` = (generated - floor) / (ceiling - floor); the bar
is at least 0.5, on the PSNRs averaged over the test prompts. Consistency: the mean absolute
difference between neighbouring views, generated vs ground truth (bar: ratio <= 2).
Image -> views: PSNR against the object's own ground truth, conditioned on its view 0 (bar: >= 20 dB).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videomv.data import toyworld
from videomv.data.common import composite as data_composite

from .geometry_eval import toy_object_for
from .metrics import psnr


def composite(rgba: torch.Tensor, background) -> torch.Tensor:
    """(V, H, W, 4) straight-alpha renders -> (V, 3, H, W) on `background`, as the datasets composite."""
    rgba = rgba.permute(0, 3, 1, 2)
    return data_composite(rgba[:, :3], rgba[:, 3:], torch.as_tensor(background, dtype=rgba.dtype)).clamp(0, 1)


def object_views(model, root, object_id: str):
    """The toy object, its orbit cameras, and its ground-truth views on the model's background."""
    s = model.settings
    obj = toy_object_for(root, object_id)
    cams, _, _ = toyworld.orbit_for(obj)
    return obj, cams, composite(toyworld.render_object(obj, cams, s.resolution, s.fovy), s.background)


def neighbour_difference(views: torch.Tensor) -> float:
    """Mean absolute difference between consecutive views of an orbit, wrapping around."""
    return float((views - views.roll(-1, dims=0)).abs().mean())


def mean_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(psnr(pred.clamp(0, 1), target.clamp(0, 1)).mean())


@dataclass
class TextBarRow:
    object_id: str
    caption: str
    generated: float
    floor: float
    ceiling: float
    neighbour_generated: float
    neighbour_truth: float

    @property
    def gap_closed(self) -> float:
        """Per object; NaN when the same-caption twin is no closer than the blank floor."""
        return gap_closed(self.generated, self.floor, self.ceiling)


def gap_closed(generated: float, floor: float, ceiling: float) -> float:
    """(generated - floor) / (ceiling - floor): 0 at the floor, 1 at the ceiling; NaN without a gap."""
    return (generated - floor) / (ceiling - floor) if ceiling > floor else float("nan")


def text_bar_row(model, root, object_id: str, seed: int = 0, like_index: int = 1, three_d_aware: bool = True,
                 steps: int | None = None, guidance_scale: float | None = None) -> TextBarRow:
    """Score one test object (see the module docstring)."""
    s = model.settings
    obj, cams, truth = object_views(model, root, object_id)
    twin = toyworld.sample_like(obj, seed=10_000 + like_index, index=like_index)
    ceiling = composite(toyworld.render_object(twin, cams, s.resolution, s.fovy), s.background)
    floor = torch.tensor(s.background).view(1, 3, 1, 1).expand_as(truth)
    out = model(prompt=obj.caption, cameras=cams, seed=seed, three_d_aware=three_d_aware, num_inference_steps=steps,
                guidance_scale=guidance_scale, progress=False)
    return TextBarRow(object_id, obj.caption, mean_psnr(out.images, truth), mean_psnr(floor, truth),
                      mean_psnr(ceiling, truth), neighbour_difference(out.images), neighbour_difference(truth))


def image_bar_psnr(model, root, object_id: str, seed: int = 0, three_d_aware: bool = True,
                   steps: int | None = None, guidance_scale: float | None = None) -> float:
    """PSNR of image -> views against the object's own renders, conditioned on its view 0."""
    _, cams, truth = object_views(model, root, object_id)
    out = model(image=truth[0], cameras=cams, seed=seed, three_d_aware=three_d_aware, num_inference_steps=steps,
                guidance_scale=guidance_scale, progress=False)
    return mean_psnr(out.images, truth)
