"""Speed and memory of VideoMV at paper scale on one GPU, with random weights at the real configs.

    python tools/bench_gpu.py --out bench_gpu.json [--sections sample,train] [--budget-s 540]
    python tools/bench_gpu.py --tiny --out /tmp/bench_tiny.json     # every section, tiny configs, CPU

Models: the camera UNets at ModelScope-T2V's (T2MVUNet) and I2VGen-XL's (I2MVUNet) configs, the
ModelScope VAE, OpenCLIP ViT-H/14-sized text and image encoders, LGM `big`; 256x256 views, 24 views,
50 DDIM steps, classifier-free guidance batched. No weights are needed: speed does not depend on them.

Sections (each guarded: a failure is recorded and the others still run; --budget-s skips a section
whose estimated cost no longer fits; the JSON is rewritten after every section):
  flops        FLOPs of each part at the scale's configs, counted on the meta device (no GPU needed:
               `--sections flops` runs the full-scale count anywhere)
  peak         measured dense matmul rate (fp16, bf16): the ceiling for "fraction of peak"
  sample       seconds per sample, text and image task, plain / 3D-aware (both branches, guided),
               per dtype; peak memory; FLOPs per sample (FlopCounterMode), achieved TFLOP/s, fraction
  diffusers    T2MVPipeline against diffusers' TextToVideoSDPipeline on the same UNet weights
  aware_step   one 3D-aware step alone: decode 4 views, LGM forward, render all views, encode them
  train        one stage-1 training step (UNet forward + backward + AdamW, fp16 autocast, from cached
               latents), batch per GPU, 24 frames, gradient checkpointing off/on: samples/s, memory
  recon_train  one stage-2 step: LGM forward (bf16 autocast), render all views, MSE, backward, AdamW
  render       Gaussian renderers, forward and forward+backward: the tiled PyTorch backend,
               diff-gaussian-rasterization (when importable), gsplat (when it builds; build timed apart)

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions, attention), so
"achieved TFLOP/s" is comparable across GPUs; the reconstructor runs in float32, as
`VideoMV.from_pretrained` loads it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # random weights: nothing is downloaded, nothing is asked for
REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from videomv.io import atomic_write_text  # noqa: E402

SECTIONS = ("flops", "peak", "sample", "diffusers", "aware_step", "train", "recon_train", "render")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
PROMPT = "a red cube on top of a blue cylinder"

# ModelScope-T2V's VAE (Stable Diffusion's AutoencoderKL).
MODELSCOPE_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2, norm_num_groups=32, sample_size=256, scaling_factor=0.18215,
)
# OpenCLIP ViT-H/14 text tower as the release uses it (23 of 24 layers for the text task).
VIT_H_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                  projection_dim=1024, hidden_act="gelu")
VIT_H_VISION = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                    projection_dim=1024, image_size=224, patch_size=14, hidden_act="gelu")
TINY_UNET = dict(block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                 up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), layers_per_block=1, norm_num_groups=8,
                 cross_attention_dim=32, attention_head_dim=8)


@dataclass
class Scale:
    """Everything that differs between the paper-scale run and the tiny CPU run."""

    device: str
    resolution: int
    views: int
    steps: int
    unet: dict  # T2MVUNet / I2MVUNet keyword arguments ({}: the full-scale defaults)
    vae: dict
    text_encoder: dict  # CLIPTextConfig fields
    image_encoder: dict  # CLIPVisionConfig fields
    reconstructor: str  # preset
    train_batch: dict  # per task, per GPU
    recon_batch: int
    matmul_size: int
    gaussians: tuple
    render_sizes: tuple
    render_views: int
    repeats: int  # timed runs per case
    warmup: bool  # one untimed run first
    cost_s: dict = field(default_factory=dict)  # estimated seconds per section, for --budget-s


FULL = Scale(
    device="cuda", resolution=256, views=24, steps=50, unet={}, vae=MODELSCOPE_VAE, text_encoder=VIT_H_TEXT,
    image_encoder=VIT_H_VISION, reconstructor="big",
    train_batch={"text": 4, "image": 8},  # paper: batch 32 on 8 GPUs (text); release: 8 per GPU (image)
    recon_batch=2, matmul_size=8192, gaussians=(16384, 65536), render_sizes=(256, 512), render_views=4,
    repeats=2, warmup=True,
    cost_s=dict(flops=15, peak=10, sample=240, diffusers=60, aware_step=30, train=60, recon_train=40, render=90),
)
TINY = Scale(
    device="cpu", resolution=32, views=8, steps=3, unet=TINY_UNET,
    vae=dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
             down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
             layers_per_block=1, norm_num_groups=8, sample_size=32),
    text_encoder=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      projection_dim=32),
    image_encoder=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       projection_dim=32, image_size=32, patch_size=8),
    reconstructor="tiny", train_batch={"text": 1, "image": 1}, recon_batch=1, matmul_size=128,
    gaussians=(256, 1024), render_sizes=(32, 48), render_views=2, repeats=1, warmup=False,
    cost_s=dict(flops=1, peak=1, sample=5, diffusers=2, aware_step=1, train=2, recon_train=1, render=2),
)


# ---------------------------------------------------------------------------------------------- #
# measuring
# ---------------------------------------------------------------------------------------------- #


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device, repeats: int, warmup: bool = True) -> float:
    """Median wall seconds of `fn` over `repeats` runs after one warm-up run (or none)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_cpu_attention() -> None:
    """FlopCounterMode knows the CUDA attention kernels (flash, efficient, cuDNN) but not the CPU
    flash kernel that SDPA uses on the CPU, whose attention would go uncounted: give it the
    flash kernel's formula (same arguments, same arithmetic)."""
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    flash = aten._scaled_dot_product_flash_attention
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu") and flash in flop_registry:
        flop_registry.setdefault(aten._scaled_dot_product_flash_attention_for_cpu, flop_registry[flash])


