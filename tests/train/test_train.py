"""Training engine: short toy runs (loss falls, exact resume, NaN guard, config), checkpoint
format, data order, EMA, diffusion targets. Tiny models on a 16x16 toy world, one CPU thread."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors import safe_open

from videomv.train.batches import BatchStream, ShardedOrder
from videomv.train.checkpoint import (CheckpointManager, optimizer_from_safe, optimizer_to_safe, rng_state,
                                      set_rng_state)
from videomv.train.config import load_config, parse_args
from videomv.train.diffusion import build_noise_scheduler, diffusion_target, warn_min_snr_high_noise
from videomv.train.ema import EMA
from videomv.train.engine import NonFiniteLossError, train
from videomv.train.losses import diffusion_loss
from videomv.train.mv import MultiViewTask
from videomv.train.schema import MultiViewConfig

from videomv.toy import build_configured_world

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "toy_t2mv.yaml"

TINY = [
    "data.toy.num_objects=6", "data.toy.resolution=16", "data.toy.split=[0.5,0.25,0.25]", "data.toy.workers=1",
    "data.resolution=16", "data.window=4", "data.text_dropout=0.1",
    "vae.path=null", "vae.init.block_out_channels=[8,8]", "vae.init.latent_channels=4",
    "vae.init.down_block_types=[DownEncoderBlock2D,DownEncoderBlock2D]",
    "vae.init.up_block_types=[UpDecoderBlock2D,UpDecoderBlock2D]", "vae.init.norm_num_groups=4",
    "vae.init.layers_per_block=1",
    "unet.init.sample_size=8", "unet.init.block_out_channels=[8,16]",
    "unet.init.down_block_types=[CrossAttnDownBlock3D,DownBlock3D]",
    "unet.init.up_block_types=[UpBlock3D,CrossAttnUpBlock3D]", "unet.init.norm_num_groups=4",
    "unet.init.cross_attention_dim=16", "unet.init.attention_head_dim=4",
    "text_encoder.init.hidden_size=16", "text_encoder.init.num_layers=1", "text_encoder.init.num_heads=2",
    "text_encoder.init.projection_dim=16",
    "dataloader.batch_size=2", "logging.trackers=[]", "validation.every=0",
    "optimizer.lr=1e-3", "lr_scheduler.name=constant", "lr_scheduler.warmup_steps=0",
]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toy") / "world16"  # built by the first run (data.toy)


def tiny_config(*extra: str, config=CONFIG):
    return load_config(config, TINY + list(extra), MultiViewConfig)


def run(tmp: Path, toy_root: Path, *extra: str, task=MultiViewTask) -> dict:
    AcceleratorState._reset_state(True)
    cfg = tiny_config(f"data.root={toy_root}", f"output_dir={tmp}", *extra)
    try:
        return train(cfg, task, prepare=build_configured_world)
    finally:
        AcceleratorState._reset_state(True)


def read_losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- toy runs
def test_toy_run_loss_falls_and_saves_resolved_config(tmp_path, toy_root):
    one = tmp_path / "one.txt"
    summary = run(tmp_path / "a", toy_root, "max_steps=1", "checkpoint.every=100")
    assert (toy_root / "toyworld.json").is_file()  # the toy world was built on first use
    one.write_text((toy_root / "train.txt").read_text().splitlines()[0] + "\n")
    out = tmp_path / "fit"
    # Overfit one object: the eps-prediction loss must fall well below its start.
    summary = run(out, toy_root, "max_steps=40", "checkpoint.every=100", f"data.objects={one}",
                  "data.text_dropout=0.0", "optimizer.lr=3e-3")
    losses = [h["loss"] for h in summary["history"]]
    print(f"overfit run: first-10 mean {np.mean(losses[:10]):.4f}, last-10 mean {np.mean(losses[-10:]):.4f}")
    assert len(losses) == 40 and losses == pytest.approx(read_losses(out))
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    assert first > 0.5 and last < 0.8 * first, (first, last)

    # The exported folder loads with diffusers/transformers and holds the EMA weights (EMA is on).
    from videomv.models import T2MVUNet
    from videomv.models.conditioning import TextConditioner

    unet = T2MVUNet.from_pretrained(str(out / "final"), subfolder="unet")
    ema = _load(out / "checkpoints" / "step_000040" / "ema_unet.safetensors")
    raw = _load(out / "checkpoints" / "step_000040" / "model_unet.safetensors")
    assert int(ema["num_updates"]) == 40
    for k, v in unet.state_dict().items():
        torch.testing.assert_close(v, ema.get(f"shadow.{k}", raw[k]), rtol=0, atol=0)
    assert any(not torch.equal(ema[f"shadow.{k}"], raw[k]) for k in raw if f"shadow.{k}" in ema)
    text = TextConditioner.from_pretrained(str(out / "final"))
    assert text.encode(["a red sphere"]).shape == (1, 77, 16)
    from videomv.sampling import T2MVPipeline, text_scheduler

    pipe = T2MVPipeline.from_pretrained(str(out / "final"))  # a whole pipeline folder
    assert torch.equal(pipe.scheduler.alphas_cumprod, text_scheduler().alphas_cumprod)
    assert pipe.scheduler.config.steps_offset == 1 and pipe.scheduler.config.prediction_type == "epsilon"

    saved = load_config(out / "config.yaml", [], MultiViewConfig)
    assert saved.max_steps == 40 and saved.optimizer.lr == pytest.approx(3e-3)
    assert saved.data.objects == str(one) and saved.output_dir == str(out)
    assert saved.unet.init.block_out_channels == [8, 16]


def test_continuing_from_an_fp16_model_folder_trains_float32_copies(tmp_path, toy_root):
    from accelerate import Accelerator

    from videomv.sampling import T2MVPipeline

    run(tmp_path / "a", toy_root, "max_steps=1", "checkpoint.every=100")
    half = tmp_path / "half"  # an exported model folder stores fp16, as data/embedded does
    T2MVPipeline.from_pretrained(str(tmp_path / "a" / "final")).to(torch.float16).save_pretrained(str(half))
    AcceleratorState._reset_state(True)
    cfg = tiny_config(f"data.root={toy_root}", f"output_dir={tmp_path / 'b'}", "data.cache_latents=false",
                      f"unet.pretrained={half}", f"text_encoder.base={half}", f"vae.path={half}/vae", "vae.subfolder=null")
    try:
        task = MultiViewTask(cfg, Accelerator(cpu=True))
    finally:
        AcceleratorState._reset_state(True)
    saved = _load(half / "unet" / "diffusion_pytorch_model.safetensors")
    for name, model in task.trainable_models().items():
        assert {p.dtype for p in model.parameters()} == {torch.float32}, name
    unet_state = task.unet.state_dict()
    assert saved and all(saved[k].dtype == torch.float16 for k in saved)
    for k, v in saved.items():
        torch.testing.assert_close(unet_state[k], v.float(), rtol=0, atol=0)


def test_schedule_overrides_reach_the_exported_sampler(tmp_path, toy_root):
    """Zero terminal SNR and trailing spacing set for training are what the exported DDIM samples with."""
    from accelerate import Accelerator
    from diffusers import DDIMScheduler

    run(tmp_path / "a", toy_root, "max_steps=1", "checkpoint.every=100")  # builds the toy world
    AcceleratorState._reset_state(True)
    cfg = tiny_config(f"data.root={toy_root}", f"output_dir={tmp_path / 'b'}", "data.cache_latents=false",
                      "noise_scheduler.overrides.prediction_type=v_prediction",
                      "noise_scheduler.overrides.rescale_betas_zero_snr=true",
                      "noise_scheduler.overrides.timestep_spacing=trailing")
    try:
        task = MultiViewTask(cfg, Accelerator(cpu=True))
    finally:
        AcceleratorState._reset_state(True)
    sampler = task.build_pipeline(task.trainable_models()).scheduler
    reference = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    torch.testing.assert_close(sampler.alphas_cumprod, reference.alphas_cumprod, rtol=0, atol=0)
    assert float(sampler.alphas_cumprod[-1]) == 0.0 and sampler.config.prediction_type == "v_prediction"
    sampler.set_timesteps(50)
    assert sampler.timesteps[0] == 999 and sampler.timesteps[-1] == 19


def test_resume_continues_exactly(tmp_path, toy_root):
    full = tmp_path / "full"
    run(full, toy_root, "max_steps=6", "checkpoint.every=3", "checkpoint.keep_last=5")
    full_losses = read_losses(full)

    # Killed after step 5: the run folder holds the step-3 checkpoint and the metrics of steps 1-5.
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "step_000003", part / "checkpoints" / "step_000003")
    logged = (full / "metrics.jsonl").read_text().splitlines()
    (part / "metrics.jsonl").write_text("".join(line + "\n" for line in logged[:5]))
    resumed = run(part, toy_root, "max_steps=6", "checkpoint.every=3", "resume=latest")
    assert [h["step"] for h in resumed["history"]] == [4, 5, 6]
    # Steps 4-5 of the killed run are replaced, not repeated, in metrics.jsonl.
    assert [json.loads(line)["step"] for line in (part / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(read_losses(part), full_losses, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([h["lr"] for h in resumed["history"]], 1e-3)

    # Weights after the resumed run equal those of the uninterrupted run.
    for name in ("model_unet", "model_text_encoder"):
        a = _load(full / "checkpoints" / "step_000006" / f"{name}.safetensors")
        b = _load(part / "checkpoints" / "step_000006" / f"{name}.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)

    # resume=PATH works too; a folder that is not a checkpoint is refused by name.
    again = run(tmp_path / "again", toy_root, "max_steps=4", f"resume={full / 'checkpoints' / 'step_000003'}")
    assert [h["step"] for h in again["history"]] == [4]
    np.testing.assert_allclose(again["history"][0]["loss"], full_losses[3], rtol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        run(tmp_path / "bad", toy_root, "max_steps=2", f"resume={tmp_path}")


class NaNAtStep2(MultiViewTask):
    def loss(self, batch, models, step):
        loss, logs = super().loss(batch, models, step)
        return (loss * float("nan") if step == 1 else loss), logs


def test_nonfinite_loss_stops_naming_the_step(tmp_path, toy_root, monkeypatch):
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \(nan\) at step 2"):
        run(tmp_path / "nan", toy_root, "max_steps=4", task=NaNAtStep2)
    # Allowed to skip one: the run completes, the bad step changes no weight.
    # Also logs to tensorboard and to wandb in offline mode (no network).
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "skip"
    summary = run(out, toy_root, "max_steps=3", "skip_nonfinite_loss=1", "logging.trackers=[tensorboard,wandb]",
                  "logging.every=1", task=NaNAtStep2)
    assert summary["step"] == 3 and math.isnan(summary["history"][1]["loss"])
    assert all(math.isfinite(h["loss"]) for h in (summary["history"][0], summary["history"][2]))
    assert list(out.rglob("events.out.tfevents.*"))
    assert list((out / "wandb").glob("offline-run-*"))


def test_latent_cache_matches_vae_and_is_reused(tmp_path, toy_root):
    from diffusers import AutoencoderKL

    from videomv.train.datasets import LatentCache, build_multiview_dataset, latent_cache_key

    summary = run(tmp_path / "cached", toy_root, "max_steps=2", "data.cache_latents=true")
    assert all(math.isfinite(h["loss"]) for h in summary["history"])
    cfg = tiny_config(f"data.root={toy_root}")
    dataset = build_multiview_dataset(cfg.data, "train")
    torch.manual_seed(0)
    vae = AutoencoderKL(**dict(cfg.vae.init)).eval()
    path = tmp_path / "cache.safetensors"
    key = latent_cache_key(vae, cfg.data, dataset)
    cache = LatentCache(dataset, vae, path, key)
    with torch.no_grad():
        dist = vae.encode(dataset[1]["images"]).latent_dist
    torch.testing.assert_close(cache[1]["latent_mean"], dist.mean, rtol=2e-3, atol=2e-3)  # stored as fp16
    torch.testing.assert_close(cache[1]["latent_std"], dist.std, rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(cache[1]["cameras"], dataset[1]["cameras"])
    assert cache[1]["caption"] == dataset[1]["caption"] and len(cache) == len(dataset)
    read_by_workers = LatentCache(dataset, vae, tmp_path / "workers.safetensors", key, workers=2)
    assert torch.equal(read_by_workers.mean, cache.mean) and read_by_workers.object_ids == cache.object_ids
    stamp = path.stat().st_mtime_ns
    LatentCache(dataset, vae, path, key)
    assert path.stat().st_mtime_ns == stamp  # same key: read back, not rebuilt
    with torch.no_grad():
        vae.decoder.conv_out.bias.add_(1.0)  # decoder change alone: key changes, cache rebuilt
    new_key = latent_cache_key(vae, cfg.data, dataset)
    assert new_key != key
    LatentCache(dataset, vae, path, new_key)
    assert path.stat().st_mtime_ns != stamp


def test_image_latent_cache_gives_the_condition_the_images_give(tmp_path, toy_root):
    """The image model trains from a latent cache: each view's CLIP embedding is cached beside its
    posterior, and the condition of a cached batch (any view window) is the one its pixels give."""
    from accelerate import Accelerator

    from videomv.train.datasets import collate, latent_cache_key, take_views

    image_model = [f"data.root={toy_root}", "image_encoder.init.hidden_size=16", "image_encoder.init.projection_dim=16",
                   "text_encoder.init.num_layers=2", "model.clean_input_view=true", "data.cache_latents=true"]
    AcceleratorState._reset_state(True)
    cfg = load_config(REPO / "configs" / "toy_i2mv.yaml",
                      TINY + image_model + [f"output_dir={tmp_path / 'run'}", "max_steps=2"], MultiViewConfig)
    try:
        summary = train(cfg, MultiViewTask, prepare=build_configured_world)
        assert all(math.isfinite(h["loss"]) for h in summary["history"])
        with safe_open(str(tmp_path / "run" / "latent_cache.safetensors"), framework="pt") as f:
            assert f.get_slice("image_embeds").get_shape() == [len(f.get_tensor("mean")), 24, 16]

        cfg = load_config(REPO / "configs" / "toy_i2mv.yaml",
                          TINY + image_model + [f"output_dir={tmp_path / 'task'}"], MultiViewConfig)
        task = MultiViewTask(cfg, Accelerator(cpu=True))
        cached = collate([task.latents[i] for i in (0, 1)])
        pixels = collate([task.train_dataset[i] for i in (0, 1)])
        for index in (torch.arange(24), torch.arange(3, 7)):  # the whole orbit, and a window starting at view 3
            from_cache = task.image_condition(take_views(cached, index), len(index))
            from_pixels = task.image_condition(take_views(pixels, index), len(index))
            torch.testing.assert_close(from_cache.image_embeddings, from_pixels.image_embeddings,
                                       rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(from_cache.image_latents, from_pixels.image_latents,
                                       rtol=5e-3, atol=5e-3)  # the cache keeps the mean in fp16
            assert from_cache.clean_input_view and from_cache.image_latents.shape[2] == len(index)
        view_1_first = task.image_condition(take_views(cached, torch.arange(1, 25) % 24), 24)
        view_0_first = task.image_condition(pixels, 24)
    finally:
        AcceleratorState._reset_state(True)
    assert (view_1_first.image_embeddings - view_0_first.image_embeddings).abs().max() > 1e-3  # the check can fail

    key = latent_cache_key(task.vae, cfg.data, task.train_dataset, task.image_conditioner)
    assert key != latent_cache_key(task.vae, cfg.data, task.train_dataset)
    with torch.no_grad():
        next(task.image_conditioner.image_encoder.parameters()).add_(1.0)  # a changed encoder is a new cache
    assert latent_cache_key(task.vae, cfg.data, task.train_dataset, task.image_conditioner) != key


def test_2d_images_mix_in_as_one_frame_batches(tmp_path, toy_root):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    (folder / "captions.json").write_text(json.dumps({f"im{i}": f"picture {i}" for i in range(3)}))
    summary = run(tmp_path / "mixed", toy_root, "max_steps=6", f"data.image_data.root={folder}",
                  "data.image_data.probability=0.5", "data.image_data.batch_size=2",
                  "gradient_checkpointing=true")
    frames = [h["frames"] for h in summary["history"]]
    assert set(frames) == {1.0, 4.0}, frames  # 2D batches are 1-frame clips, 3D batches 4-view windows
    assert all(math.isfinite(h["loss"]) for h in summary["history"])


# ----------------------------------------------------------------------------- config
def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(CONFIG, ["max_steps=7", "optimizer.lr=0.5", "data.window=null"], MultiViewConfig)
    assert cfg.max_steps == 7 and cfg.optimizer.lr == 0.5 and cfg.data.window is None
    assert cfg.checkpoint.keep_last == 2  # from the YAML (schema default 3); the schema fills what it omits
    assert cfg.skip_nonfinite_loss == 0 and cfg.ema.enabled is True and cfg.distributed.timeout_s == 1800
    assert parse_args(["--config", "x.yaml", "a=1", "b.c=2"]) == ("x.yaml", ["a=1", "b.c=2"])
    with pytest.raises(SystemExit):
        parse_args(["--config", "x.yaml", "not_an_override"])
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_config(tmp_path / "missing.yaml", [], MultiViewConfig)
    from omegaconf import OmegaConf

    from videomv.train.mv import load_vae

    with pytest.raises(FileNotFoundError, match="vae.path.*train_vae"):
        load_vae(OmegaConf.create({"path": str(tmp_path / "no_vae")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_vae(OmegaConf.create({"path": str(tmp_path / "empty")}))
    with pytest.raises(ValueError, match="vae.path"):
        load_vae(OmegaConf.create({}))
    paper = load_config(REPO / "configs" / "t2mv_modelscope.yaml", [], MultiViewConfig)
    assert paper.unet.base == "damo-vilab/text-to-video-ms-1.7b" and paper.optimizer.lr == pytest.approx(3e-5)
    assert paper.data.caption_suffix == ", 3d asset" and paper.mixed_precision == "fp16"


@pytest.mark.parametrize("override, message", [
    ("max_steps=3.9", r"'max_steps'.*3\.9.*Integer"),
    ("max_steps=abc", r"'max_steps'.*abc"),
    ("ema.enabled=nope", r"'ema.enabled'.*nope"),
    ("checkpoint.every=0", r"'checkpoint.every' must be an integer >= 1, got 0"),
    ("max_steps=0", r"'max_steps' must be an integer >= 1"),
    ("mixed_precision=fp8", r"'mixed_precision' must be one of no, fp16, bf16"),
    ("data.text_dropout=1.5", r"'data.text_dropout' must be a probability"),
    ("optimizer.lr=-1", r"'optimizer.lr' must be a number > 0"),
    ("unet.ray_map_fovy=0", r"'unet.ray_map_fovy' must be null or a field of view in degrees in \(0, 180\)"),
    ("max_stepz=3", r"unknown config key 'max_stepz'.*'max_steps'"),
    ("optimizer.lrr=3", r"unknown config key 'optimizer.lrr'.*'optimizer.lr'"),
    ("data.windw=3", r"unknown config key 'data.windw'.*'data.window'"),
    ("logging.with=[]", r"'logging.with'.*'logging.trackers'"),
    ("resume=/no/such/checkpoint", r"'resume' must be null, latest, auto or an existing checkpoint folder"),
])
def test_bad_overrides_fail_naming_the_key(override, message):
    from videomv.train.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(CONFIG, [override], MultiViewConfig)


def test_typed_overrides_convert_and_bools_parse():
    cfg = load_config(CONFIG, ["max_steps=12", "ema.enabled=false", "optimizer.lr=2e-4", "data.window=4"],
                      MultiViewConfig)
    assert cfg.max_steps == 12 and isinstance(cfg.max_steps, int)
    assert cfg.ema.enabled is False and cfg.optimizer.lr == pytest.approx(2e-4) and cfg.data.window == 4


def test_config_overlays_hold_only_differences(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("max_steps: 10\noptimizer: {lr: 0.5}\ndata: {root: somewhere, resolution: 32}\n")
    child = tmp_path / "sub" / "child.yaml"
    child.parent.mkdir()
    child.write_text("base_config: ../base.yaml\noptimizer: {lr: 0.25}\n")
    cfg = load_config(child, ["seed=3"], MultiViewConfig)
    assert (cfg.max_steps, cfg.optimizer.lr, cfg.data.root, cfg.data.resolution, cfg.seed) == (10, 0.25, "somewhere", 32, 3)
    assert "base_config" not in cfg
    loop = tmp_path / "loop.yaml"
    loop.write_text("base_config: loop.yaml\n")
    from videomv.train.config import ConfigError

    with pytest.raises(ConfigError, match="loops back"):
        load_config(loop, [], MultiViewConfig)
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_config: base.yaml\noptimiser: {lr: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'optimiser' \(from .*bad.yaml\).*'optimizer'"):
        load_config(bad, [], MultiViewConfig)


# ----------------------------------------------------------------------------- checkpoint format
def _load(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _trained_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    for _ in range(2):
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    return model, opt, sched


def test_checkpoint_files_are_safetensors_json_atomic_and_pruned(tmp_path):
    model, opt, sched = _trained_optimizer()
    ema = {"net": EMA(model, 0.9)}
    manager = CheckpointManager(tmp_path, keep_last=2)
    # A crash mid-save leaves a temp folder: never picked by latest, replaced by the next save.
    (tmp_path / "checkpoints" / ".tmp-step_000009").mkdir(parents=True)
    assert manager.latest() is None and manager.resolve("auto") is None
    with pytest.raises(FileNotFoundError, match="resume=latest: no checkpoint"):
        manager.resolve("latest")
    for step in (3, 6, 9):
        manager.save(step, models={"net": model}, optimizer=opt, lr_scheduler=sched, ema=ema,
                     trainer_state={"data": {"epoch": 0, "position": step}})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000006", "step_000009"]  # keep_last=2, no temp folder left
    ckpt = manager.latest()
    assert ckpt.name == "step_000009"
    for f in ckpt.iterdir():
        assert f.suffix in (".safetensors", ".json"), f.name
        if f.suffix == ".safetensors":
            _load(f)  # parses as safetensors
        else:
            json.loads(f.read_text())
    assert not list(ckpt.glob("*.tmp"))

    # Round trip into fresh objects restores weights, optimizer, scheduler, EMA, RNG.
    torch.manual_seed(1)
    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    ema2 = {"net": EMA(model2, 0.9)}
    state = manager.load(ckpt, models={"net": model2}, optimizer=opt2, lr_scheduler=sched2, ema=ema2)
    assert state["step"] == 9 and state["data"]["position"] == 9
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sched2.last_epoch == sched.last_epoch and sched2.get_last_lr() == pytest.approx(sched.get_last_lr())
    for p1, p2 in zip(model.parameters(), model2.parameters()):
        s1, s2 = opt.state[p1], opt2.state[p2]
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(s1[key], s2[key], rtol=0, atol=0)


def test_ema_turned_on_at_resume_starts_from_the_checkpoint_weights(tmp_path):
    model, opt, sched = _trained_optimizer()
    manager = CheckpointManager(tmp_path)
    ckpt = manager.save(4, models={"net": model}, optimizer=opt, lr_scheduler=sched)  # EMA off
    torch.manual_seed(1)
    model2 = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: 1.0 / (1 + s))
    ema2 = {"net": EMA(model2, 0.9)}  # made from the fresh weights, before loading
    with pytest.warns(UserWarning, match="ema_net.safetensors"):
        manager.load(ckpt, models={"net": model2}, optimizer=opt2, lr_scheduler=sched2, ema=ema2)
    assert ema2["net"].num_updates == 0
    for name, p in model.named_parameters():
        torch.testing.assert_close(ema2["net"].shadow[name], p.detach(), rtol=0, atol=0)


def test_optimizer_and_rng_state_round_trip():
    _, opt, _ = _trained_optimizer()
    tensors, meta = optimizer_to_safe(opt.state_dict())
    json.dumps(meta)  # the non-tensor part is plain JSON
    back = optimizer_from_safe(tensors, json.loads(json.dumps(meta)))
    ref = opt.state_dict()
    assert back["param_groups"] == json.loads(json.dumps(ref["param_groups"]))
    for pid, st in ref["state"].items():
        for key, value in st.items():
            torch.testing.assert_close(back["state"][pid][key], value)

    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    tensors, meta = rng_state()
    meta = json.loads(json.dumps(meta))
    draws = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(99), np.random.seed(99), random.seed(99)
    set_rng_state(tensors, meta)
    again = (torch.rand(3), np.random.rand(3), random.random())
    torch.testing.assert_close(draws[0], again[0], rtol=0, atol=0)
    np.testing.assert_array_equal(draws[1], again[1])
    assert draws[2] == again[2]


# ----------------------------------------------------------------------------- data order
def test_sharded_order_partitions_and_resumes():
    orders = [ShardedOrder(10, batch_size=2, seed=3, rank=r, world_size=2) for r in range(2)]
    assert orders[0].batches_per_epoch == 2  # 10 // (2 * 2)
    for epoch in range(3):
        b0, b1 = orders[0].batches(epoch), orders[1].batches(epoch)
        flat = [i for batch in b0 + b1 for i in batch]
        assert len(flat) == len(set(flat)) == 8  # disjoint across ranks, no repeats in an epoch
        perm = orders[0].epoch_order(epoch).tolist()
        assert b0[0] == perm[0:2] and b1[0] == perm[2:4] and b0[1] == perm[4:6]
    assert orders[0].batches(0) != orders[0].batches(1)  # reshuffled each epoch
    small = ShardedOrder(3, batch_size=4, seed=0)  # fewer items than a batch: permutations repeat
    assert small.batches_per_epoch == 1 and sorted(small.batches(0)[0][:3]) == [0, 1, 2]
    with pytest.raises(ValueError, match="empty"):
        ShardedOrder(0, 1)

    data = list(range(10))
    stream = BatchStream(data, ShardedOrder(10, 3, seed=1))
    seen = [next(stream).tolist() for _ in range(7)]  # crosses two epoch boundaries (3 batches each)
    resumed = BatchStream(data, ShardedOrder(10, 3, seed=1))
    resumed.load_state_dict({"epoch": 1, "position": 1})
    assert [next(resumed).tolist() for _ in range(3)] == seen[4:7]


def test_repeated_items_fill_each_epoch_that_many_times_and_shard():
    repeats = [1, 3, 1, 2, 1]
    orders = [ShardedOrder(5, batch_size=2, seed=4, rank=r, world_size=2, repeats=repeats) for r in range(2)]
    assert orders[0].batches_per_epoch == 2  # 8 slots // (2 * 2)
    for epoch in range(3):
        order = orders[0].epoch_order(epoch).tolist()
        assert sorted(order) == [0, 1, 1, 1, 2, 3, 3, 4]
        b0, b1 = orders[0].batches(epoch), orders[1].batches(epoch)
        assert [i for pair in zip(b0, b1) for batch in pair for i in batch] == order[:8]
    # Without repeats the order is the seed's plain permutation, as before the option existed.
    plain = ShardedOrder(5, batch_size=2, seed=4)
    g = torch.Generator().manual_seed(4 * 100_003 + 1)
    assert plain.epoch_order(1).tolist() == torch.randperm(5, generator=g).tolist()
    assert ShardedOrder(5, 2, seed=4, repeats=[1] * 5).epoch_order(1).tolist() == plain.epoch_order(1).tolist()
    with pytest.raises(ValueError, match="one per item"):
        ShardedOrder(5, 2, repeats=[1, 2])
    with pytest.raises(ValueError, match="integers >= 1"):
        ShardedOrder(3, 2, repeats=[1, 0, 1])


def test_caption_repeats_take_the_largest_matching_count_and_refuse_unknown_texts():
    from videomv.train.datasets import caption_repeats

    captions = ["a red cube", "a red cube on top of a blue cone", "a cube, a cone and a torus in a row", ""]
    assert caption_repeats(captions, {" on top of ": 3, "cube": 2}) == [2, 3, 2, 1]
    assert caption_repeats(captions, {}) == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="'next to' occurs in none of the 4"):
        caption_repeats(captions, {"next to": 2})
    for bad in ({"cube": 0}, {"cube": 1.5}, {"": 2}, {"cube": True}):
        with pytest.raises(ValueError, match="integer >= 1"):
            caption_repeats(captions, bad)


def test_caption_repeats_reach_the_training_order(tmp_path, toy_root, monkeypatch):
    import videomv.train.mv as mv_module

    orders = []
    real = mv_module.make_stream

    def spy(dataset, *args, **kwargs):
        stream = real(dataset, *args, **kwargs)
        orders.append((dataset, stream.order))
        return stream

    monkeypatch.setattr(mv_module, "make_stream", spy)
    run(tmp_path / "plain", toy_root, "max_steps=1")
    dataset, plain = orders[-1]
    captions = [dataset.caption(i) for i in range(len(dataset))]
    word = captions[0].split()[-1]  # the first item's shape noun
    expected = [3 if word in c else 1 for c in captions]
    run(tmp_path / "repeated", toy_root, "max_steps=1", f"data.caption_repeats={{{word}: 3}}")
    order = orders[-1][1]
    assert sorted(order.epoch_order(0).tolist()) == sorted(plain.items.repeat_interleave(torch.tensor(expected)).tolist())
    with pytest.raises(ValueError, match="occurs in none"):
        run(tmp_path / "typo", toy_root, "max_steps=1", "data.caption_repeats={dodecahedron: 2}")


# ----------------------------------------------------------------------------- EMA and objective
def test_ema_matches_closed_form():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.5)
    expected = 1.0
    for n, value in enumerate([3.0, 5.0, 7.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        ema.update(model, step=n)
        d = min(0.5, (1 + n) / (10 + n))  # warm-up: 0.1, 0.1818..., 0.25
        expected = d * expected + (1 - d) * value
        assert ema.shadow["weight"].item() == pytest.approx(expected)
    target = torch.nn.Linear(1, 1, bias=False)
    ema.copy_to(target)
    assert target.weight.item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="decay"):
        EMA(model, decay=1.5)


def test_diffusion_targets_and_min_snr_weights():
    text = build_noise_scheduler("t2v_eps")
    image = build_noise_scheduler("i2v_v_zero_snr")
    # ModelScope's "scaled_linear" betas: linear in sqrt(beta) from sqrt(0.00085) to sqrt(0.012).
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    torch.testing.assert_close(text.betas, betas)
    from videomv.sampling.ddim import image_scheduler, text_scheduler

    torch.testing.assert_close(text.alphas_cumprod, text_scheduler().alphas_cumprod)  # train == sample
    torch.testing.assert_close(image.alphas_cumprod, image_scheduler().alphas_cumprod)
    assert image.alphas_cumprod[-1].item() == pytest.approx(0.0, abs=1e-8)  # zero terminal SNR
    assert text.config.prediction_type == "epsilon" and image.config.prediction_type == "v_prediction"

    torch.manual_seed(0)
    x0, eps = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    t = torch.tensor([10, 700])
    assert torch.equal(diffusion_target(text, x0, eps, t), eps)
    ac = image.alphas_cumprod[t].view(2, 1, 1, 1, 1)
    torch.testing.assert_close(diffusion_target(image, x0, eps, t), ac.sqrt() * eps - (1 - ac).sqrt() * x0)

    pred = torch.zeros_like(eps)
    mse = eps.pow(2).flatten(1).mean(1)
    assert diffusion_loss(pred, eps, text, t).item() == pytest.approx(mse.mean().item(), rel=1e-6)
    ac_t = text.alphas_cumprod[t]
    snr = ac_t / (1 - ac_t)
    w = torch.minimum(snr, torch.tensor(5.0)) / snr
    assert diffusion_loss(pred, eps, text, t, min_snr_gamma=5.0).item() == pytest.approx((w * mse).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="preset"):
        build_noise_scheduler("nope")


def test_min_snr_warns_when_the_noisiest_steps_get_almost_no_weight():
    image = build_noise_scheduler("i2v_v_zero_snr")  # SNR(999) = 0: x0 weight exactly 0 there
    with pytest.warns(UserWarning, match=r"t=999 is weighted by 0 "):
        assert warn_min_snr_high_noise(image, 5.0)
    text = build_noise_scheduler("t2v_eps")  # SNR(999) = 0.0047
    ac = float(text.alphas_cumprod[-1])
    with pytest.warns(UserWarning, match=f"weighted by {ac / (1 - ac):.2g} "):
        warn_min_snr_high_noise(text, 5.0)
    assert warn_min_snr_high_noise(image, None) is None  # plain MSE
    assert warn_min_snr_high_noise(build_noise_scheduler(None, beta_end=1e-4), 5.0) is None  # SNR(T) >= 0.01


@pytest.mark.parametrize("config", ["toy_t2mv.yaml", "toy_i2mv.yaml"])
def test_bf16_run_exports_the_frozen_parts_unrounded(tmp_path, toy_root, config):
    """Mixed precision runs the frozen parts in bf16; the exported folder still holds their float32
    weights (text: the VAE; image: the VAE, the text and the image encoder, which holds the VAE too)."""
    from safetensors.torch import load_file

    def run_with(out, *extra):
        AcceleratorState._reset_state(True)
        cfg = load_config(REPO / "configs" / config, TINY + [f"data.root={toy_root}", f"output_dir={out}",
                                                             "max_steps=1", "image_encoder.init.hidden_size=16",
                                                             "image_encoder.init.projection_dim=16", *extra],
                          MultiViewConfig)
        try:
            return train(cfg, MultiViewTask, prepare=build_configured_world)
        finally:
            AcceleratorState._reset_state(True)

    run_with(tmp_path / "fp32")
    assert math.isfinite(run_with(tmp_path / "bf16", "mixed_precision=bf16")["history"][0]["loss"])
    frozen = ["vae"] + (["text_encoder", "image_encoder"] if config == "toy_i2mv.yaml" else [])
    for part in frozen:
        files = sorted((tmp_path / "fp32" / "final" / part).glob("*.safetensors"))
        assert files, part
        for f in files:
            full, mixed = load_file(f), load_file(tmp_path / "bf16" / "final" / part / f.name)
            assert all(torch.equal(full[k], mixed[k]) for k in full), part
            assert all(t.dtype == torch.float32 for t in mixed.values()), part


def test_image_model_trains_on_the_text_context_its_pipeline_samples_with(tmp_path, toy_root, monkeypatch):
    """The image pipeline takes the text encoder's penultimate layer (as I2VGen-XL); training must
    feed the UNet the same context, not the last layer."""
    import videomv.sampling.pipeline as pipeline_module
    import videomv.train.mv as mv_module
    from videomv.sampling import I2MVPipeline

    seen = {}

    def spy(where, module):
        real = module.denoise

        def wrapped(unet, latents, t, condition, *args, **kwargs):
            seen.setdefault(where, condition.text.detach().clone())
            return real(unet, latents, t, condition, *args, **kwargs)

        monkeypatch.setattr(module, "denoise", wrapped)

    spy("train", mv_module)
    AcceleratorState._reset_state(True)
    cfg = load_config(REPO / "configs" / "toy_i2mv.yaml",
                      TINY + [f"data.root={toy_root}", f"output_dir={tmp_path}", "max_steps=1",
                              "image_encoder.init.hidden_size=16", "image_encoder.init.projection_dim=16",
                              "text_encoder.init.num_layers=2"], MultiViewConfig)
    try:
        train(cfg, MultiViewTask, prepare=build_configured_world)
    finally:
        AcceleratorState._reset_state(True)

    spy("sample", pipeline_module)
    pipe = I2MVPipeline.from_pretrained(str(tmp_path / "final"))
    pipe(torch.full((3, 16, 16), 0.5), cameras=torch.eye(4).repeat(4, 1, 1), num_inference_steps=1,
         guidance_scale=1.0, progress=False, output_type="latent")
    train_context, sample_context = seen["train"][:1], seen["sample"]
    torch.testing.assert_close(train_context, sample_context, rtol=1e-5, atol=1e-5)
    last_layer = pipe.text_conditioner.encode([""])
    assert (last_layer - sample_context).abs().max() > 1e-2  # the two layers differ: the check can fail


def test_image_dropout_trains_the_unconditional_image_condition(tmp_path, toy_root, monkeypatch):
    import videomv.train.mv as mv_module

    seen = []
    real = mv_module.denoise

    def spy(unet, latents, t, condition, *args, **kwargs):
        seen.append(condition.image)
        return real(unet, latents, t, condition, *args, **kwargs)

    monkeypatch.setattr(mv_module, "denoise", spy)
    image_model = [f"data.root={toy_root}", "max_steps=1", "image_encoder.init.hidden_size=16",
                   "image_encoder.init.projection_dim=16", "text_encoder.init.num_layers=2"]
    for name, dropout in (("kept", 0.0), ("dropped", 1.0)):
        AcceleratorState._reset_state(True)
        cfg = load_config(REPO / "configs" / "toy_i2mv.yaml",
                          TINY + image_model + [f"output_dir={tmp_path / name}", f"data.image_dropout={dropout}",
                                                "data.unconditional_image=image"], MultiViewConfig)
        try:
            train(cfg, MultiViewTask, prepare=build_configured_world)
        finally:
            AcceleratorState._reset_state(True)
    kept, dropped = seen
    assert kept.image_embeddings.abs().amin(dim=-1).gt(0).all()  # every sample keeps its image
    assert kept.image_latents[:, :, 0].abs().sum() > 0
    assert torch.equal(dropped.image_embeddings, torch.zeros_like(dropped.image_embeddings))
    assert torch.equal(dropped.image_latents[:, :, 0], torch.zeros_like(dropped.image_latents[:, :, 0]))
    torch.testing.assert_close(dropped.image_latents[:, :, 1:], kept.image_latents[:, :, 1:])  # positions stay
    with pytest.raises(ValueError, match="image_dropout is for image"):
        run(tmp_path / "text", toy_root, "max_steps=1", "data.image_dropout=0.1")
    with pytest.raises(ValueError, match="unconditional_image"):
        tiny_config("data.unconditional_image=latents")
    with pytest.raises(ValueError, match="image_dropout"):
        tiny_config("data.image_dropout=1.5")


def test_image_validation_grid_samples_as_the_model_was_trained(tmp_path, toy_root, monkeypatch):
    from videomv.sampling import I2MVPipeline

    calls = []
    real = I2MVPipeline.__call__

    def spy(self, *args, **kwargs):
        calls.append((kwargs.get("unconditional_image"), kwargs.get("clean_input_view")))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(I2MVPipeline, "__call__", spy)
    AcceleratorState._reset_state(True)
    out = tmp_path / "image"
    cfg = load_config(REPO / "configs" / "toy_i2mv.yaml",
                      TINY + [f"data.root={toy_root}", f"output_dir={out}", "max_steps=1", "validation.every=1",
                              "validation.steps=2", "validation.num_views=2", "validation.num_objects=1",
                              "image_encoder.init.hidden_size=16", "image_encoder.init.projection_dim=16",
                              "data.image_dropout=0.1", "data.unconditional_image=image",
                              "model.clean_input_view=true"], MultiViewConfig)
    try:
        train(cfg, MultiViewTask, prepare=build_configured_world)
    finally:
        AcceleratorState._reset_state(True)
    assert calls == [("image", True)]
    assert (out / "samples" / "step_000001.png").is_file()


def test_extra_text_layers_are_trained_and_exported(tmp_path, toy_root):
    from safetensors.torch import load_file

    from videomv.sampling.system import load_pipeline

    out = tmp_path / "deeper"
    run(out, toy_root, "max_steps=2", "ema.enabled=false", "text_encoder.extra_layers=1",
        "text_encoder.bidirectional_layers=1")
    exported = load_file(out / "final" / "text_encoder" / "model.safetensors")
    config = json.loads((out / "final" / "text_encoder" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2  # TINY's one layer + one appended
    # the appended layer attends both ways, and the exported pipeline loads it so
    assert config["bidirectional_layers"] == 1
    assert type(load_pipeline(out / "final").text_encoder).__name__ == "BidirectionalCLIPTextModel"
    new_layer = [k for k in exported if ".layers.1." in k]
    assert new_layer, sorted(exported)
    # the appended layer started with zero output projections; two steps moved them
    out_proj = next(k for k in new_layer if k.endswith("self_attn.out_proj.weight"))
    assert exported[out_proj].abs().sum() > 0
    with pytest.raises(ValueError, match="extra_layers=1 needs text_encoder.train=true"):
        run(tmp_path / "frozen", toy_root, "max_steps=1", "text_encoder.extra_layers=1", "text_encoder.train=false")
    with pytest.raises(ValueError, match="extra_layers"):
        tiny_config("text_encoder.extra_layers=-1")
    with pytest.raises(ValueError, match="bidirectional_layers=1 needs text_encoder.train=true"):
        run(tmp_path / "frozen", toy_root, "max_steps=1", "text_encoder.bidirectional_layers=1",
            "text_encoder.train=false")
    with pytest.raises(ValueError, match="bidirectional_layers"):
        tiny_config("text_encoder.bidirectional_layers=-1")


def test_zero_padding_trains_and_exports_with_the_pipeline(tmp_path, toy_root, monkeypatch):
    import videomv.train.mv as mv_module
    from videomv.sampling.system import load_pipeline

    seen = []
    real = mv_module.MultiViewCondition

    def spy(text, *args, **kwargs):
        seen.append(text.detach().clone())
        return real(text, *args, **kwargs)

    monkeypatch.setattr(mv_module, "MultiViewCondition", spy)
    out = tmp_path / "zeroed"
    run(out, toy_root, "max_steps=1", "ema.enabled=false", "text_encoder.zero_padding=true")
    assert seen and all(not ctx[:, -10:].any() for ctx in seen)  # toy captions end well before token 67
    assert json.loads((out / "final" / "text_encoder" / "config.json").read_text())["zero_padding"] is True
    pipe = load_pipeline(out / "final")
    cond, uncond = pipe.prompt_embeddings(["a red cube"], None, do_cfg=True)
    assert not cond[0, 5:].any() and not uncond[0, 2:].any()  # after "<start> a red cube <end>" and "<start> <end>"
    assert cond[0, :5].abs().sum() > 0


def test_grounding_loss_joins_the_diffusion_loss(tmp_path, toy_root):
    from accelerate import Accelerator

    out = tmp_path / "grounded"
    run(out, toy_root, "max_steps=2", "grounding.token=0.5", "grounding.pixel=0.25", "data.text_dropout=0",
        "logging.every=1")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert 0 < row["grounding_token"] < 1 and row["grounding_pixel"] > 0
        expected = row["diffusion"] + 0.5 * row["grounding_token"] + 0.25 * row["grounding_pixel"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="gradient checkpointing"):
        run(tmp_path / "checkpointed", toy_root, "max_steps=1", "grounding.pixel=0.5", "gradient_checkpointing=true")
    plain = tmp_path / "plain"
    shutil.copytree(toy_root, plain)
    (plain / "toyworld.json").unlink()
    with pytest.raises(ValueError, match="needs a toy-world dataset"):
        run(tmp_path / "not_toy", plain, "max_steps=1", "grounding.pixel=0.5", "data.toy=null")
    AcceleratorState._reset_state(True)
    cfg = load_config(REPO / "configs" / "toy_i2mv.yaml", TINY + [
        f"data.root={toy_root}", f"output_dir={tmp_path / 'image'}", "image_encoder.init.hidden_size=16",
        "image_encoder.init.projection_dim=16", "grounding.pixel=0.5", "data.text_dropout=0"], MultiViewConfig)
    try:
        with pytest.raises(ValueError, match="grounding is for text"):
            MultiViewTask(cfg, Accelerator(cpu=True))
    finally:
        AcceleratorState._reset_state(True)
    with pytest.raises(ValueError, match="grounding.token"):
        tiny_config("grounding.token=-1")


def test_object_weights_and_the_weighted_diffusion_loss_by_hand():
    from videomv.train.losses import object_weights

    alphas = torch.zeros(1, 2, 1, 4, 4)
    alphas[0, 0, 0, :2, :2] = 1.0  # frame 0: the top-left latent position fully covered
    alphas[0, 0, 0, 2, 3] = 1.0  # and a quarter of the bottom-right one
    weight = object_weights(alphas, (2, 2), 4.0)
    assert weight.shape == (1, 1, 2, 2, 2)  # (B, 1, F, h, w), the latents' layout
    torch.testing.assert_close(weight[0, 0, 0], torch.tensor([[5.0, 1.0], [1.0, 2.0]]))
    torch.testing.assert_close(weight[0, 0, 1], torch.ones(2, 2))
    with pytest.raises(ValueError, match="alphas"):
        object_weights(torch.zeros(1, 2, 4, 4), (2, 2), 4.0)

    scheduler = build_noise_scheduler("t2v_eps")
    t = torch.tensor([10])
    target = torch.zeros(1, 4, 2, 2, 2)
    target[0, :, 0, 0, 0] = 1.0  # error 1 at the object position, 0 elsewhere
    pred = torch.zeros_like(target)
    assert diffusion_loss(pred, target, scheduler, t).item() == pytest.approx(4 / 32)
    # weighted mean: 4 channels x 5 at the object over 4 x (5 + 1 + 1 + 2 + 4 x 1) in all
    assert diffusion_loss(pred, target, scheduler, t, weight=weight).item() == pytest.approx(20 / 52)
    ones = torch.ones(1, 1, 2, 2, 2)
    assert diffusion_loss(pred, target, scheduler, t, weight=ones).item() == pytest.approx(4 / 32)


def test_object_weight_reaches_the_loss_with_the_batch_alphas(tmp_path, toy_root, monkeypatch):
    import videomv.train.mv as mv_module

    seen = []
    real = mv_module.diffusion_loss

    def spy(pred, target, scheduler, timesteps, gamma=None, weight=None):
        seen.append((pred.shape, weight))
        return real(pred, target, scheduler, timesteps, gamma, weight)

    monkeypatch.setattr(mv_module, "diffusion_loss", spy)
    with pytest.raises(ValueError, match="cache_latents"):
        run(tmp_path / "cached", toy_root, "max_steps=1", "object_weight=4", "data.cache_latents=true")
    run(tmp_path, toy_root, "max_steps=1", "object_weight=4", "data.cache_latents=false")
    shape, weight = seen[0]
    assert weight.shape == (shape[0], 1, *shape[2:])
    assert weight.min().item() == pytest.approx(1.0)  # background
    assert 1.0 < weight.max().item() <= 5.0  # the object's positions
    with pytest.raises(ValueError, match="object_weight"):
        tiny_config("object_weight=-1")


def test_input_perturbation_adds_independent_noise_of_scale_gamma():
    from videomv.train.diffusion import perturbed_noise

    noise = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0))
    assert perturbed_noise(noise, 0.0) is noise  # off: the same tensor, no draw
    extra = perturbed_noise(noise, 0.1, torch.Generator().manual_seed(1)) - noise
    assert abs(extra.std().item() - 0.1) < 0.001
    assert abs(torch.corrcoef(torch.stack([extra, noise]))[0, 1].item()) < 0.005
    with pytest.raises(ValueError, match="input_perturbation"):
        perturbed_noise(noise, -0.1)
    with pytest.raises(ValueError, match="input_perturbation"):
        tiny_config("input_perturbation=-1")


def test_timestep_bias_draws_its_share_from_the_noisy_end():
    from videomv.train.diffusion import sample_timesteps

    torch.manual_seed(0)
    plain = torch.randint(0, 1000, (64,))
    torch.manual_seed(0)
    assert torch.equal(sample_timesteps(1000, 64), plain)  # off: the same draw as before the option
    torch.manual_seed(0)
    t = sample_timesteps(1000, 200_000, later_share=0.5, later_from=600)
    assert 0 <= t.min().item() and t.max().item() <= 999
    # half from [600, 1000), half uniform (of which 40 % land there too): 0.5 + 0.5 x 0.4 = 0.7
    assert (t >= 600).float().mean().item() == pytest.approx(0.7, abs=0.005)
    assert (t < 600).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert sample_timesteps(1000, 1000, later_share=1.0, later_from=900).min().item() >= 900
    with pytest.raises(ValueError, match="timestep_bias.share"):
        sample_timesteps(1000, 4, later_share=1.5)
    with pytest.raises(ValueError, match="timestep_bias.start"):
        sample_timesteps(1000, 4, later_share=0.5, later_from=1000)
    with pytest.raises(ValueError, match="timestep_bias.share"):
        tiny_config("timestep_bias.share=-0.1")


def test_timestep_bias_reaches_the_training_step(tmp_path, toy_root, monkeypatch):
    import videomv.train.mv as mv_module

    seen = []
    real = mv_module.diffusion_loss

    def spy(pred, target, scheduler, timesteps, gamma=None, weight=None):
        seen.append(timesteps.clone())
        return real(pred, target, scheduler, timesteps, gamma, weight)

    monkeypatch.setattr(mv_module, "diffusion_loss", spy)
    run(tmp_path, toy_root, "max_steps=3", "timestep_bias.share=1", "timestep_bias.start=950")
    assert len(seen) == 3 and all(t.min().item() >= 950 for t in seen)


def test_lr_scale_moves_each_model_at_its_own_rate_on_adams_first_step():
    from videomv.train.engine import param_groups

    torch.manual_seed(0)
    models = {"unet": torch.nn.Linear(3, 2), "text_encoder": torch.nn.Linear(2, 2)}
    models["unet"].bias.requires_grad_(False)  # frozen parameters stay out of every group
    before = {n: {k: p.detach().clone() for k, p in m.named_parameters()} for n, m in models.items()}
    opt = torch.optim.AdamW(param_groups(models, 1e-2, {"text_encoder": 5.0}), lr=1e-2, weight_decay=0.0)
    sum(m(torch.randn(4, 3 if n == "unet" else 2)).sum() for n, m in models.items()).backward()
    opt.step()
    # Adam's first step moves every element by lr * g / |g| (eps aside): exactly the group's rate
    for name, rate in (("unet", 1e-2), ("text_encoder", 5e-2)):
        for key, p in models[name].named_parameters():
            moved = (p.detach() - before[name][key]).abs()
            expected = torch.full_like(moved, rate) if p.requires_grad else torch.zeros_like(moved)
            torch.testing.assert_close(moved, expected, rtol=1e-5, atol=1e-8)
    plain = param_groups(models, 1e-2, {})  # no scales: the single group runs always had
    assert len(plain) == 1 and plain[0]["lr"] == 1e-2 and len(plain[0]["params"]) == 3
    with pytest.raises(ValueError, match="optimizer.lr_scale: no trainable parameters under 'image_encoder'"):
        param_groups(models, 1e-2, {"image_encoder": 2.0})
    with pytest.raises(ValueError, match="no trainable parameters under 'unet.bias'"):  # frozen
        param_groups(models, 1e-2, {"unet.bias": 2.0})
    with pytest.raises(ValueError, match="optimizer.lr_scale"):
        tiny_config("optimizer.lr_scale={text_encoder: -1}")


def test_lr_scale_of_a_module_takes_its_parameters_out_of_the_models_group():
    from videomv.train.engine import param_groups

    unet = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1)))
    unet.append(torch.nn.ModuleDict({"ray": torch.nn.Linear(1, 1, bias=False), "rays": torch.nn.Linear(1, 1, bias=False)}))
    text = torch.nn.Linear(2, 2)
    groups = param_groups({"unet": unet, "text_encoder": text}, 1e-3,
                          {"unet.1": 10.0, "unet.1.0.weight": 100.0, "unet.2.ray": 5.0, "text_encoder": 2.0})
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == sum(1 for _ in unet.parameters()) + 2  # every parameter in exactly one group
    got = {name: lr_of[id(p)] for name, p in unet.named_parameters()}
    assert got == pytest.approx({"0.weight": 1e-3, "0.bias": 1e-3, "1.0.weight": 1e-1, "1.0.bias": 1e-2,
                                 "1.1.weight": 1e-2, "1.1.bias": 1e-2,
                                 "2.ray.weight": 5e-3, "2.rays.weight": 1e-3})  # keys match whole module names
    assert lr_of[id(text.weight)] == pytest.approx(2e-3)


def test_lr_scale_patterns_name_parameters_across_modules():
    from videomv.train.engine import param_groups

    blocks = torch.nn.ModuleDict({f"b{i}": torch.nn.ModuleDict({"attn2": torch.nn.ModuleDict(
        {"to_q": torch.nn.Linear(2, 2), "to_k": torch.nn.Linear(2, 2), "to_v": torch.nn.Linear(2, 2)})})
        for i in range(2)})
    unet = torch.nn.ModuleDict({"blocks": blocks, "temp_attn2": torch.nn.ModuleDict({"to_q": torch.nn.Linear(2, 2)})})
    groups = param_groups({"unet": unet}, 1e-3, {"unet.blocks.*.attn2.to_[qk]": 10.0, "unet.blocks.b1.attn2.to_q.bias": 3.0})
    got = {name: lr for g in groups for name, p in unet.named_parameters() for lr in [g["lr"]]
           if any(p is q for q in g["params"])}
    assert len(got) == 14  # every parameter in exactly one group
    expected = {n: 1e-3 for n, _ in unet.named_parameters()}
    for i in range(2):
        for proj in ("to_q", "to_k"):
            expected.update({f"blocks.b{i}.attn2.{proj}.weight": 1e-2, f"blocks.b{i}.attn2.{proj}.bias": 1e-2})
    expected["blocks.b1.attn2.to_q.bias"] = 3e-3  # the longer key wins
    assert got == pytest.approx(expected)  # to_v and temp_attn2 stay at the model's rate
    with pytest.raises(ValueError, match=r"no trainable parameters under 'unet.\*.attn3'"):
        param_groups({"unet": unet}, 1e-3, {"unet.*.attn3": 2.0})


def test_cross_attention_gain_must_be_a_positive_number():
    assert tiny_config("unet.cross_attention_gain=2.5").unet.cross_attention_gain == 2.5
    for bad in ("0", "-1"):
        with pytest.raises(ValueError, match="unet.cross_attention_gain"):
            tiny_config(f"unet.cross_attention_gain={bad}")


def test_lr_scale_reaches_the_text_encoder_in_training(tmp_path, toy_root, monkeypatch):
    import videomv.train.engine as engine_module

    made = []
    real = engine_module.param_groups

    def spy(models, lr, lr_scale):
        groups = real(models, lr, lr_scale)
        made.append({name: (g["lr"], {id(p) for p in g["params"]}) for name, g in zip(models, groups)})
        made[-1]["ids"] = {name: {id(p) for p in m.parameters() if p.requires_grad} for name, m in models.items()}
        return groups

    monkeypatch.setattr(engine_module, "param_groups", spy)
    run(tmp_path, toy_root, "max_steps=1", "optimizer.lr_scale={text_encoder: 4}")
    (groups,) = made
    assert groups["unet"][0] == pytest.approx(1e-3) and groups["text_encoder"][0] == pytest.approx(4e-3)
    assert groups["unet"][1] == groups["ids"]["unet"] and groups["text_encoder"][1] == groups["ids"]["text_encoder"]


def test_input_view_excluded_leaves_view_0_out_of_the_loss_by_hand():
    from videomv.train.losses import input_view_excluded

    latents = torch.zeros(1, 4, 3, 2, 2)
    mask = input_view_excluded(latents)
    assert mask.shape == (1, 1, 3, 2, 2) and mask[:, :, 0].sum() == 0 and mask[:, :, 1:].eq(1).all()
    weight = torch.full((1, 1, 3, 2, 2), 2.0)
    weight[0, 0, 1, 0, 0] = 5.0
    combined = input_view_excluded(latents, weight)
    assert combined[0, 0, 0].eq(0).all() and combined[0, 0, 1, 0, 0] == 5.0 and combined[0, 0, 2].eq(2).all()
    with pytest.raises(ValueError, match="at least 2"):
        input_view_excluded(torch.zeros(1, 4, 1, 2, 2))

    scheduler = build_noise_scheduler("t2v_eps")
    t = torch.tensor([10])
    target = torch.zeros(1, 4, 3, 2, 2)
    target[0, :, 0] = 7.0  # any error at view 0 is not counted
    target[0, :, 1, 0, 0] = 1.0  # error 1 at one position of view 1
    pred = torch.zeros_like(target)
    assert diffusion_loss(pred, target, scheduler, t, weight=mask).item() == pytest.approx(4 / 32)


def test_clean_input_view_trains_on_the_image_latent_and_predicts_the_other_views(tmp_path, toy_root, monkeypatch):
    import videomv.train.mv as mv_module

    seen = []
    real_denoise, real_loss = mv_module.denoise, mv_module.diffusion_loss

    def spy_denoise(unet, latents, t, condition, *args, **kwargs):
        inputs = []
        hook = unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
        try:
            out = real_denoise(unet, latents, t, condition, *args, **kwargs)
        finally:
            hook.remove()
        seen.append(("unet", inputs[0], latents.detach().clone(), condition.image))
        return out

    def spy_loss(pred, target, scheduler, timesteps, gamma=None, weight=None):
        seen.append(("loss", weight))
        return real_loss(pred, target, scheduler, timesteps, gamma, weight)

    monkeypatch.setattr(mv_module, "denoise", spy_denoise)
    monkeypatch.setattr(mv_module, "diffusion_loss", spy_loss)
    AcceleratorState._reset_state(True)
    cfg = load_config(REPO / "configs" / "toy_i2mv.yaml",
                      TINY + [f"data.root={toy_root}", "max_steps=1", "image_encoder.init.hidden_size=16",
                              "image_encoder.init.projection_dim=16", "text_encoder.init.num_layers=2",
                              f"output_dir={tmp_path}", "model.clean_input_view=true"], MultiViewConfig)
    try:
        train(cfg, MultiViewTask, prepare=build_configured_world)
    finally:
        AcceleratorState._reset_state(True)
    (_, unet_input, noisy, image), (_, weight) = seen
    assert image.clean_input_view
    assert torch.equal(unet_input[:, :, 0], image.image_latents[:, :, 0].to(unet_input))
    assert torch.equal(unet_input[:, :, 1:], noisy[:, :, 1:])
    assert not torch.equal(noisy[:, :, 0], unet_input[:, :, 0])  # the check can fail
    assert weight[:, :, 0].eq(0).all() and weight[:, :, 1:].eq(1).all()
    with pytest.raises(ValueError, match="clean_input_view is for image"):
        run(tmp_path / "text", toy_root, "max_steps=1", "model.clean_input_view=true")
