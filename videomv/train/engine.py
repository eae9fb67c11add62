"""Generic training loop: accelerate (DDP, mixed precision, accumulation), AdamW + LR schedule,
clipping, EMA, checkpoints, resume, NaN guard, logging, progress bar.

A *task* supplies what is specific to a model (see :class:`Task`); :func:`train` runs it with a
:class:`Trainer`, whose methods follow a run from top to bottom: open the output folder, build,
restore or seed, then one :meth:`Trainer.step` per optimizer step, then finish.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import re
import shutil
import time
import warnings
from datetime import timedelta
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from diffusers.optimization import get_scheduler
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..io import atomic_write_text
from .checkpoint import CheckpointError, CheckpointManager, save_tensors
from .config import flatten, resolve_path, save_config
from .ema import EMA


class NonFiniteLossError(RuntimeError):
    """Raised when the loss is NaN/inf more often than ``skip_nonfinite_loss`` allows."""


class OutputDirInUseError(FileExistsError):
    """A fresh run was pointed at a folder that holds another run's checkpoints or metrics."""


class ProcessTimeoutError(RuntimeError):
    """Another process of a multi-process run stopped answering within ``distributed.timeout_s``."""


class Task:
    """What :func:`train` needs from a model-specific trainer.

    ``__init__(cfg, accelerator)`` builds models and data (the global seed is already set, equal on
    every process, so initial weights agree). Subclasses override the methods below.
    """

    schema = None  # the task's config dataclass (videomv.train.schema)

    def trainable_models(self) -> dict[str, torch.nn.Module]:
        raise NotImplementedError

    def make_batches(self, rank: int, world_size: int):
        """An endless iterator with ``state_dict()``/``load_state_dict()`` (e.g. ``BatchStream``)."""
        raise NotImplementedError

    def loss(self, batch, models: dict[str, torch.nn.Module], step: int) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def enable_gradient_checkpointing(self) -> None:
        for model in self.trainable_models().values():
            if hasattr(model, "enable_gradient_checkpointing"):
                model.enable_gradient_checkpointing()
            elif hasattr(model, "gradient_checkpointing_enable"):
                model.gradient_checkpointing_enable()

    def rng_state(self) -> dict[str, torch.Tensor]:
        """This process's task-owned random state (e.g. a ``torch.Generator``'s ``get_state()``),
        saved with every checkpoint. The global generators are saved by the engine."""
        return {}

    def load_rng_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`rng_state` returned."""

    def skipped_items(self) -> list[dict]:
        """Data items left out because they could not be read: ``[{"source", "id", "reason"}]``.
        By default collected from every attribute with a ``skipped`` list (the datasets)."""
        out = []
        for name, value in vars(self).items():
            for entry in getattr(value, "skipped", None) or []:
                out.append({"source": name, **_skipped_entry(entry)})
        return out

    def validate(self, step: int, out_dir: Path, models: dict[str, torch.nn.Module]) -> dict:
        """Main process only, weights already EMA-swapped when EMA is on. Returns scalars to log."""
        return {}

    def finish(self, out_dir: Path, models: dict[str, torch.nn.Module]) -> None:
        """Main process only: export final weights (e.g. ``save_pretrained``)."""


def _skipped_entry(entry) -> dict:
    if isinstance(entry, dict):
        return {"id": str(entry.get("id", entry.get("item", "?"))), "reason": str(entry.get("reason", ""))}
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return {"id": str(entry[0]), "reason": str(entry[1])}
    return {"id": str(entry), "reason": ""}


def _holds(key: str, name: str) -> bool:
    """Whether `lr_scale` key `key` (a module path or a shell pattern) holds parameter `name`."""
    if any(c in key for c in "*?["):
        return fnmatch.fnmatchcase(name, key) or fnmatch.fnmatchcase(name, key + ".*")
    return name == key or name.startswith(key + ".")


def param_groups(models: dict[str, torch.nn.Module], lr: float, lr_scale) -> list[dict]:
    """The trainable parameters of `models` as AdamW parameter groups: one group at `lr` without
    `lr_scale` (what runs and their checkpoints always had), else one group per key of `lr_scale`
    and one per model for the rest. A key names a model ("text_encoder") or a part of one
    ("unet.ray_map_in": the parameters under that module), or is a shell pattern over those names
    ("unet.*.attentions.*.attn2.to_q": every cross-attention's query projection); a parameter
    takes the factor of the longest key that holds it, and 1 where none does."""
    lr_scale = {str(k): float(v) for k, v in dict(lr_scale).items()}
    if not lr_scale:
        params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}] if params else []
    groups: dict[str, list] = {}
    for name, model in models.items():
        for pname, p in model.named_parameters():
            if not p.requires_grad:
                continue
            full = f"{name}.{pname}"
            keys = [k for k in lr_scale if _holds(k, full)]
            groups.setdefault(max(keys, key=len) if keys else name, []).append(p)
    unknown = sorted(set(lr_scale) - set(groups))
    if unknown:
        raise ValueError(f"optimizer.lr_scale: no trainable parameters under {', '.join(map(repr, unknown))}; "
                         f"this run trains {', '.join(models)}")
    return [{"params": params, "lr": lr * lr_scale.get(key, 1.0)} for key, params in groups.items()]


def parameter_checksum(models: dict[str, torch.nn.Module]) -> str:
    """sha256 over all parameters (name order, float32 bytes): equal iff the weights are equal."""
    h = hashlib.sha256()
    for name in sorted(models):
        for pname, p in sorted(models[name].state_dict().items()):
            h.update(f"{name}.{pname}".encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_records_in(out_dir: Path) -> list[str]:
    """What marks ``out_dir`` as holding a run: checkpoints and logged steps."""
    found = []
    ckpt = out_dir / "checkpoints"
    if ckpt.is_dir() and any(p.name.startswith("step_") for p in ckpt.iterdir()):
        found.append("checkpoints/")
    for name in ("metrics.jsonl", "validation.jsonl"):
        f = out_dir / name
        if f.is_file() and f.stat().st_size > 0:
            found.append(name)
    return found


# What a run writes into its output_dir besides config.yaml (rewritten) and the latent cache (keyed
# by VAE and data, so it stays valid); the tracker folder is added by name.
RUN_OUTPUTS = ("checkpoints", "metrics.jsonl", "validation.jsonl", "skipped.json", "final", "samples",
               "reconstructor", "vae", "wandb", "ema_*.safetensors", "debug_rank*.json")


def remove_run_outputs(out_dir: Path, tracker_project: str | None = None) -> list[str]:
    """Delete an earlier run's outputs from ``out_dir`` (``overwrite=true``); returns their names."""
    removed = []
    for pattern in RUN_OUTPUTS + ((tracker_project,) if tracker_project else ()):
        for target in sorted(out_dir.glob(pattern)):
            removed.append(target.name + ("/" if target.is_dir() else ""))
            shutil.rmtree(target) if target.is_dir() else target.unlink()
    return removed


def drop_records_after(metrics_file: Path, step: int) -> None:
    """Keep the JSON-lines records of steps up to ``step``: an interrupted run logged later ones, and
    the resumed run logs them again. A line cut off by a kill is dropped with a warning."""
    if not metrics_file.is_file():
        return
    lines = metrics_file.read_text().splitlines()
    kept, broken = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            record_step = int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError, TypeError):
            broken += 1
            continue
        if record_step <= step:
            kept.append(line)
    if broken:
        warnings.warn(f"{metrics_file}: dropped {broken} unreadable line(s) (cut off by an interrupted run)")
    if len(kept) != len(lines) or (lines and not metrics_file.read_text().endswith("\n")):
        atomic_write_text(metrics_file, "".join(line + "\n" for line in kept))


