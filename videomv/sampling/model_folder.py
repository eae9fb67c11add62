"""File-level steps of writing a VideoMV model folder (see `VideoMV.save_pretrained`): configs
without machine-local paths, components shared with another folder as relative symlinks, and the
check that a replacement VAE keeps the latent space.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL


def require_empty_destination(path: Path, what: str = "destination") -> None:
    """Refuse to write over a folder that holds anything (or over a file)."""
    if path.is_symlink() or path.is_file():
        raise FileExistsError(f"{what} {path} exists and is not a folder; choose a new path")
    if path.is_dir() and any(path.iterdir()):
        raise FileExistsError(f"{what} {path} exists and is not empty; choose a new folder or remove this one first "
                              "(nothing was written)")


def drop_source_paths(folder: Path) -> None:
    """Remove the `_name_or_path` entries (where this machine loaded each part from) from the configs."""
    for config in folder.rglob("*.json"):
        data = json.loads(config.read_text())
        if isinstance(data, dict) and "_name_or_path" in data:
            del data["_name_or_path"]
            config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def same_tree(a: Path, b: Path) -> bool:
    """True when folders `a` and `b` hold the same file names with the same bytes."""
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    if filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)[1:] != ([], []):
        return False
    return all(same_tree(a / d, b / d) for d in cmp.common_dirs)


def link_identical_components(folder: Path, other: Path, final: Path) -> list[str]:
    """Replace each component folder of `folder` that is byte-identical to `other`'s by a relative
    symlink, valid once `folder` is renamed to `final`. Returns the linked component names."""
    linked = []
    for component in sorted(d for d in folder.iterdir() if d.is_dir()):
        twin = other / component.name
        if twin.is_dir() and same_tree(component, twin):
            shutil.rmtree(component)
            target = os.path.relpath(twin.resolve(), final.resolve())
            component.symlink_to(target, target_is_directory=True)
            linked.append(component.name)
    return linked


def compatible_vae(current: AutoencoderKL, path: str | Path) -> AutoencoderKL:
    """The VAE at `path`, if it maps images to the same latents as `current` (same encoder weights
    and scaling factor): the diffusion model was trained in that latent space. Its decoder may differ
    (e.g. from a decoder-only run)."""
    vae = AutoencoderKL.from_pretrained(str(path))
    if vae.config.scaling_factor != current.config.scaling_factor:
        raise ValueError(f"vae {path}: scaling_factor {vae.config.scaling_factor} != the pipeline's "
                         f"{current.config.scaling_factor}")
    ours, theirs = current.state_dict(), vae.state_dict()
    encoder = [k for k in ours if k.startswith(("encoder.", "quant_conv."))]
    changed = [k for k in encoder if k not in theirs or not torch.equal(ours[k], theirs[k].to(ours[k].dtype))]
    if changed:
        raise ValueError(f"vae {path}: its encoder differs from the pipeline's ({len(changed)} tensors, e.g. "
                         f"{changed[0]}), so the model's latents would not match")
    return vae
