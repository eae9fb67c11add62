"""Speed of the T2MV pipeline and UNet against diffusers' own, same tiny weights, measured side by side.

    python tools/bench_sampling.py [--channels 32,64,64] [--latent 16] [--views 24] [--steps 10]

Reports medians over interleaved repeats of: one full sample (latents only, and with VAE decoding)
of `T2MVPipeline` vs `TextToVideoSDPipeline`, per denoising step, and one training step
(forward + backward + AdamW) of `T2MVUNet` with cameras vs `UNet3DConditionModel`.
With a VideoMV model folder (default: the embedded toy text model, when present) it also reports
3D-aware over plain sampling with the default schedule, and the wall time of the README's main
command (`scripts/sample.py`, a fresh process, everything included).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, TextToVideoSDPipeline, UNet3DConditionModel
from tqdm.auto import tqdm

from videomv.geometry import camera_vector, orbit_cameras
from videomv.models import T2MVUNet
from videomv.models.conditioning import TextConditioner
from videomv.sampling import T2MVPipeline, text_scheduler
from videomv.sampling.system import VideoMV

REPO = Path(__file__).resolve().parents[1]
MAIN_PROMPT = "a red cube on top of a blue cylinder"


def build(channels: tuple[int, ...], text_dim: int):
    n = len(channels)
    unet_config = dict(
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock3D",) * (n - 1) + ("DownBlock3D",),
        up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (n - 1),
        layers_per_block=2, cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=16,
    )
    torch.manual_seed(0)
    base = UNet3DConditionModel(**unet_config).eval()
    ours = T2MVUNet(**unet_config).eval()
    ours.load_state_dict(base.state_dict(), strict=False)
    vae = AutoencoderKL(block_out_channels=(32, 64, 64), down_block_types=("DownEncoderBlock2D",) * 3,
                        up_block_types=("UpDecoderBlock2D",) * 3, latent_channels=4, norm_num_groups=16,
                        scaling_factor=0.18215).eval()
    text = TextConditioner.tiny(hidden_size=text_dim, projection_dim=text_dim)
    return base, ours, vae, text


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(named_fns: dict, repeats: int, desc: str) -> dict[str, float]:
    """Median seconds of each function over `repeats` rounds after one warm-up each; the order
    alternates between rounds so that neither side always runs first."""
    for fn in named_fns.values():
        fn()
    times = {name: [] for name in named_fns}
    names = list(named_fns)
    for r in tqdm(range(repeats), desc=desc):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(timed(named_fns[name]))
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", default="32,64,64")
    parser.add_argument("--latent", type=int, default=16, help="latent side (image side = 8x with this VAE)")
    parser.add_argument("--views", type=int, default=24)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", type=Path, default=REPO / "data" / "embedded" / "t2mv",
                        help="VideoMV folder for the 3D-aware overhead and the main-command timing")
    parser.add_argument("--aware-repeats", type=int, default=2)
    parser.add_argument("--only-model", action="store_true", help="skip the pipeline/training comparisons")
    args = parser.parse_args()
    if args.only_model:
        torch.set_num_threads(args.threads)
        return model_benchmarks(args)
    torch.set_num_threads(args.threads)
    channels = tuple(int(c) for c in args.channels.split(","))
    base, ours, vae, text = build(channels, text_dim=32)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    size = args.latent * scale

    pipe = T2MVPipeline(vae=vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer, unet=ours,
                        scheduler=text_scheduler())
    ref = TextToVideoSDPipeline(vae=vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer, unet=base,
                                scheduler=text_scheduler())
    ref.set_progress_bar_config(disable=True)
    cameras = orbit_cameras(args.views)
    common = dict(num_inference_steps=args.steps, guidance_scale=9.0, height=size, width=size)

    def ours_sample(output_type):
        return lambda: pipe("a chair", cameras=cameras, seed=0, output_type=output_type, progress=False, **common)

    def ref_sample(output_type):
        return lambda: ref("a chair", num_frames=args.views, generator=torch.Generator().manual_seed(0),
                           output_type=output_type, **common)

    print(f"UNet channels {channels}, {args.views} views, latents {args.latent}x{args.latent} "
          f"(images {size}x{size}), {args.steps} DDIM steps, guidance on, {args.threads} thread(s)")
    latents = interleaved({"ours": ours_sample("latent"), "diffusers": ref_sample("latent")}, args.repeats,
                          "sampling (latents)")
    decoded = interleaved({"ours": ours_sample("pt"), "diffusers": ref_sample("pt")}, args.repeats,
                          "sampling (decoded)")
    for label, m in (("sample, latents only", latents), ("sample, with decoding", decoded)):
        print(f"{label:24s} ours {m['ours']:.3f} s  diffusers {m['diffusers']:.3f} s  "
              f"ratio {m['ours'] / m['diffusers']:.3f}")
    print(f"{'per denoising step':24s} ours {latents['ours'] / args.steps:.3f} s  "
          f"diffusers {latents['diffusers'] / args.steps:.3f} s  ratio {latents['ours'] / latents['diffusers']:.3f}"
          "  (target <= 1.05)")

    # training step: forward + backward + AdamW, batch 1, eps-prediction MSE
    torch.manual_seed(1)
    x = torch.randn(1, 4, args.views, args.latent, args.latent)
    noise = torch.randn_like(x)
    context = torch.randn(1, 77, 32)
    cams = camera_vector(cameras)[None]
    models = {"ours": ours.train(), "diffusers": base.train()}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in models.items()}

    def train_step(name):
        def step():
            model, opt = models[name], optimizers[name]
            extra = {"cameras": cams} if name == "ours" else {}
            loss = (model(x, 500, context, **extra).sample - noise).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return step

    train = interleaved({name: train_step(name) for name in models}, args.repeats, "training steps")
    print(f"{'training step':24s} ours {train['ours']:.3f} s  diffusers {train['diffusers']:.3f} s  "
          f"ratio {train['ours'] / train['diffusers']:.3f}  (target <= 1.10)")
    model_benchmarks(args)


def model_benchmarks(args) -> None:
    """3D-aware vs plain sampling of a VideoMV model (default schedule), and the main command."""
    if not (args.model / "videomv.json").is_file():
        print(f"no VideoMV model at {args.model}: skipping the 3D-aware overhead and main-command timing")
        return
    model = VideoMV.from_pretrained(args.model)
    steps = model.settings.num_inference_steps

    def sample(aware):
        return lambda: model(prompt=MAIN_PROMPT, seed=0, three_d_aware=aware, progress=False)

    m = interleaved({"plain": sample(False), "3d-aware": sample(True)}, args.aware_repeats, "3D-aware overhead")
    print(f"{model.settings.num_views} views, {steps} steps, {args.threads} thread(s), model {args.model}")
    print(f"{'3D-aware vs plain':24s} 3d-aware {m['3d-aware']:.2f} s  plain {m['plain']:.2f} s  "
          f"ratio {m['3d-aware'] / m['plain']:.3f}  (target <= 1.25)")
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, str(REPO / "scripts" / "sample.py"), "--prompt", MAIN_PROMPT,
                   "--model", str(args.model), "--out", str(Path(tmp) / "out")]
        seconds = timed(lambda: subprocess.run(command, check=True, capture_output=True))
    print(f"{'README main command':24s} {seconds:.1f} s wall (fresh process, {steps} steps, 3D-aware; "
          "target <= 60 s)")


if __name__ == "__main__":
    main()