def timed(fn, scale: Scale, args) -> float:
    """`seconds` with the run's repeats (--repeats, else the scale's) and the scale's warm-up."""
    return seconds(fn, torch.device(scale.device), args.repeats or scale.repeats, scale.warmup)


def flops_of(fn) -> int:
    count_cpu_attention()
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class PeakMemory:
    """Peak GPU memory (GiB) allocated inside the block; None on CPU."""

    def __init__(self, device: torch.device):
        self.device, self.gib = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda" and exc[0] is None:
            sync(self.device)
            self.gib = round(torch.cuda.max_memory_allocated(self.device) / 2**30, 2)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------- #
# models (random weights, built on the target device)
# ---------------------------------------------------------------------------------------------- #


def text_conditioner(scale: Scale, layers: int | None = None):
    from transformers import CLIPTextConfig, CLIPTextModel

    from videomv.models.conditioning import TextConditioner, bundled_clip_tokenizer

    fields = dict(scale.text_encoder)
    if layers is not None:
        fields["num_hidden_layers"] = layers
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                            pad_token_id=0, **fields)
    return TextConditioner(bundled_clip_tokenizer(), CLIPTextModel(config).eval())


def build_system(scale: Scale, task: str, dtype: torch.dtype, with_reconstructor: bool = True):
    """A random-weight VideoMV at `scale`: the pipeline in `dtype`, the reconstructor in float32."""
    from diffusers import AutoencoderKL
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from videomv.models import I2MVUNet, T2MVUNet
    from videomv.recon import Reconstructor
    from videomv.sampling import I2MVPipeline, T2MVPipeline, image_scheduler, text_scheduler
    from videomv.sampling.system import VideoMV

    device = torch.device(scale.device)
    torch.manual_seed(0)
    with device:
        vae = AutoencoderKL(**scale.vae).eval()
        if task == "text":
            text = text_conditioner(scale)
            unet = T2MVUNet(**scale.unet).eval()
            pipe = T2MVPipeline(vae=vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer, unet=unet,
                                scheduler=text_scheduler())
        else:
            # the image pipeline takes the penultimate layer (clip_skip 1): the full 24-layer tower
            text = text_conditioner(scale, scale.text_encoder["num_hidden_layers"] + 1)
            unet = I2MVUNet(**scale.unet).eval()
            size = scale.image_encoder["image_size"]
            pipe = I2MVPipeline(
                vae=vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer,
                image_encoder=CLIPVisionModelWithProjection(CLIPVisionConfig(**scale.image_encoder)).eval(),
                feature_extractor=CLIPImageProcessor(crop_size={"height": size, "width": size},
                                                     size={"shortest_edge": size}),
                unet=unet, scheduler=image_scheduler())
        recon = Reconstructor(scale.reconstructor).eval() if with_reconstructor else None
    pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    guard_decoding(pipe)
    settings = dict(resolution=scale.resolution, num_inference_steps=scale.steps, num_views=scale.views)
    return VideoMV.from_parts(pipeline=pipe, reconstructor=recon, settings=settings)


