"""Checks of what a user hands the command lines (model folder, output folder, device, step
count), made before any weights load so that bad input costs a second, not a run. Heavy modules are
imported inside the checks that need them."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


class InputError(ValueError):
    """Bad input found before any work: reported in one line, exit code 2."""


def check_model_folder(model: Path, want_task: str) -> dict:
    """The model folder's settings (videomv.json), read without loading any weights."""
    if not model.is_dir():
        raise InputError(f"--model: {model} is not a folder")
    try:
        settings = json.loads((model / "videomv.json").read_text())
        task, resolution = settings["task"], int(settings["resolution"])
    except FileNotFoundError:
        raise InputError(f"--model: {model} is not a VideoMV model folder (videomv.json is missing)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"--model: {model}/videomv.json is not readable VideoMV settings ({err})") from None
    if task != want_task:
        given = "--prompt" if task == "text" else "--image"
        raise InputError(f"--model: {model} is {'an' if task == 'image' else 'a'} {task} model; expected a {want_task} "
                         f"model (a {task} model takes {given})")
    if resolution < 1:
        raise InputError(f"--model: {model}/videomv.json has resolution {resolution}; expected a positive size")
    return settings


def check_out(out: Path) -> None:
    """The output folder can be created (or is an empty folder) and its parent is writable."""
    if out.is_symlink() and not out.exists():
        raise InputError(f"--out: {out} is a symbolic link to {os.readlink(out)!r}, which does not exist")
    if out.exists():
        try:
            if not out.is_dir() or any(out.iterdir()):
                raise InputError(f"--out: {out} exists and is not an empty folder")
        except PermissionError:
            raise InputError(f"--out: {out} cannot be read") from None
    target = out.resolve()
    parent = target.parent
    while not parent.exists():  # the folders save_generation would create
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out: {parent} is not a folder")
    try:  # the real test of writability (permissions, read-only mounts, /proc): make and remove a folder
        os.rmdir(tempfile.mkdtemp(prefix=f".{target.name}.check.", dir=parent))
    except OSError as err:
        raise InputError(f"--out: cannot write in {parent} ({err.strerror or err})") from None


def check_steps(model: Path, steps: int, sampler: str = "ddim") -> None:
    """`sampler` on the model's scheduler gives `steps` timesteps inside its training range for this
    count (`videomv.sampling.ddim.set_step_count`), read from the folder without loading weights."""
    import diffusers

    try:
        config = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
        cls = getattr(diffusers, str(config["_class_name"]))
        if not config["_class_name"].endswith("Scheduler"):
            raise TypeError(f"{config['_class_name']} is not a scheduler")
        scheduler = cls.from_config(config)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(f"--model: {model}/scheduler has no readable diffusers scheduler config ({err})") from None

    from videomv.sampling.ddim import scheduler_for, set_step_count

    try:
        set_step_count(scheduler_for(sampler, scheduler), steps)
    except TypeError as err:
        raise InputError(f"--sampler {sampler}: {err}") from None
    except ValueError as err:
        raise InputError(f"--steps {steps}: {err}") from None


def check_device(name: str | None) -> str:
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device: unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"--device {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise InputError(f"--device: {name!r} is not supported; expected cpu, cuda, cuda:N or mps")
    return name