def _with_ema(ema: dict, models: dict, fn):
    """Run ``fn`` with EMA weights swapped into ``models`` (restored afterwards)."""
    if not ema:
        return fn()
    backup = {n: {k: v.detach().clone() for k, v in models[n].state_dict().items()} for n in ema}
    for n, e in ema.items():
        e.copy_to(models[n])
    try:
        return fn()
    finally:
        for n, sd in backup.items():
            models[n].load_state_dict(sd)


class TimeoutCheck:
    """Names the process that stopped answering when a collective operation times out.

    A collective that waits on a stopped process gives up after the process-group timeout with a
    message that does not say which process stopped; a ``monitored_barrier`` on a gloo group of
    its own then finds out."""

    def __init__(self, accelerator: Accelerator, timeout_s: float):
        import torch.distributed as dist

        self.dist, self.rank, self.world = dist, accelerator.process_index, accelerator.num_processes
        self.timeout = timedelta(seconds=float(timeout_s))
        self.group = dist.new_group(backend="gloo", timeout=self.timeout)

    @staticmethod
    def is_timeout(err: BaseException) -> bool:
        text = str(err).lower()
        return "timed out" in text or "timeout" in text or "connection closed by peer" in text

    def diagnose(self, step: int, cause: BaseException) -> None:
        """After ``cause`` (a timed-out collective): raise :class:`ProcessTimeoutError` naming the
        processes that miss the barrier; return when every process answers."""
        try:
            self.dist.monitored_barrier(group=self.group, timeout=self.timeout, wait_all_ranks=True)
        except RuntimeError as err:
            found = re.search(r"[Rr]anks? ([\d, ]+) failed to pass", str(err))
            if found:
                who = f"process(es) {found.group(1).strip()} stopped answering"
            else:
                who = "process 0 stopped answering" if self.rank != 0 else "a process stopped answering"
            raise ProcessTimeoutError(
                f"process {self.rank} of {self.world}, at step {step + 1}: {who} within "
                f"distributed.timeout_s={self.timeout.total_seconds():g} s "
                f"({str(cause).splitlines()[-1].strip()})") from None


