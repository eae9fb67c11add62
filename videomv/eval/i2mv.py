"""Image -> multi-view against ground truth (the paper's Table 2 protocol).

For each object: the condition is its view 0 (RGBA composited on the model's background, white for
the image model), the model generates views at the object's own orbit cameras, and PSNR / SSIM /
LPIPS compare generated and ground-truth views on a subset of frames (`subsets.view_subset`).
Flow-warping RMSE (interval 1, wrapping around the orbit) is computed on the generated frames of
the subset, in order. Metrics are computed at the model's resolution.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .metrics import psnr, ssim
from .subsets import view_subset
from .suite import MetricSuite
from .view_sets import ViewSet

TABLE2_COLUMNS = ["item", "subset", "frames", "psnr", "ssim", "lpips", "flow_rmse_f1", "flow_method"]


def compare_views(generated: torch.Tensor, reference: torch.Tensor, indices: list[int], suite: MetricSuite,
                  cyclic: bool = True) -> dict:
    """Metrics of generated vs reference (V, 3, H, W) views on the frames `indices`."""
    if generated.shape != reference.shape:
        raise ValueError(f"generated views {tuple(generated.shape)} and reference views {tuple(reference.shape)} differ in shape")
    pred, target = generated[indices], reference[indices]
    row = {
        "frames": " ".join(str(i) for i in indices),
        "psnr": float(psnr(pred, target).mean()),
        "ssim": float(ssim(pred, target).mean()),
        "lpips": suite.lpips(pred, target),
        "flow_method": suite.flow_method,
    }
    row["flow_rmse_f1"] = suite.flow_rmse(pred, 1, cyclic=cyclic) if len(indices) > 1 else ""
    return row


def condition_image(reference: ViewSet, index: int = 0) -> torch.Tensor:
    """The condition image (3, H, W): view `index` of the ground truth, already on its background."""
    return reference.images[index]


def generate_views(model, reference: ViewSet, steps: int | None, seed: int, three_d_aware: bool,
                   progress: bool = False):
    """Run an image VideoMV on the reference's view 0 at the reference's cameras."""
    if model.settings.task != "image":
        raise ValueError(f"the image->multi-view protocol needs an image model, got a {model.settings.task} model")
    reference = reference.resized(model.settings.resolution)
    return model(image=condition_image(reference), cameras=reference.cameras, num_inference_steps=steps,
                 seed=seed, three_d_aware=three_d_aware, progress=progress)


def evaluate_i2mv(model, references: list[ViewSet], subsets, suite: MetricSuite, steps: int | None = None,
                  seed: int = 0, three_d_aware: bool = True, save_dir: str | Path | None = None,
                  progress: bool = True) -> dict[str, list[dict]]:
    """Table-2 rows per subset ({subset: [row per object]}), one generation per object scored on every
    subset; generations are saved under `save_dir/<object id with / as __>` when given."""
    from videomv.sampling.export import save_generation

    subsets = [subsets] if isinstance(subsets, str) else list(subsets)
    tables = {name: [] for name in subsets}
    for reference in tqdm(references, desc="image->views", disable=not progress):
        output = generate_views(model, reference, steps, seed, three_d_aware)
        if save_dir is not None:
            save_generation(output, Path(save_dir) / reference.name.replace("/", "__"),
                            extra_settings={"object_id": reference.name})
        target = reference.resized(model.settings.resolution)
        for name in subsets:
            row = compare_views(output.images.clamp(0, 1), target.images, view_subset(name, target.cameras), suite)
            tables[name].append({"item": reference.name, "subset": name, **row})
    return tables
