"""Stage 2: train the reconstructor on the generator's single-step denoised outputs (paper Sec. 3.3).

Per step, for a batch of objects with all their views (B, F, 3, H, W) and cameras:
  inputs.source = "generator": encode the views with the generator's VAE, pick t in [0, t_max]
      (t_s = 700 in the paper; 1000 = the release's uniform t), noise, one UNet call with the
      caption and cameras -> predicted z0 -> VAE decode: noisy, possibly inconsistent views;
  inputs.source = "ground_truth": the clean renders (pre-training, as LGM was before fine-tuning);
then 4 input views (fixed orthogonal 0/6/12/18 or random) -> Gaussians -> render the supervised
views (all, or N random) -> MSE(rgb) + MSE(alpha) + lambda * LPIPS (real weights only).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from omegaconf import DictConfig

from videomv.data.common import parse_background
from videomv.defaults import IMAGE
from videomv.models.denoise import MultiViewCondition, denoise

from videomv.models.latents import vae_decode, vae_encode

from .datasets import build_multiview_dataset, make_stream, resolve_path
from .engine import Task
from .losses import load_perceptual, photometric_loss, psnr
from .mv import save_grid
from .schema import ReconConfig

def choose_views(num_views: int, count: int, mode: str, generator: torch.Generator) -> list[int]:
    """`count` view indices: "orthogonal" (evenly spread from view 0) or "random" (distinct, random)."""
    if mode == "orthogonal":
        if num_views % count:
            raise ValueError(f"cannot pick {count} evenly spaced views out of {num_views}")
        return list(range(0, num_views, num_views // count))
    if mode == "random":
        return torch.randperm(num_views, generator=generator)[:count].tolist()
    raise ValueError(f"view selection must be 'orthogonal' or 'random', got {mode!r}")


class ReconstructorTask(Task):
    """The task's own generator ``rng`` (input views, supervised views, t and noise; one stream per
    process) is saved with each checkpoint, so a resumed run draws what the uninterrupted one would."""

    schema = ReconConfig

    def __init__(self, cfg: DictConfig, accelerator):
        from videomv.recon import Reconstructor

        self.cfg, self.accelerator = cfg, accelerator
        device = accelerator.device
        rc = cfg.reconstructor
        if rc.get("init_from"):
            self.model = Reconstructor.from_pretrained(resolve_path(rc.init_from)).train()
        else:
            self.model = Reconstructor(rc.get("preset", "tiny"))
        self.background = tuple(parse_background(cfg.data.get("background", "grey")).tolist())
        self.source = cfg.inputs.source
        if self.source not in ("generator", "ground_truth"):
            raise ValueError(f"inputs.source must be 'generator' or 'ground_truth', got {self.source!r}")
        self.t_max = int(cfg.inputs.get("t_max", 700))
        self.generator = None
        self.clean_input_view = False  # an image generator trained with model.clean_input_view
        if self.source == "generator":
            self.generator = self._load_generator(cfg.generator).to(device)
            self.clean_input_view = self._generator_settings(cfg.generator).clean_input_view
        self.lpips_weight = float(cfg.loss.get("lpips", 0.0))
        self.lpips = None
        if self.lpips_weight > 0:
            try:
                self.lpips = load_perceptual(cfg.loss.get("lpips_net", "vgg"), cfg.loss.get("lpips_weights"), device)
            except ValueError as err:
                raise ValueError(f"loss.lpips = {self.lpips_weight} {err}. Set loss.lpips=0 to train without it.") from None
        else:
            accelerator.print("LPIPS term off (loss.lpips = 0): training with MSE(rgb) + MSE(alpha) only")
        with accelerator.main_process_first():
            self.dataset = build_multiview_dataset(cfg.data, "train")
        self.val_dataset = None
        self.rng = torch.Generator().manual_seed(int(cfg.seed) + 1000 * accelerator.process_index)

    @staticmethod
    def _load_generator(gen_cfg: DictConfig):
        from videomv.sampling import I2MVPipeline, T2MVPipeline
        from videomv.sampling.pipeline import dtype_kwargs

        path = resolve_path(gen_cfg.path)
        if path is None or not path.is_dir():
            raise FileNotFoundError(f"generator.path {gen_cfg.get('path')!r} is not a pipeline folder; train "
                                    "stage 1 first (scripts/train_mv.py exports one) or use inputs.source=ground_truth")
        cls = T2MVPipeline if gen_cfg.get("task", "text") == "text" else I2MVPipeline
        pipe = cls.from_pretrained(path, **dtype_kwargs(torch.float32))  # exported folders may store fp16
        pipe.set_progress_bar_config(disable=True)
        for module in (pipe.unet, pipe.vae, pipe.text_encoder):
            module.requires_grad_(False).eval()
        return pipe

    @staticmethod
    def _generator_settings(gen_cfg: DictConfig):
        """The generator's settings when generator.path is a VideoMV model folder, else its task's
        release defaults (a stage-1 run's pipeline folder: the release's sampling)."""
        from videomv.sampling.system import SETTINGS_NAME, VideoMVSettings

        path = resolve_path(gen_cfg.path)
        return VideoMVSettings.read(path) if (path / SETTINGS_NAME).is_file() else VideoMVSettings.for_task(gen_cfg.get("task", "text"))

    def trainable_models(self):
        return {"reconstructor": self.model}

    def rng_state(self):
        return {"rng": self.rng.get_state()}

    def load_rng_state(self, tensors):
        if "rng" in tensors:
            self.rng.set_state(tensors["rng"])

    def make_batches(self, rank, world):
        dl = self.cfg.dataloader
        return make_stream(self.dataset, int(dl.batch_size), int(self.cfg.seed), rank, world, int(dl.num_workers))

    # ------------------------------------------------------------------------------------------ #

    @torch.no_grad()
    def single_step_views(self, batch, views: list[int] | None = None) -> torch.Tensor:
        """The generator's one-step x0 prediction, denoising all views jointly and decoding `views`
        (default all): (B, len(views), 3, H, W) in [0, 1]."""
        from videomv.sampling.ddim import with_known_views, z0_and_eps

        pipe = self.generator
        device = self.accelerator.device
        images = batch["images"].to(device)
        scale = pipe.vae.config.scaling_factor
        latents = vae_encode(pipe.vae, images, scale).float()
        b = latents.shape[0]
        t = torch.randint(0, self.t_max + 1, (b,), generator=self.rng).to(device)
        noise = torch.randn(latents.shape, generator=self.rng).to(device)
        noisy = pipe.scheduler.add_noise(latents, noise, t)
        cameras = batch["cameras"].to(device).float()
        if hasattr(pipe, "image_encoder"):
            first = ((images[:, 0] + 1) / 2).clamp(0, 1)
            cond = replace(pipe.image_conditioner.encode(first, latents.shape[2]),
                           clean_input_view=self.clean_input_view)
            context = pipe.text_conditioner.encode([""] * b, IMAGE.clip_skip)
            condition = MultiViewCondition(context, cameras, image=cond, fps=torch.full((b,), IMAGE.fps, device=device))
        else:
            context = pipe.text_conditioner.encode(list(batch["caption"]))
            condition = MultiViewCondition(context, cameras)
        out = denoise(pipe.unet, noisy, t, condition)
        z0 = torch.stack([z0_and_eps(pipe.scheduler, out[i : i + 1], noisy[i : i + 1], t[i])[0][0] for i in range(b)])
        if self.clean_input_view:  # view 0 was given, not predicted: it is the input, as in sampling
            z0 = with_known_views(z0, cond.input_view_latent)
        if views is not None:
            z0 = z0[:, :, views]
        return ((vae_decode(pipe.vae, z0, scale).float() + 1) / 2).clamp(0, 1)

    def loss(self, batch, models, step):
        from videomv.gaussians import render

        cfg = self.cfg
        device = self.accelerator.device
        target = ((batch["images"].to(device).float() + 1) / 2).clamp(0, 1)  # (B, F, 3, H, W)
        alphas = batch["alphas"].to(device).float()
        cameras = batch["cameras"].to(device).float()
        fovy = float(batch["fovy"][0])
        num_views = target.shape[1]
        views_in = choose_views(num_views, 4, cfg.inputs.get("views", "orthogonal"), self.rng)
        inputs = self.single_step_views(batch, views_in) if self.source == "generator" else target[:, views_in]
        model = models["reconstructor"]
        recon = model.module if hasattr(model, "module") else model
        gaussians = recon.reconstruct(inputs, cameras[:, views_in], fovy=fovy)

        supervise = cfg.loss.get("views", "all")
        h, w = target.shape[-2:]
        terms = {}
        for i, g in enumerate(gaussians):
            idx = list(range(num_views)) if supervise == "all" else \
                torch.randperm(num_views, generator=self.rng)[: int(supervise)].tolist()
            out = render(g, cameras[i, idx], fovy, h, w, self.background)
            for k, v in photometric_loss(out["rgb"], out["alpha"], target[i, idx], alphas[i, idx], self.lpips).items():
                terms[k] = terms.get(k, 0.0) + v / len(gaussians)
        loss = terms["mse_rgb"] + float(cfg.loss.get("alpha", 1.0)) * terms["mse_alpha"] + \
            self.lpips_weight * terms.get("lpips", 0.0)
        return loss, {k: float(v.detach()) for k, v in terms.items()}

    @torch.no_grad()
    def validate(self, step, out_dir: Path, models):
        """Held-out objects: PSNR of renders at all views from the 4 orthogonal ground-truth views,
        and a grid (rows: truth, render) of the first object."""
        from videomv.gaussians import render

        if self.val_dataset is None:
            with self.accelerator.main_process_first():
                self.val_dataset = build_multiview_dataset(self.cfg.data, "val")
        recon = models["reconstructor"]
        recon = recon.module if hasattr(recon, "module") else recon
        scores, grid = [], None
        for k in range(min(int(self.cfg.validation.get("num_objects", 4)), len(self.val_dataset))):
            item = self.val_dataset[k]
            target = ((item["images"].float() + 1) / 2).clamp(0, 1)
            cams = item["cameras"].float()
            views_in = choose_views(len(cams), 4, "orthogonal", self.rng)
            g = recon.reconstruct(target[None, views_in].to(self.accelerator.device),
                                  cams[None, views_in].to(self.accelerator.device), fovy=float(item["fovy"]))[0]
            rgb = render(g, cams.to(g.device), float(item["fovy"]), *target.shape[-2:], self.background)["rgb"].cpu()
            scores.append(sum(psnr(r, t) for r, t in zip(rgb, target)) / len(rgb))
            if grid is None:
                grid = torch.stack([target[::3], rgb.clamp(0, 1)[::3]])
        if grid is not None:
            save_grid(grid, out_dir / "samples" / f"step_{step:06d}.png")
        return {"psnr_all_views": sum(scores) / max(len(scores), 1)}

    def finish(self, out_dir: Path, models):
        recon = models["reconstructor"]
        recon = recon.module if hasattr(recon, "module") else recon
        recon.save_pretrained(out_dir / "reconstructor")
