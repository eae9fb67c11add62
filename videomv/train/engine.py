"""Generic training loop: accelerate (DDP, mixed precision, accumulation), AdamW + LR schedule,
clipping, EMA, checkpoints, resume, NaN guard, logging, progress bar.

A *task* supplies what is specific to a model (see :class:`Task`); :func:`train` runs it.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers.optimization import get_scheduler
from omegaconf import DictConfig
from tqdm.auto import tqdm

from ..io import atomic_write_text
from .checkpoint import CheckpointManager, save_tensors
from .config import flatten, resolve_path, save_config
from .ema import EMA


class NonFiniteLossError(RuntimeError):
    """Raised when the loss is NaN/inf more often than ``skip_nonfinite_loss`` allows."""


class Task:
    """What :func:`train` needs from a model-specific trainer.

    ``__init__(cfg, accelerator)`` builds models and data (the global seed is already set, equal on
    every process, so initial weights agree). Subclasses override the methods below.
    """

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

    def validate(self, step: int, out_dir: Path, models: dict[str, torch.nn.Module]) -> dict:
        """Main process only, weights already EMA-swapped when EMA is on. Returns scalars to log."""
        return {}

    def finish(self, out_dir: Path, models: dict[str, torch.nn.Module]) -> None:
        """Main process only: export final weights (e.g. ``save_pretrained``)."""


def parameter_checksum(models: dict[str, torch.nn.Module]) -> str:
    """sha256 over all parameters (name order, float32 bytes): equal iff the weights are equal."""
    h = hashlib.sha256()
    for name in sorted(models):
        for pname, p in sorted(models[name].state_dict().items()):
            h.update(f"{name}.{pname}".encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _finite_everywhere(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bad.item() == 0


def train(cfg: DictConfig, task_factory) -> dict:
    """Run ``task_factory(cfg, accelerator)`` to ``cfg.max_steps``; returns a small summary."""
    out_dir = resolve_path(cfg.output_dir)
    log_with = [w for w in (cfg.logging.get("with") or []) if w]
    accelerator = Accelerator(
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=int(cfg.gradient_accumulation_steps),
        log_with=log_with or None,
        project_dir=str(out_dir),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out_dir / "config.yaml")
    accelerator.wait_for_everyone()

    set_seed(int(cfg.seed))  # same on all ranks: identical initial weights
    task = task_factory(cfg, accelerator)
    models = task.trainable_models()
    if cfg.gradient_checkpointing:
        task.enable_gradient_checkpointing()
    params = [p for m in models.values() for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the task exposes no trainable parameters")
    oc = cfg.optimizer
    optimizer = torch.optim.AdamW(params, lr=float(oc.lr), betas=tuple(oc.betas), weight_decay=float(oc.weight_decay),
                                  eps=float(oc.eps))
    sc = cfg.lr_scheduler
    lr_scheduler = get_scheduler(sc.name, optimizer, num_warmup_steps=int(sc.get("warmup_steps", 0)),
                                 num_training_steps=int(cfg.max_steps))
    names = list(models)
    prepared = accelerator.prepare(*models.values(), optimizer)
    wrapped = dict(zip(names, prepared[:-1]))
    optimizer = prepared[-1]
    unwrapped = {n: accelerator.unwrap_model(m) for n, m in wrapped.items()}
    ema = {n: EMA(m, cfg.ema.decay, cfg.ema.update_after_step).to(accelerator.device)
           for n, m in unwrapped.items()} if cfg.ema.enabled else {}
    batches = task.make_batches(rank, world)

    ckpt = CheckpointManager(out_dir, int(cfg.checkpoint.keep_last), is_main=accelerator.is_main_process,
                             rank=rank, barrier=accelerator.wait_for_everyone)
    scaler = getattr(accelerator, "scaler", None)
    step, skipped = 0, 0
    resume_from = ckpt.resolve(cfg.resume)
    if resume_from is not None:
        state = ckpt.load(resume_from, models=unwrapped, optimizer=optimizer, lr_scheduler=lr_scheduler,
                          ema=ema, scaler=scaler)
        saved_world = int(state.get("num_processes", world))
        if saved_world != world:
            raise ValueError(f"resume={resume_from}: checkpoint written by {saved_world} processes, resuming with {world} "
                             "would change the data order and per-process RNG streams; launch with the same count")
        step, skipped = int(state["step"]), int(state.get("skipped_nonfinite", 0))
        batches.load_state_dict(state["data"])
        accelerator.print(f"resumed from {resume_from} at step {step}")
    else:
        set_seed(int(cfg.seed), device_specific=True)  # per-process offset for noise/timesteps

    if accelerator.is_main_process and log_with:
        run_name = cfg.logging.get("run_name") or out_dir.name
        accelerator.init_trackers(cfg.logging.project, config=flatten(cfg),
                                  init_kwargs={"wandb": {"name": run_name, "dir": str(out_dir)}})
    metrics_file = out_dir / "metrics.jsonl"
    if resume_from is not None and accelerator.is_main_process:
        for name in ("metrics.jsonl", "validation.jsonl"):
            drop_records_after(out_dir / name, step)
    history: list[dict] = []
    local_losses: list[float] = []  # this process's losses (history holds the mean over processes)
    accum = int(cfg.gradient_accumulation_steps)
    progress = tqdm(total=int(cfg.max_steps), initial=step, disable=not accelerator.is_local_main_process,
                    desc="train", dynamic_ncols=True)
    for model in wrapped.values():
        model.train()

    while step < int(cfg.max_steps):
        step_losses, logs, step_ok = [], {}, True
        for _ in range(accum):
            batch = next(batches)
            with accelerator.accumulate(*wrapped.values()):
                with accelerator.autocast():
                    loss, logs = task.loss(batch, wrapped, step)
                if not _finite_everywhere(accelerator, loss):
                    step_ok = False
                    step_losses.append(float(loss.detach().float().item()))
                    continue
                accelerator.backward(loss)
                step_losses.append(float(loss.detach().float().item()))
        if not step_ok:
            skipped += 1
            optimizer.zero_grad(set_to_none=True)
            bad = [v for v in step_losses if not math.isfinite(v)]
            message = (f"non-finite loss ({bad[0] if bad else 'on another process'}) at step {step + 1} "
                       f"(skipped {skipped} of at most skip_nonfinite_loss={cfg.skip_nonfinite_loss})")
            if skipped > int(cfg.skip_nonfinite_loss):
                progress.close()
                accelerator.end_training()
                raise NonFiniteLossError(message + ": stopping. Lower the learning rate, check the data, or use bf16.")
            accelerator.print("warning: " + message + "; optimizer step skipped")
        else:
            if accelerator.sync_gradients and float(cfg.max_grad_norm) > 0:
                logs["grad_norm"] = float(accelerator.clip_grad_norm_(params, float(cfg.max_grad_norm)))
            optimizer.step()
            if not getattr(optimizer, "step_was_skipped", False):
                lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            for n, e in ema.items():
                e.update(unwrapped[n], step)
        step += 1

        loss_value = sum(step_losses) / len(step_losses)
        local_losses.append(loss_value)
        if world > 1:
            loss_value = float(accelerator.reduce(torch.tensor(loss_value, device=accelerator.device), "mean"))
        record = {"step": step, "loss": loss_value, "lr": lr_scheduler.get_last_lr()[0],
                  **{k: float(v) for k, v in logs.items()}}
        history.append(record)
        progress.update(1)
        progress.set_postfix(loss=f"{loss_value:.4f}")
        if accelerator.is_main_process:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(record) + "\n")
            if log_with and (step % int(cfg.logging.every) == 0 or step == 1):
                accelerator.log(record, step=step)

        val_every = int(cfg.validation.get("every", 0))
        if val_every > 0 and (step % val_every == 0 or step == int(cfg.max_steps)):
            _validate(task, step, out_dir, unwrapped, ema, accelerator, log_with)
        if step % int(cfg.checkpoint.every) == 0 or step == int(cfg.max_steps):
            ckpt.save(step, models=unwrapped, optimizer=optimizer, lr_scheduler=lr_scheduler, ema=ema,
                      scaler=scaler, trainer_state={"data": batches.state_dict(), "skipped_nonfinite": skipped,
                                                    "num_processes": world})
    progress.close()

    checksum = parameter_checksum(unwrapped)
    accelerator.print(f"parameter checksum (rank {rank}): {checksum}")
    if cfg.debug.get("dump_param_checksum"):
        # Per-process record: equal checksums with different local losses show DDP kept ranks in sync.
        (out_dir / f"debug_rank{rank}.json").write_text(json.dumps({"checksum": checksum, "local_losses": local_losses}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        with torch.random.fork_rng():
            final = {n: m for n, m in unwrapped.items()}
            _with_ema(ema, final, lambda: task.finish(out_dir, final))
        for n, e in ema.items():
            save_tensors(e.state_dict(), out_dir / f"ema_{n}.safetensors")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {"step": step, "history": history, "checksum": checksum, "output_dir": str(out_dir)}


def drop_records_after(metrics_file: Path, step: int) -> None:
    """Remove the JSON-lines records of steps after `step`: an interrupted run logged them, and the
    resumed run logs them again."""
    if not metrics_file.is_file():
        return
    lines = metrics_file.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
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


def _validate(task: Task, step, out_dir, models, ema, accelerator, log_with) -> None:
    if accelerator.is_main_process:
        # fork_rng: validation sampling must not shift the training RNG stream (resume equality).
        with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
            for m in models.values():
                m.eval()
            with torch.no_grad():
                scalars = _with_ema(ema, models, lambda: task.validate(step, out_dir, models)) or {}
            for m in models.values():
                m.train()
        if scalars:
            accelerator.print(f"validation @ {step}: " + ", ".join(f"{k}={v:.4g}" for k, v in scalars.items()))
            with open(out_dir / "validation.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **scalars}) + "\n")
            if log_with:
                accelerator.log({f"val/{k}": v for k, v in scalars.items()}, step=step)
    accelerator.wait_for_everyone()
