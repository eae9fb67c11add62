"""Toy VAE: a tiny ``AutoencoderKL`` trained on toy renders (reconstruction + small KL).

Options: ``vae.path`` starts from a saved VAE instead of ``vae.init``; ``train_encoder: false``
trains the decoder only, so the latent space (and every diffusion model trained on it) stays
valid; ``object_weight`` w weighs each pixel's reconstruction error by 1 + w x alpha, so small
coloured parts are not outweighed by the background; ``latent_noise`` s adds smooth Gaussian noise
(`smooth_noise`, varying over ``latent_noise_cell`` latent pixels) of s times the batch's latent std
to every latent the decoder reads, so the encoder has to keep what tells colours apart further
apart than a diffusion model's error in that latent space; ``backgrounds`` (names or rgb triples)
re-composites each training image on one of them at random, using the alpha the dataset returns,
and validation reports PSNR per background.

At the end the latent scaling factor (1 / std of latents on training views) is written into the
model config, and the model is saved with ``save_pretrained`` (safetensors) to ``<output_dir>/vae``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from omegaconf import DictConfig, OmegaConf

from videomv.data.common import parse_background
from videomv.io import atomic_directory
from videomv.models.latents import smooth_noise

from .config import resolve_path
from .datasets import build_multiview_dataset, make_stream
from .engine import Task
from .losses import kl_divergence, psnr, reconstruction_loss
from .schema import VAEConfig


@torch.no_grad()
def latent_std(vae: AutoencoderKL, dataset, max_objects: int = 32, device="cpu") -> float:
    generator = torch.Generator(device=device).manual_seed(0)
    zs = []
    for i in range(min(max_objects, len(dataset))):
        dist = vae.encode(dataset[i]["images"].to(device)).latent_dist
        zs.append(dist.sample(generator=generator))
    return float(torch.cat(zs).std())


def recomposite(images: torch.Tensor, alphas: torch.Tensor, old, new: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] composited on `old` -> on `new` (per image: (N, 3) or (3,)), exactly, as
    compositing and resizing are both linear."""
    shift = (new.to(images) - old.to(images)).reshape(-1, 3, 1, 1) * 2  # [0, 1] -> [-1, 1] units
    return images + shift * (1 - alphas)


