"""Generating the view sets an evaluation scores: prompt lists in, saved generations out."""

from __future__ import annotations

import re
from pathlib import Path

from tqdm.auto import tqdm

from .view_sets import ViewSet


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; blank lines and lines starting with '#' are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read prompt file {path}: {err}") from None
    prompts = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise ValueError(f"prompt file {path} holds no prompts")
    return prompts


def item_name(index: int, prompt: str, max_len: int = 40) -> str:
    """A folder-safe, ordered name for prompt `index`: '007_a_red_cube'."""
    slug = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:max_len].rstrip("_")
    return f"{index:03d}_{slug or 'prompt'}"


def generate_text_view_sets(model, prompts: list[str], save_dir: str | Path | None = None, steps: int | None = None,
                            seed: int = 0, three_d_aware: bool = True, cameras=None, extra_settings: dict | None = None):
    """Yield one ViewSet per prompt from a text VideoMV (every prompt with the same `seed`), saving each
    generation to `<save_dir>/<item_name>` (`save_generation` layout) when `save_dir` is given."""
    from videomv.sampling.export import save_generation

    if model.settings.task != "text":
        raise ValueError(f"text evaluation needs a text model, got a {model.settings.task} model")
    cameras = model.default_cameras() if cameras is None else cameras
    for index, prompt in enumerate(tqdm(prompts, desc="generate views")):
        output = model(prompt=prompt, cameras=cameras, num_inference_steps=steps, seed=seed,
                       three_d_aware=three_d_aware, progress=False)
        name = item_name(index, prompt)
        if save_dir is not None:
            save_generation(output, Path(save_dir) / name, extra_settings=extra_settings)
        yield ViewSet(name=name, images=output.images.clamp(0, 1), cameras=output.cameras, fovy=model.settings.fovy,
                      prompt=prompt, background=model.settings.background)
