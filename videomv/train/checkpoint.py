"""Training checkpoints without pickle, written atomically.

Layout of ``<output_dir>/checkpoints/step_000100/``::

    model_<name>.safetensors     trainable model weights (unwrapped state_dict)
    ema_<name>.safetensors       EMA weights, when EMA is on
    optimizer.safetensors        optimizer tensors (exp_avg, exp_avg_sq, step, ...)
    optimizer.json               optimizer param_groups + non-tensor per-parameter state
    rng_rank<r>.safetensors      torch CPU (+ CUDA) generator states of process r
    rng_rank<r>.json             python ``random`` and numpy generator states of process r
    trainer_state.json           step, data position, LR-scheduler and grad-scaler state

Why not ``accelerator.save_state``: it pickles optimizer, scheduler and RNG state, and loading
pickles runs arbitrary code. Everything here is safetensors or JSON, so a checkpoint can be
loaded from an untrusted source. A checkpoint is first written to ``.tmp-step_XXXXXX`` next to
its final place and then renamed with ``os.replace``: a crash never leaves a half-written
``step_*`` folder that ``resume=latest`` could pick up.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from videomv.io import atomic_write, atomic_write_text

STEP_DIR = re.compile(r"^step_(\d+)$")


# ----------------------------------------------------------------------------- small helpers
def _write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=1))


def save_tensors(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """safetensors file written atomically (tensors copied to contiguous CPU memory)."""
    data = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=metadata))


def optimizer_to_safe(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer ``state_dict`` into tensors (for safetensors) and a JSON-able rest."""
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_safe(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": meta["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """Every global generator this process uses: torch CPU/CUDA, numpy, python ``random``."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "numpy": [kind, int(pos), int(has_gauss), float(cached)],
        "python": [py_version, list(py_state), py_gauss],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, tensors["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, state, gauss = meta["python"]
    random.setstate((version, tuple(state), gauss))


# ----------------------------------------------------------------------------- manager
class CheckpointError(RuntimeError):
    """A checkpoint folder that cannot be read completely (missing, truncated or corrupt files)."""


REQUIRED_FILES = ("trainer_state.json", "optimizer.json", "optimizer.safetensors")


class CheckpointManager:
    """Saves, lists, prunes and loads ``step_*`` checkpoints under ``<output_dir>/checkpoints``.

    Multi-process use: every rank calls :meth:`save` (each writes its own RNG state); the main
    process writes the shared parts and renames. ``barrier`` synchronises the ranks.
    Pruned folders are first renamed to ``.old-step_*`` and then deleted, so a kill during pruning
    never leaves a half-deleted ``step_*`` folder; :meth:`clean` removes such leftovers.
    """

    def __init__(self, output_dir: str | os.PathLike, keep_last: int = 3, *, is_main: bool = True,
                 rank: int = 0, barrier=lambda: None):
        if keep_last < 1:
            raise ValueError(f"checkpoint.keep_last must be >= 1, got {keep_last}")
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last
        self.is_main, self.rank, self.barrier = is_main, rank, barrier

    # -- listing
    def list(self) -> list[Path]:
        """Finished checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if p.is_dir() and (m := STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        found = self.list()
        return found[-1] if found else None

    def candidates(self, resume) -> list[Path]:
        """Checkpoints to try, newest first: ``[]`` for a fresh start (``resume`` unset, or ``auto``
        without checkpoints), every checkpoint for ``latest``/``auto``, else the one folder given."""
        if resume in (None, "", "none", "None", False):
            return []
        if str(resume) in ("latest", "auto"):
            found = self.list()[::-1]
            if not found and str(resume) == "latest":
                raise FileNotFoundError(
                    f"resume=latest: no checkpoint to resume in {str(self.root)!r}; start a fresh run without "
                    "resume, or use resume=auto to resume when there is a checkpoint and start fresh otherwise")
            return found
        path = Path(str(resume))
        if not (path / "trainer_state.json").is_file():
            raise FileNotFoundError(f"resume={resume!r}: not a checkpoint folder (no trainer_state.json)")
        return [path]

    def resolve(self, resume) -> Path | None:
        """The newest candidate of :meth:`candidates` (``None``: fresh start)."""
        found = self.candidates(resume)
        return found[0] if found else None

    def clean(self) -> list[str]:
        """Main process: remove what a kill can leave behind (``.tmp-step_*`` from a save,
        ``.old-step_*`` from pruning, ``step_*`` folders missing their trainer state). Returns the names."""
        removed = []
        if not (self.is_main and self.root.is_dir()):
            return removed
        for p in sorted(self.root.iterdir()):
            leftover = p.name.startswith((".tmp-step_", ".old-step_"))
            incomplete = STEP_DIR.match(p.name) and p.is_dir() and not (p / "trainer_state.json").is_file()
            if p.is_dir() and (leftover or incomplete):
                shutil.rmtree(p)
                removed.append(p.name)
        return removed

    def set_aside(self, path: Path) -> Path:
        """Rename a damaged checkpoint to ``damaged-step_*`` (kept for inspection, never resumed)."""
        target = path.with_name(f"damaged-{path.name}")
        if target.exists():
            shutil.rmtree(target)
        os.replace(path, target)
        return target

    # -- saving
    def save(self, step: int, *, models: dict[str, torch.nn.Module], optimizer, lr_scheduler,
             ema: dict | None = None, trainer_state: dict | None = None, scaler=None,
             rank_tensors: dict[str, torch.Tensor] | None = None) -> Path:
        """``rank_tensors``: extra per-process state (e.g. a task's own generators), stored with the
        process's RNG state and returned by :meth:`load` as ``state["rank_tensors"]``."""
        final = self.root / f"step_{step:06d}"
        tmp = self.root / f".tmp-step_{step:06d}"
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self.barrier()
        tensors, meta = rng_state()
        tensors.update({f"task.{k}": v for k, v in (rank_tensors or {}).items()})
        save_tensors(tensors, tmp / f"rng_rank{self.rank}.safetensors")
        _write_json(tmp / f"rng_rank{self.rank}.json", meta)
        if self.is_main:
            for name, model in models.items():
                save_tensors(model.state_dict(), tmp / f"model_{name}.safetensors")
            for name, shadow in (ema or {}).items():
                save_tensors(shadow.state_dict(), tmp / f"ema_{name}.safetensors")
            opt_tensors, opt_meta = optimizer_to_safe(optimizer.state_dict())
            save_tensors(opt_tensors, tmp / "optimizer.safetensors")
            _write_json(tmp / "optimizer.json", opt_meta)
            state = {"step": step, **(trainer_state or {})}
            state["lr_scheduler"] = _jsonable(lr_scheduler.state_dict())
            state["grad_scaler"] = scaler.state_dict() if scaler is not None else None
            _write_json(tmp / "trainer_state.json", state)
        self.barrier()
        if self.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for old in self.list()[: -self.keep_last]:
                doomed = old.with_name(f".old-{old.name}")
                os.replace(old, doomed)  # atomic: resume never sees a half-deleted step_* folder
                shutil.rmtree(doomed)
        self.barrier()
        return final

    # -- loading
    @staticmethod
    def load_models(path: str | os.PathLike, models: dict[str, torch.nn.Module], prefix: str = "model") -> None:
        path = Path(path)
        for name, model in models.items():
            file = path / f"{prefix}_{name}.safetensors"
            if not file.is_file():
                raise FileNotFoundError(f"checkpoint {str(path)!r} has no {file.name}")
            model.load_state_dict(load_file(str(file)))

    def read(self, path: str | os.PathLike, model_names, ema_names=()) -> dict:
        """Read every file this process needs from a checkpoint into memory, without touching any
        model: a damaged checkpoint raises :class:`CheckpointError` before anything is changed."""
        path = Path(path)
        out = {"path": path, "models": {}, "ema": {}}
        try:
            for name in model_names:
                out["models"][name] = load_file(str(path / f"model_{name}.safetensors"))
            for name in ema_names:
                file = path / f"ema_{name}.safetensors"
                out["ema"][name] = load_file(str(file)) if file.is_file() else None
            out["optimizer"] = optimizer_from_safe(load_file(str(path / "optimizer.safetensors")),
                                                   json.loads((path / "optimizer.json").read_text()))
            out["state"] = json.loads((path / "trainer_state.json").read_text())
            rng_file = path / f"rng_rank{self.rank}.safetensors"
            if not rng_file.is_file():
                raise FileNotFoundError(f"no RNG state for process {self.rank} (was it saved with fewer processes?)")
            out["rng"] = load_file(str(rng_file))
            out["rng_meta"] = json.loads((path / f"rng_rank{self.rank}.json").read_text())
        except Exception as err:  # safetensors, json and OS errors of every kind: the folder is damaged
            raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {type(err).__name__}: {err}") from err
        return out

    def apply(self, data: dict, *, models, optimizer, lr_scheduler, ema: dict | None = None, scaler=None) -> dict:
        """Restore what :meth:`read` returned; returns the trainer state (``step`` etc.).

        EMA turned on for a run whose checkpoint has none starts its average from the checkpoint's
        weights (with a warning)."""
        path = data["path"]
        for name, model in models.items():
            model.load_state_dict(data["models"][name])
        for name, shadow in (ema or {}).items():
            saved = data["ema"].get(name)
            if saved is not None:
                shadow.load_state_dict(saved)
            else:
                warnings.warn(f"checkpoint {str(path)!r} has no ema_{name}.safetensors (EMA was off): "
                              f"the EMA of {name!r} starts from the checkpoint's weights")
                shadow.reset(models[name])
        optimizer.load_state_dict(data["optimizer"])
        state = data["state"]
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if scaler is not None and state.get("grad_scaler"):
            scaler.load_state_dict(state["grad_scaler"])
        rng = dict(data["rng"])
        state["rank_tensors"] = {k[len("task."):]: rng.pop(k) for k in list(rng) if k.startswith("task.")}
        set_rng_state(rng, data["rng_meta"])
        return state

    def load(self, path: str | os.PathLike, *, models, optimizer, lr_scheduler, ema: dict | None = None,
             scaler=None) -> dict:
        """Restore everything saved by :meth:`save`; returns the trainer state (``step`` etc.)."""
        data = self.read(path, list(models), list(ema or {}))
        return self.apply(data, models=models, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
                          scaler=scaler)


def _jsonable(obj):
    """LR-scheduler state dicts hold plain numbers plus ``None`` for lambda functions."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if torch.is_tensor(obj):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return obj
    return None