def guard_decoding(pipe) -> None:
    """Random weights in half precision can decode to NaN, which the reconstructor rightly rejects;
    map NaN to grey (one elementwise pass over the decoded views: no measurable cost)."""
    decode = pipe.decode_latents
    pipe.decode_latents = lambda latents, decode_chunk_size=None: torch.nan_to_num(
        decode(latents, decode_chunk_size), nan=0.5)


def sample_call(model, scale: Scale, mode: str, image, steps: int | None = None, aware_steps=None):
    """One sample: mode "plain", "both" or "guided" (3D-aware with that branch setting)."""
    kwargs = dict(seed=0, progress=False, three_d_aware=mode != "plain", num_inference_steps=steps,
                  aware_steps=aware_steps)
    if mode != "plain":
        kwargs["branches"] = mode
    if model.settings.task == "text":
        return lambda: model(prompt=PROMPT, **kwargs)
    return lambda: model(image=image, **kwargs)


# ---------------------------------------------------------------------------------------------- #
# sections: each returns a list of rows (dicts of numbers and labels)
# ---------------------------------------------------------------------------------------------- #


def section_flops(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    """FLOPs of one CFG-batched UNet step, the VAE over all views, the LGM forward and the text
    encoder, counted on the meta device, and what they make per sample (plain and 3D-aware)."""
    from diffusers import AutoencoderKL

    from videomv.models import I2MVUNet, T2MVUNet
    from videomv.recon import Reconstructor
    from videomv.sampling.aware import aware_step_indices

    views, latent = scale.views, scale.resolution // 2 ** (len(scale.vae["block_out_channels"]) - 1)
    with torch.device("meta"):
        vae = AutoencoderKL(**scale.vae)
        lgm = Reconstructor(scale.reconstructor)
        text = text_conditioner(scale).text_encoder
        width = T2MVUNet(**scale.unet).config.cross_attention_dim
        x = torch.empty(2, 4, views, latent, latent)
        context, cameras, t = torch.empty(2, 77, width), torch.empty(2, views, 16), torch.tensor([981, 981])
        lgm_size = lgm.config.input_size
        parts = {
            "text UNet step (CFG batch 2)": lambda: T2MVUNet(**scale.unet)(x, t, context, cameras=cameras),
            "image UNet step (CFG batch 2)": lambda: I2MVUNet(**scale.unet)(
                x, t, 8, image_latents=torch.empty_like(x), image_embeddings=torch.empty(2, 1, width),
                encoder_hidden_states=context, cameras=cameras),
            f"VAE decode {views} views": lambda: vae.decode(torch.empty(views, 4, latent, latent)),
            "VAE decode 4 views": lambda: vae.decode(torch.empty(4, 4, latent, latent)),
            f"VAE encode {views} views": lambda: vae.encode(torch.empty(views, 3, scale.resolution, scale.resolution)),
            "LGM forward (4 views)": lambda: lgm.forward_splatter(torch.empty(1, 4, 9, lgm_size, lgm_size)),
            "text encoder (2 prompts)": lambda: text(torch.zeros(2, 77, dtype=torch.long)),
        }
        counts = {case: flops_of(fn) for case, fn in parts.items()}
    rows = [dict(case=case, tflop=f / 1e12) for case, f in counts.items()]
    # one branch of a 3D-aware step: decode 4 views, LGM, (render: not counted), encode every view
    branch = counts["VAE decode 4 views"] + counts["LGM forward (4 views)"] + counts[f"VAE encode {views} views"]
    # a sample as `VideoMV` makes it: text, the steps, decoding every view, the final reconstruction
    plain = scale.steps * counts["text UNet step (CFG batch 2)"] + counts[f"VAE decode {views} views"] + \
        counts["text encoder (2 prompts)"] + counts["LGM forward (4 views)"]
    recons = len(aware_step_indices(scale.steps))
    rows.append(dict(case=f"text sample, plain, {scale.steps} steps", tflop=plain / 1e12))
    for mode, branches in (("both", 2), ("guided", 1)):
        aware = plain + recons * branches * branch
        rows.append(dict(case=f"text sample, 3D-aware {mode} ({recons} reconstructions)", tflop=aware / 1e12,
                         over_plain=aware / plain))
    return rows


def section_peak(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    device = torch.device(scale.device)
    n = scale.matmul_size
    rows = []
    for name in args.dtypes:
        a = torch.randn(n, n, device=device, dtype=DTYPES[name])
        b = torch.randn(n, n, device=device, dtype=DTYPES[name])
        s = seconds(lambda: [a @ b for _ in range(10)], device, 3) / 10
        rows.append(dict(case=f"matmul {n}^3 {name}", seconds=s, tflops=2 * n**3 / s / 1e12))
    return rows


def peak_tflops(results: dict, dtype_name: str, args) -> float | None:
    """The ceiling for "fraction of peak": --peak-tflops, else the measured matmul rate."""
    if args.peak_tflops:
        return args.peak_tflops
    for row in results["sections"].get("peak", {}).get("rows", []):
        if row["case"].endswith(dtype_name):
            return row["tflops"]
    return None


def section_sample(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    from videomv.sampling.aware import aware_step_indices

    device = torch.device(scale.device)
    image = torch.rand(3, scale.resolution, scale.resolution)
    schedule = aware_step_indices(scale.steps)
    rows = []
    for task in args.tasks:
        for name in args.dtypes:
            model = build_system(scale, task, DTYPES[name])
            # FLOPs per sample: 1- and 2-step samples give the per-step and the fixed part; a 1-step
            # 3D-aware sample adds one reconstruction (both branches or the guided one)
            one = flops_of(sample_call(model, scale, "plain", image, steps=1))
            per_step = flops_of(sample_call(model, scale, "plain", image, steps=2)) - one
            plain_flops = one + (scale.steps - 1) * per_step
            for mode in ("plain", "both", "guided"):
                if budget.left() <= 0:
                    rows.append(dict(case=f"{task} {mode} {name}", skipped="--budget-s spent"))
                    continue
                flops = plain_flops
                if mode != "plain":
                    aware_one = flops_of(sample_call(model, scale, mode, image, steps=1, aware_steps=[0]))
                    flops += len(schedule) * (aware_one - one)
                with PeakMemory(device) as memory:
                    s = timed(sample_call(model, scale, mode, image), scale, args)
                peak = peak_tflops(results, name, args)
                achieved = flops / s / 1e12
                rows.append(dict(case=f"{task} {mode} {name}", seconds=s, peak_gib=memory.gib,
                                 tflop_per_sample=flops / 1e12, tflops=achieved,
                                 fraction_of_peak=None if peak is None else achieved / peak,
                                 aware_steps=schedule if mode != "plain" else []))
            del model
            free_memory()
    return rows


def section_diffusers(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    """Same UNet weights in diffusers' UNet3DConditionModel (the camera branch left out)."""
    from diffusers import TextToVideoSDPipeline, UNet3DConditionModel

    from videomv.geometry import orbit_cameras
    from videomv.models.camera_unet import MULTIVIEW_CONFIG_KEYS
    from videomv.sampling import text_scheduler

    name = args.dtypes[0]
    model = build_system(scale, "text", DTYPES[name], with_reconstructor=False)
    pipe = model.pipeline
    config = {k: v for k, v in pipe.unet.config.items() if not k.startswith("_") and k not in MULTIVIEW_CONFIG_KEYS}
    with torch.device("meta"):
        base = UNet3DConditionModel(**config)
    weights = {k: v for k, v in pipe.unet.state_dict().items() if not k.startswith("camera_embedding.")}
    base.load_state_dict(weights, assign=True)  # shares the tensors: strict, so every weight is the same
    ref = TextToVideoSDPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                unet=base.eval(), scheduler=text_scheduler())
    ref.set_progress_bar_config(disable=True)
    cameras = orbit_cameras(scale.views)
    common = dict(num_inference_steps=scale.steps, guidance_scale=model.settings.guidance_scale,
                  height=scale.resolution, width=scale.resolution)
    rows = []
    for output in ("latent", "pt"):
        ours = timed(lambda: pipe(PROMPT, cameras=cameras, seed=0, output_type=output, progress=False, **common),
                     scale, args)
        theirs = timed(lambda: ref(PROMPT, num_frames=scale.views, generator=torch.Generator().manual_seed(0),
                                   output_type=output, **common), scale, args)
        rows.append(dict(case=f"text plain {name} ({'latents' if output == 'latent' else 'decoded'})",
                         ours_s=ours, diffusers_s=theirs, ratio=ours / theirs))
    return rows


def section_aware_step(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    from videomv.sampling.aware import ReconstructionHook, find_orthogonal_views

    device = torch.device(scale.device)
    name = args.dtypes[0]
    model = build_system(scale, "text", DTYPES[name])
    s = model.settings
    cameras = s.reconstructor_cameras(model.default_cameras()[None])
    hook = ReconstructionHook(model.reconstructor, model.decode, model.encode, cameras, s.fovy, s.background,
                              steps=[0], input_views=find_orthogonal_views(cameras[0]))
    latent = scale.resolution // model.pipeline.vae_scale_factor
    z0 = torch.randn(1, 4, scale.views, latent, latent, device=device, dtype=DTYPES[name])
    views = hook.decode(z0[:, :, hook.input_views])
    gaussians = hook.reconstruct(views)
    renders = hook.render_views(gaussians, scale.resolution, scale.resolution)
    parts = {
        "decode 4 views": lambda: hook.decode(z0[:, :, hook.input_views]),
        "LGM forward": lambda: hook.reconstruct(views),
        f"render {scale.views} views": lambda: hook.render_views(gaussians, scale.resolution, scale.resolution),
        f"encode {scale.views} views": lambda: hook.encode(renders),
        "whole step (one branch)": lambda: hook.reconstructed_z0(z0),
    }
    rows = []
    for case, fn in parts.items():
        with PeakMemory(device) as memory:
            t = timed(fn, scale, args)
        rows.append(dict(case=f"{case} {name}", seconds=t, peak_gib=memory.gib))
    return rows


def train_step_case(scale: Scale, task: str, batch: int, checkpointing: bool, repeats: int) -> dict:
    """Time one stage-1 step from cached latents (the noisy input is latents + noise: the schedule
    does not change the arithmetic)."""
    from videomv.geometry import camera_vector, orbit_cameras
    from videomv.models import I2MVUNet, MultiViewCondition, T2MVUNet, denoise
    from videomv.models.conditioning import ImageConditioning

    device = torch.device(scale.device)
    latent = scale.resolution // 2 ** (len(scale.vae["block_out_channels"]) - 1)
    torch.manual_seed(0)
    with device:
        unet = (T2MVUNet if task == "text" else I2MVUNet)(**scale.unet).train()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    width = unet.config.cross_attention_dim
    latents = torch.randn(batch, 4, scale.views, latent, latent, device=device)
    noise = torch.randn_like(latents)
    t = torch.randint(0, 1000, (batch,), device=device)
    cameras = camera_vector(orbit_cameras(scale.views))[None].expand(batch, -1, -1).to(device)
    text = torch.randn(batch, 77, width, device=device)
    condition = MultiViewCondition(text, cameras)
    if task == "image":
        image = ImageConditioning(torch.randn(batch, 1, width, device=device), latents.clone())
        condition = MultiViewCondition(text, cameras, image=image, fps=torch.full((batch,), 8, device=device))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=3e-5, weight_decay=0.0)
    scaler = torch.amp.GradScaler(device.type)

    def step():
        with torch.autocast(device.type, dtype=torch.float16):
            out = denoise(unet, latents + noise, t, condition)
        loss = (out.float() - noise).square().mean()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    with PeakMemory(device) as memory:
        s = seconds(step, device, repeats, scale.warmup)
    return dict(seconds=s, samples_per_s=batch / s, peak_gib=memory.gib,
                params_m=sum(p.numel() for p in unet.parameters()) / 1e6)


def section_train(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    rows = []
    for task in args.tasks:
        batch = scale.train_batch[task]
        for checkpointing in (False, True):
            case = f"{task} batch {batch} x {scale.views} frames fp16 checkpointing {'on' if checkpointing else 'off'}"
            if budget.left() <= 0:
                rows.append(dict(case=case, skipped="--budget-s spent"))
                continue
            try:
                rows.append(dict(case=case, **train_step_case(scale, task, batch, checkpointing,
                                                              args.repeats or scale.repeats)))
            except torch.cuda.OutOfMemoryError:  # the other cases still run
                rows.append(dict(case=case, failed="out of GPU memory"))
            free_memory()
    return rows


def section_recon_train(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    import torch.nn.functional as F

    from videomv.gaussians import render
    from videomv.geometry import orbit_cameras
    from videomv.recon import Reconstructor
    from videomv.sampling.aware import find_orthogonal_views

    device = torch.device(scale.device)
    torch.manual_seed(0)
    with device:
        model = Reconstructor(scale.reconstructor).train()
    batch, size = scale.recon_batch, scale.resolution
    cameras = orbit_cameras(scale.views, elevation=15.0, radius=1.5).to(device)
    inputs = find_orthogonal_views(cameras.cpu())
    images = torch.rand(batch, scale.views, 3, size, size, device=device)
    alphas = torch.rand(batch, scale.views, 1, size, size, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.05)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32  # LGM trains in bf16

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            gaussians = model.reconstruct(images[:, inputs], cameras[inputs].expand(batch, -1, -1, -1),
                                          fovy=model.config.fovy)
        loss = 0.0
        for i, g in enumerate(gaussians):
            out = render(g, cameras, model.config.fovy, size, size, (0.5, 0.5, 0.5))
            loss = loss + F.mse_loss(out["rgb"], images[i]) + F.mse_loss(out["alpha"], alphas[i])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with PeakMemory(device) as memory:
        s = timed(step, scale, args)
    return [dict(case=f"{scale.reconstructor} batch {batch}, {scale.views} views at {size}^2, "
                      f"{model.config.num_gaussians} Gaussians each", seconds=s, samples_per_s=batch / s,
                 peak_gib=memory.gib)]


def random_gaussians(n: int, device: torch.device):
    from videomv.gaussians import GaussianSet

    g = torch.Generator().manual_seed(n)
    means = (torch.rand(n, 3, generator=g) * 2 - 1) * 0.6
    rotations = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1)
    return GaussianSet(means=means.to(device), scales=(0.005 + 0.02 * torch.rand(n, 3, generator=g)).to(device),
                       rotations=rotations.to(device), opacities=(0.2 + 0.6 * torch.rand(n, 1, generator=g)).to(device),
                       colors=torch.rand(n, 3, generator=g).to(device))


def kill_session(sid: int) -> None:
    """Kill every process of session `sid` (a child started with start_new_session): ninja runs
    each compiler job in a process group of its own, so killing the child's group is not enough."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    os.kill(int(entry.name), signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def gsplat_ready(budget: "Budget") -> tuple[bool, str, float]:
    """gsplat compiles its CUDA code on first use: build it in a child process under a time limit
    (what the budget leaves, at most 300 s) so a slow or failing build cannot stall the run; only
    for this GPU's architecture unless TORCH_CUDA_ARCH_LIST says otherwise."""
    try:
        import gsplat  # noqa: F401
    except ImportError as err:
        return False, f"not importable ({err})", 0.0
    limit = max(1.0, min(300.0, budget.left()))
    major, minor = torch.cuda.get_device_capability()
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", f"{major}.{minor}")  # the child and this process alike
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", "from gsplat.cuda._backend import _C; assert _C is not None"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = child.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        kill_session(child.pid)
        child.communicate()
        return False, f"CUDA build did not finish within {limit:.0f} s", time.perf_counter() - start
    if child.returncode != 0:
        tail = output.strip().splitlines()[-3:]
        return False, "CUDA build failed: " + " | ".join(tail), time.perf_counter() - start
    return True, "", time.perf_counter() - start


def gsplat_render(gaussians, c2w, fovy, height, width, background):
    """Render with gsplat's CUDA `rasterization` (OpenCV world-to-camera matrices, pinhole K)."""
    from gsplat import rasterization

    from videomv.gaussians.render_torch import focal_lengths, opencv_world_to_camera

    fx, fy, cx, cy = focal_lengths(fovy, height, width)
    ks = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], device=c2w.device).repeat(len(c2w), 1, 1)
    colors, alphas, _ = rasterization(
        gaussians.means, gaussians.rotations, gaussians.scales, gaussians.opacities[:, 0], gaussians.colors,
        opencv_world_to_camera(c2w), ks, width, height, backgrounds=background.repeat(len(c2w), 1))
    return {"rgb": colors.permute(0, 3, 1, 2), "alpha": alphas.permute(0, 3, 1, 2)}


def section_render(scale: Scale, args, results, budget: "Budget") -> list[dict]:
    from videomv.gaussians import GaussianSet, render
    from videomv.gaussians import render_cuda
    from videomv.geometry import orbit_cameras

    device = torch.device(scale.device)
    cameras = orbit_cameras(scale.render_views, elevation=15.0, radius=2.0).to(device)
    background = torch.full((3,), 0.5, device=device)
    backends = {}
    rows = []
    for backend in args.render_backends:
        if backend == "torch":
            backends["torch"] = lambda g, c, h, w: render(g, c, 49.1, h, w, background, backend="torch")
        elif backend == "cuda":
            if device.type == "cuda" and render_cuda.is_available():
                backends["cuda"] = lambda g, c, h, w: render(g, c, 49.1, h, w, background, backend="cuda")
            else:
                rows.append(dict(case="diff-gaussian-rasterization", skipped="needs the package and a CUDA device"))
        elif backend == "gsplat":
            if device.type != "cuda":
                rows.append(dict(case="gsplat", skipped="needs a CUDA device"))
                continue
            ok, why, build_s = gsplat_ready(budget)
            rows.append(dict(case="gsplat CUDA build", seconds=build_s, **({} if ok else {"skipped": why})))
            if ok:
                backends["gsplat"] = lambda g, c, h, w: gsplat_render(g, c, 49.1, h, w, background)
        else:
            raise ValueError(f"--render-backends: unknown backend {backend!r}; expected torch, cuda or gsplat")
    for n in scale.gaussians:
        base = random_gaussians(n, device)
        for size in scale.render_sizes:
            reference = None
            for name, fn in backends.items():
                def forward():
                    with torch.no_grad():
                        return fn(base, cameras, size, size)

                leaves = {k: getattr(base, k).clone().requires_grad_() for k in
                          ("means", "scales", "rotations", "opacities", "colors")}

                def backward():
                    out = fn(GaussianSet(**leaves), cameras, size, size)
                    (out["rgb"].mean() + out["alpha"].mean()).backward()

                case = f"{name} {n} Gaussians {size}^2 x {scale.render_views} views"
                try:
                    with PeakMemory(device) as memory:
                        fwd = timed(forward, scale, args)
                        both = timed(backward, scale, args)
                except torch.cuda.OutOfMemoryError:  # the other cases still run
                    rows.append(dict(case=case, failed="out of GPU memory"))
                    free_memory()
                    continue
                rgb = forward()["rgb"].float()
                reference = rgb if reference is None else reference
                rows.append(dict(case=case, forward_ms=fwd * 1e3, forward_backward_ms=both * 1e3, peak_gib=memory.gib,
                                 max_abs_diff_vs_first=float((rgb - reference).abs().max())))
    return rows


# ---------------------------------------------------------------------------------------------- #
# running, reporting
# ---------------------------------------------------------------------------------------------- #


class Budget:
    def __init__(self, seconds_total: float):
        self.start, self.total = time.perf_counter(), seconds_total

    def left(self) -> float:
        return self.total - (time.perf_counter() - self.start)


def environment(scale: Scale, args) -> dict:
    import diffusers
    import transformers

    device = scale.device if scale.device == "cpu" or torch.cuda.is_available() else "none (FLOP count only)"
    info = dict(date=datetime.now(timezone.utc).isoformat(timespec="seconds"), tiny=args.tiny, device=device,
                python=platform.python_version(), torch=torch.__version__, diffusers=diffusers.__version__,
                transformers=transformers.__version__, resolution=scale.resolution, views=scale.views,
                steps=scale.steps, dtypes=args.dtypes, threads=torch.get_num_threads())
    if scale.device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, multiprocessors=props.multi_processor_count)
    else:
        info.update(cpu=platform.processor() or platform.machine())
    return info


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def print_table(results: dict) -> None:
    print(f"\n{'section':12s} {'case':58s} measurements")
    for name, section in results["sections"].items():
        if section["status"] != "ok":
            print(f"{name:12s} {section['status'].upper()}: {section.get('reason', '')}")
            continue
        for row in section["rows"]:
            rest = "  ".join(f"{k}={format_value(v)}" for k, v in row.items() if k != "case")
            print(f"{name:12s} {row['case']:58s} {rest}")


def run(args) -> dict:
    scale = TINY if args.tiny else FULL
    if scale.device == "cuda" and not torch.cuda.is_available() and args.sections != ["flops"]:
        raise SystemExit("bench_gpu: no CUDA device; use --tiny for the CPU run of every section "
                         "(or --sections flops for the full-scale FLOP count)")
    if args.threads:
        torch.set_num_threads(args.threads)
    budget = Budget(args.budget_s)
    results = {"environment": environment(scale, args), "scale": asdict(scale), "sections": {}}
    functions = {name: globals()[f"section_{name}"] for name in SECTIONS}
    for name in args.sections:
        cost = scale.cost_s.get(name, 0)
        if cost > budget.left():
            results["sections"][name] = dict(status="skipped", reason=f"estimated {cost} s, {budget.left():.0f} s left")
        else:
            start = time.perf_counter()
            print(f"[{name}] ...", flush=True)
            try:
                fn = functions[name]
                rows = fn(scale, args, results, budget)
                results["sections"][name] = dict(status="ok", rows=rows)
            except Exception as err:  # one section's failure must not end the run
                results["sections"][name] = dict(status="failed", reason=f"{type(err).__name__}: {err}",
                                                 traceback=traceback.format_exc())
                print(traceback.format_exc(), file=sys.stderr)
            results["sections"][name]["wall_s"] = round(time.perf_counter() - start, 2)
            free_memory()
        if args.out:
            atomic_write_text(args.out, json.dumps(results, indent=2) + "\n")
    return results


def parse_list(text: str, allowed, flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in items if x not in allowed]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{flag}: unknown {bad or 'empty list'}; choose from {', '.join(allowed)}")
    return items


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="JSON file to write (rewritten after every section)")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        type=lambda s: parse_list(s, SECTIONS, "--sections"), help="comma-separated subset")
    parser.add_argument("--tasks", default="text,image", type=lambda s: parse_list(s, ("text", "image"), "--tasks"))
    parser.add_argument("--dtypes", default="fp16,bf16", type=lambda s: parse_list(s, tuple(DTYPES), "--dtypes"))
    parser.add_argument("--render-backends", default="torch,cuda,gsplat",
                        type=lambda s: parse_list(s, ("torch", "cuda", "gsplat"), "--render-backends"))
    parser.add_argument("--budget-s", type=float, default=540.0,
                        help="skip sections whose estimated cost exceeds the time left")
    parser.add_argument("--repeats", type=int, default=0, help="timed runs per case (0: the scale's default)")
    parser.add_argument("--peak-tflops", type=float, default=0.0,
                        help="ceiling for 'fraction of peak' (default: the measured matmul rate of the 'peak' section)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--tiny", action="store_true", help="every section at tiny configs on the CPU")
    args = parser.parse_args(argv)
    results = run(args)
    print_table(results)
    if args.out:
        print(f"\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