class Trainer:
    """One training run of ``task_factory`` with ``cfg`` (see :func:`train`)."""

    def __init__(self, cfg: DictConfig, task_factory, prepare=None):
        self.cfg, self.task_factory, self.prepare = cfg, task_factory, prepare
        self.out_dir = resolve_path(cfg.output_dir)
        self.trackers = [w for w in (cfg.logging.get("trackers") or []) if w]
        self.step, self.skipped_steps = 0, 0
        stop_at = cfg.get("stop_at")
        self.last_step = min(int(cfg.max_steps), int(stop_at)) if stop_at else int(cfg.max_steps)
        self.history: list[dict] = []
        self.local_losses: list[float] = []  # this process's losses (history holds the mean over processes)

    # -- run
    def run(self) -> dict:
        self.open_accelerator()
        self.open_output_dir()
        self.build()
        self.restore_or_seed()
        self.start_logging()
        self.started = time.monotonic()
        try:
            while self.step < self.last_step:
                try:
                    self.train_step()
                except RuntimeError as err:
                    if self.timeout_check is not None and TimeoutCheck.is_timeout(err):
                        self.timeout_check.diagnose(self.step, err)
                    raise
                if self.out_of_time():
                    self.accelerator.print(f"time_limit_s={self.cfg.time_limit_s:g} reached at step {self.step}")
                    self.last_step = self.step
                self.after_step()
        finally:
            self.progress.close()
        return self.finish()

    def out_of_time(self) -> bool:
        """Whether ``time_limit_s`` has passed since this run's first step; process 0's clock
        decides for all, so every process stops after the same step."""
        limit = self.cfg.get("time_limit_s")
        if not limit:
            return False
        over = torch.tensor(float(time.monotonic() - self.started >= float(limit)), device=self.accelerator.device)
        if self.world > 1:
            over = self.accelerator.gather(over[None])[0]
        return bool(over.item())

    def open_accelerator(self) -> None:
        cfg = self.cfg
        timeout = timedelta(seconds=float(cfg.distributed.timeout_s))
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            gradient_accumulation_steps=int(cfg.gradient_accumulation_steps),
            log_with=self.trackers or None,
            project_dir=str(self.out_dir),
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timeout)],
        )
        acc = self.accelerator
        self.rank, self.world = acc.process_index, acc.num_processes
        self.timeout_check = TimeoutCheck(acc, cfg.distributed.timeout_s) \
            if self.world > 1 and cfg.distributed.name_stopped_process else None

    def open_output_dir(self) -> None:
        """Decide fresh start or resume, refuse to mix a fresh run into another run's folder,
        clean what a kill left behind, save the resolved config."""
        acc, cfg = self.accelerator, self.cfg
        self.ckpt = CheckpointManager(self.out_dir, int(cfg.checkpoint.keep_last), is_main=acc.is_main_process,
                                      rank=self.rank, barrier=acc.wait_for_everyone)
        self.candidates = self.ckpt.candidates(cfg.resume)
        fresh_by_choice = cfg.resume in (None, "", "none", "None")
        used = run_records_in(self.out_dir)  # every process checks, so every process stops
        if fresh_by_choice and used and not cfg.overwrite:
            raise OutputDirInUseError(
                f"output_dir {str(self.out_dir)!r} holds another run ({', '.join(used)}): resume it with "
                "resume=latest, choose another output_dir, or replace it with overwrite=true")
        acc.wait_for_everyone()
        if acc.is_main_process:
            if fresh_by_choice and used:
                removed = remove_run_outputs(self.out_dir, cfg.logging.project)
                acc.print(f"overwrite=true: removed the earlier run's {', '.join(removed)} in {self.out_dir}")
            for name in self.ckpt.clean():
                acc.print(f"removed {name} left in {self.ckpt.root} by an interrupted run")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out_dir / "config.yaml")
        acc.wait_for_everyone()
        self.candidates = self.ckpt.candidates(cfg.resume)  # again: cleaning may have removed some

    def build(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        if self.prepare is not None:
            with acc.main_process_first():  # e.g. the main process builds a missing toy world
                self.prepare(cfg)
        set_seed(int(cfg.seed))  # same on all ranks: identical initial weights
        self.task = self.task_factory(cfg, acc)
        models = self.task.trainable_models()
        if cfg.gradient_checkpointing:
            self.task.enable_gradient_checkpointing()
        oc = cfg.optimizer
        groups = param_groups(models, float(oc.lr), oc.get("lr_scale") or {})
        self.params = [p for g in groups for p in g["params"]]
        if not self.params:
            raise ValueError("the task exposes no trainable parameters")
        optimizer = torch.optim.AdamW(groups, lr=float(oc.lr), betas=tuple(oc.betas),
                                      weight_decay=float(oc.weight_decay), eps=float(oc.eps))
        sc = cfg.lr_scheduler
        self.lr_scheduler = get_scheduler(sc.name, optimizer, num_warmup_steps=int(sc.warmup_steps),
                                          num_training_steps=int(cfg.max_steps))
        names = list(models)
        prepared = acc.prepare(*models.values(), optimizer)
        self.wrapped = dict(zip(names, prepared[:-1]))
        self.optimizer = prepared[-1]
        self.unwrapped = {n: acc.unwrap_model(m) for n, m in self.wrapped.items()}
        self.ema = {n: EMA(m, cfg.ema.decay, cfg.ema.update_after_step).to(acc.device)
                    for n, m in self.unwrapped.items()} if cfg.ema.enabled else {}
        self.batches = self.task.make_batches(self.rank, self.world)
        self.scaler = getattr(acc, "scaler", None)

    def restore_or_seed(self) -> None:
        """Resume from the newest checkpoint every process can read, or seed the per-process
        streams of a fresh run."""
        data = self.first_readable_checkpoint()
        if data is None:
            self.resumed_from = None
            set_seed(int(self.cfg.seed), device_specific=True)  # per-process offset for noise/timesteps
            return
        state = self.ckpt.apply(data, models=self.unwrapped, optimizer=self.optimizer,
                                lr_scheduler=self.lr_scheduler, ema=self.ema, scaler=self.scaler)
        saved_world = int(state.get("num_processes", self.world))
        if saved_world != self.world:
            raise ValueError(f"resume={data['path']}: checkpoint written by {saved_world} processes, resuming with "
                             f"{self.world} would change the data order and per-process RNG streams; launch "
                             "with the same count")
        self.step, self.skipped_steps = int(state["step"]), int(state.get("skipped_nonfinite", 0))
        self.batches.load_state_dict(state["data"])
        self.task.load_rng_state(state.get("rank_tensors", {}))
        self.resumed_from = data["path"]
        self.accelerator.print(f"resumed from {data['path']} at step {self.step}")

    def first_readable_checkpoint(self) -> dict | None:
        """The newest candidate every process reads completely; a damaged newer one is set aside
        (``damaged-step_*``) with a warning. An explicitly named checkpoint must be readable."""
        acc, explicit = self.accelerator, str(self.cfg.resume) not in ("latest", "auto")
        for path in self.candidates:
            try:
                data, problem = self.ckpt.read(path, list(self.unwrapped), list(self.ema)), None
            except CheckpointError as err:
                data, problem = None, str(err)
            if self._all_processes_agree(problem is None):
                return data
            problem = problem or f"checkpoint {str(path)!r} is damaged on another process"
            if explicit:
                raise CheckpointError(problem)
            warnings.warn(f"{problem}; trying the previous checkpoint")
            if acc.is_main_process:
                acc.print(f"set aside as {self.ckpt.set_aside(path).name}")
            acc.wait_for_everyone()
        if self.candidates:
            raise CheckpointError(f"resume={self.cfg.resume}: no checkpoint in {self.ckpt.root} can be read")
        return None

    def _all_processes_agree(self, ok: bool) -> bool:
        if self.world == 1:
            return ok
        flag = torch.tensor(0.0 if ok else 1.0, device=self.accelerator.device)
        return self.accelerator.reduce(flag, reduction="sum").item() == 0

    def start_logging(self) -> None:
        acc, cfg = self.accelerator, self.cfg
        if acc.is_main_process and self.trackers:
            run_name = cfg.logging.get("run_name") or self.out_dir.name
            acc.init_trackers(cfg.logging.project, config=flatten(cfg),
                              init_kwargs={"wandb": {"name": run_name, "dir": str(self.out_dir)}})
        self.metrics_file = self.out_dir / "metrics.jsonl"
        if acc.is_main_process:  # a resumed run (or a fresh one after a kill) logs these steps again
            for name in ("metrics.jsonl", "validation.jsonl"):
                drop_records_after(self.out_dir / name, self.step)
        self.progress = tqdm(total=self.last_step, initial=self.step, disable=not acc.is_local_main_process,
                             desc="train", dynamic_ncols=True)
        for model in self.wrapped.values():
            model.train()

    # -- one optimizer step
    def train_step(self) -> None:
        losses, logs, finite = self.forward_backward()
        if finite:
            self.optimizer_step(logs)
        else:
            self.skip_step(losses)
        self.step += 1
        self.log_step(losses, logs)

    def forward_backward(self) -> tuple[list[float], dict, bool]:
        """``gradient_accumulation_steps`` micro-batches; returns their losses, the last logs and
        whether every loss on every process was finite."""
        acc, losses, logs, finite = self.accelerator, [], {}, True
        for _ in range(int(self.cfg.gradient_accumulation_steps)):
            batch = next(self.batches)
            with acc.accumulate(*self.wrapped.values()):
                with acc.autocast():
                    loss, logs = self.task.loss(batch, self.wrapped, self.step)
                losses.append(float(loss.detach().float().item()))
                if not self._finite_everywhere(loss):
                    finite = False
                    continue
                acc.backward(loss)
        return losses, logs, finite

    def _finite_everywhere(self, loss: torch.Tensor) -> bool:
        return self._all_processes_agree(bool(torch.isfinite(loss.detach()).all()))

    def optimizer_step(self, logs: dict) -> None:
        max_norm = float(self.cfg.max_grad_norm)
        if self.accelerator.sync_gradients and max_norm > 0:
            logs["grad_norm"] = float(self.accelerator.clip_grad_norm_(self.params, max_norm))
        self.optimizer.step()
        if not getattr(self.optimizer, "step_was_skipped", False):
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        for n, e in self.ema.items():
            e.update(self.unwrapped[n], self.step)

    def skip_step(self, losses: list[float]) -> None:
        self.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        bad = [v for v in losses if not math.isfinite(v)]
        allowed = int(self.cfg.skip_nonfinite_loss)
        message = (f"non-finite loss ({bad[0] if bad else 'on another process'}) at step {self.step + 1} "
                   f"(skipped {self.skipped_steps} of at most skip_nonfinite_loss={allowed})")
        if self.skipped_steps > allowed:
            self.progress.close()
            self.accelerator.end_training()
            raise NonFiniteLossError(message + ": stopping. Lower the learning rate, check the data, or use bf16.")
        self.accelerator.print("warning: " + message + "; optimizer step skipped")

    def log_step(self, losses: list[float], logs: dict) -> None:
        acc, step = self.accelerator, self.step
        loss_value = sum(losses) / len(losses)
        self.local_losses.append(loss_value)
        if self.world > 1:
            loss_value = float(acc.reduce(torch.tensor(loss_value, device=acc.device), "mean"))
        record = {"step": step, "loss": loss_value, "lr": self.lr_scheduler.get_last_lr()[0],
                  **{k: float(v) for k, v in logs.items()}}
        self.history.append(record)
        self.progress.update(1)
        self.progress.set_postfix(loss=f"{loss_value:.4f}")
        if acc.is_main_process:
            with open(self.metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.trackers and (step % int(self.cfg.logging.every) == 0 or step == 1):
                acc.log(record, step=step)

    def after_step(self) -> None:
        cfg, step, last = self.cfg, self.step, self.last_step
        val_every = int(cfg.validation.every)
        if val_every > 0 and (step % val_every == 0 or step == last):
            self.validate()
        if step % int(cfg.checkpoint.every) == 0 or step == last:
            self.ckpt.save(step, models=self.unwrapped, optimizer=self.optimizer, lr_scheduler=self.lr_scheduler,
                           ema=self.ema, scaler=self.scaler, rank_tensors=self.task.rng_state(),
                           trainer_state={"data": self.batches.state_dict(), "skipped_nonfinite": self.skipped_steps,
                                          "num_processes": self.world})

    def validate(self) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            # fork_rng: validation sampling must not shift the training RNG stream (resume equality).
            with torch.random.fork_rng(devices=[acc.device] if acc.device.type == "cuda" else []):
                for m in self.unwrapped.values():
                    m.eval()
                with torch.no_grad():
                    scalars = _with_ema(self.ema, self.unwrapped,
                                        lambda: self.task.validate(self.step, self.out_dir, self.unwrapped)) or {}
                for m in self.unwrapped.values():
                    m.train()
            if scalars:
                acc.print(f"validation @ {self.step}: " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
                with open(self.out_dir / "validation.jsonl", "a") as f:
                    f.write(json.dumps({"step": self.step, **scalars}) + "\n")
                if self.trackers:
                    acc.log({f"val/{k}": v for k, v in scalars.items()}, step=self.step)
        acc.wait_for_everyone()

    # -- end of run
    def finish(self) -> dict:
        acc, out_dir = self.accelerator, self.out_dir
        checksum = parameter_checksum(self.unwrapped)
        acc.print(f"parameter checksum (rank {self.rank}): {checksum}")
        if self.cfg.debug.dump_param_checksum:
            # Per-process record: equal checksums with different local losses show DDP kept ranks in sync.
            (out_dir / f"debug_rank{self.rank}.json").write_text(
                json.dumps({"checksum": checksum, "local_losses": self.local_losses}))
        skipped = self.report_skipped()
        acc.wait_for_everyone()
        if acc.is_main_process:
            with torch.random.fork_rng():
                final = dict(self.unwrapped)
                _with_ema(self.ema, final, lambda: self.task.finish(out_dir, final))
            for n, e in self.ema.items():
                save_tensors(e.state_dict(), out_dir / f"ema_{n}.safetensors")
        acc.wait_for_everyone()
        acc.end_training()
        return {"step": self.step, "history": self.history, "checksum": checksum, "output_dir": str(out_dir),
                "skipped_items": skipped}

    def report_skipped(self) -> list[dict]:
        """Print and write ``skipped.json``: every data item some process left out, with the reason."""
        from accelerate.utils import gather_object

        mine = [{**e, "process": self.rank} for e in self.task.skipped_items()]
        everyone = gather_object(mine) if self.world > 1 else mine
        unique = list({(e["source"], e["id"]): e for e in everyone}.values())
        if self.accelerator.is_main_process:
            atomic_write_text(self.out_dir / "skipped.json", json.dumps(unique, indent=1))
            if unique:
                lines = [f"  {e['source']}: {e['id']}: {e['reason'] or 'unreadable'}" for e in unique[:20]]
                more = f"\n  ... and {len(unique) - 20} more (see skipped.json)" if len(unique) > 20 else ""
                self.accelerator.print(f"skipped {len(unique)} data item(s) that could not be read:\n"
                                       + "\n".join(lines) + more)
            else:
                self.accelerator.print("skipped data items: none")
        return unique


def train(cfg: DictConfig, task_factory, prepare=None) -> dict:
    """Run ``task_factory(cfg, accelerator)`` to ``cfg.max_steps``; returns a small summary.

    ``prepare(cfg)``, when given, runs before the task is built, on the main process first (e.g.
    to build a dataset the others then read)."""
    return Trainer(cfg, task_factory, prepare).run()