class Autoencode(torch.nn.Module):
    """``x → (reconstruction, posterior mean, posterior logvar)`` in one forward, so DDP sees a
    single forward call (``AutoencoderKL.forward`` does not return the posterior)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor, latent_noise: float = 0.0, cell: int = 4):
        posterior = self.vae.encode(x).latent_dist
        z = posterior.sample()
        if latent_noise:
            # Relative to the batch's own spread (not detached), so scaling every latent up or down
            # cannot outgrow the noise: only how far apart the encoder keeps things counts.
            z = z + latent_noise * z.std() * smooth_noise(z.shape, cell, device=z.device, dtype=z.dtype)
        return self.vae.decode(z).sample, posterior.mean, posterior.logvar


class VAETask(Task):
    schema = VAEConfig

    def __init__(self, cfg: DictConfig, accelerator):
        self.cfg, self.accelerator = cfg, accelerator
        path = resolve_path(cfg.vae.get("path"))
        if path is not None:
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"vae.path {str(path)!r} is not a saved AutoencoderKL folder")
            self.vae = AutoencoderKL.from_pretrained(str(path))
        else:
            self.vae = AutoencoderKL(**OmegaConf.to_container(cfg.vae.init, resolve=True))
        self.train_encoder = bool(cfg.get("train_encoder", True))
        if not self.train_encoder:
            if path is None:
                raise ValueError("train_encoder=false keeps an existing latent space: set vae.path")
            for module in (self.vae.encoder, self.vae.quant_conv):
                if module is not None:
                    module.requires_grad_(False)
        self.dataset_background = parse_background(cfg.data.get("background", "grey"))
        names = cfg.get("backgrounds") or [cfg.data.get("background", "grey")]
        self.backgrounds = {str(b) if isinstance(b, str) else str(list(b)): parse_background(b) for b in names}
        self.model = Autoencode(self.vae)
        with accelerator.main_process_first():  # the main process builds a missing toy world
            self.train_dataset = build_multiview_dataset(cfg.data, "train")
        self.val_dataset = build_multiview_dataset(cfg.data, "val")

    def trainable_models(self):
        return {"vae": self.model}

    def make_batches(self, rank, world):
        dl = self.cfg.dataloader
        return make_stream(self.train_dataset, int(dl.batch_size), int(self.cfg.seed), rank, world, int(dl.num_workers))

    def loss(self, batch, models, step):
        images = batch["images"]  # (B, V, 3, H, W) in [-1, 1]
        per_object = int(self.cfg.get("views_per_object", 4))
        idx = torch.randperm(images.shape[1])[:per_object]
        x = images[:, idx].flatten(0, 1).to(self.accelerator.device)
        alphas = batch["alphas"][:, idx].flatten(0, 1).to(x.device)
        x = self.on_training_backgrounds(x, alphas)
        recon, mean, logvar = models["vae"](x, float(self.cfg.get("latent_noise", 0.0)),
                                            int(self.cfg.get("latent_noise_cell", 4)))
        object_weight = float(self.cfg.get("object_weight", 0.0))
        weight = 1 + object_weight * alphas if object_weight else None
        rec = reconstruction_loss(recon, x, self.cfg.get("reconstruction_loss", "l1"), weight)
        kl = kl_divergence(mean, logvar)
        loss = rec + float(self.cfg.get("kl_weight", 1e-6)) * kl
        return loss, {"rec": rec.item(), "kl": kl.item()}

    def on_training_backgrounds(self, x: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """Images `x` (N, 3, H, W), composited on the dataset's background, re-composited each on one
        of `backgrounds` drawn at random; as they are when that is the dataset's background alone."""
        choices = torch.stack(list(self.backgrounds.values()))
        if len(choices) == 1 and torch.equal(choices[0], self.dataset_background):
            return x
        pick = choices[torch.randint(len(choices), (x.shape[0],))]
        return recomposite(x, alphas, self.dataset_background, pick.to(x.device))

    @torch.no_grad()
    def heldout_psnr(self, vae: AutoencoderKL, limit: int | None = None, background=None) -> float:
        """Mean PSNR of posterior-mode reconstructions over the validation objects' views, on
        `background` (default: the dataset's)."""
        views = list(self.cfg.validation.get("views", [0, 6, 12, 18]))
        n = len(self.val_dataset) if limit is None else min(limit, len(self.val_dataset))
        scores = []
        for i in range(n):
            item = self.val_dataset[i]
            x = item["images"][views].to(self.accelerator.device)
            if background is not None:
                x = recomposite(x, item["alphas"][views].to(x.device), self.dataset_background, background)
            recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
            scores.append(psnr((recon + 1) / 2, (x + 1) / 2))
        return sum(scores) / max(len(scores), 1)

    def heldout_scores(self, vae: AutoencoderKL, limit: int | None = None) -> dict[str, float]:
        """"psnr" on the dataset's background and "psnr_<name>" per training background (the
        dataset's own background is scored once)."""
        scores = {"psnr": self.heldout_psnr(vae, limit)}
        for name, bg in self.backgrounds.items():
            same = torch.equal(bg, self.dataset_background)
            scores[f"psnr_{name}"] = scores["psnr"] if same else self.heldout_psnr(vae, limit, bg)
        return scores

    def validate(self, step, out_dir, models):
        return self.heldout_scores(models["vae"].vae, self.cfg.validation.get("max_objects"))

    @torch.no_grad()
    def latent_std(self, vae: AutoencoderKL, max_objects: int = 32) -> float:
        """Std of posterior samples (fixed generator) over all views of the first training objects."""
        return latent_std(vae, self.train_dataset, max_objects, self.accelerator.device)

    def finish(self, out_dir: Path, models):
        vae = models["vae"].vae
        vae.eval()
        if self.train_encoder:
            scaling = 1.0 / self.latent_std(vae)
            vae.register_to_config(scaling_factor=scaling)
        else:  # same encoder, same latents: keep the factor the diffusion models were trained with
            scaling = float(vae.config.scaling_factor)
        by_background = self.heldout_scores(vae)
        held = by_background.pop("psnr")
        target = Path(out_dir) / "vae"
        with atomic_directory(target) as tmp:
            vae.save_pretrained(str(tmp), safe_serialization=True)  # safetensors weights + config.json
            (tmp / "metrics.json").write_text(json.dumps({"heldout_psnr": held, "scaling_factor": scaling,
                                                            **by_background}, indent=1))
        scores = ", ".join(f"{k} {v:.2f} dB" for k, v in by_background.items())
        print(f"toy VAE saved to {target}: held-out PSNR {held:.2f} dB ({scores}), scaling_factor {scaling:.4f}")
