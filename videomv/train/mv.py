"""Stage 1: fine-tune a camera-conditioned video UNet on orbit renders (text → MV or image → MV).

Per step: views (B, F, 3, H, W) → frozen VAE latents (B, C, F, h, w) → noised at a random
timestep → the UNet predicts eps or v given the prompt embedding (dropped to "" with
``data.text_dropout``; the image model's image condition made unconditional with ``data.image_dropout``)
and the per-view cameras → MSE (optionally min-SNR-γ weighted), plus, with ``grounding`` weights,
the grounding losses of the UNet's cross-attention (`videomv.train.grounding`, toy world only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL
from omegaconf import DictConfig, OmegaConf

from videomv.defaults import IMAGE, TEXT
from videomv.io import atomic_directory, atomic_write
from videomv.models.conditioning import ImageConditioning, with_position_masks
from videomv.models.denoise import MultiViewCondition, denoise
from videomv.models.latents import vae_encode

from .datasets import (LatentCache, MixedStream, build_image_dataset, caption_repeats, latent_cache_key, build_multiview_dataset, drop_text, make_stream,
                       read_prompts, resolve_path, take_views, view_window)
from .diffusion import (build_noise_scheduler, diffusion_target, perturbed_noise, randn_as, sample_timesteps,
                        warn_min_snr_high_noise)
from .engine import Task
from .grounding import grounding_losses, keep_cross_attention
from .losses import diffusion_loss, input_view_excluded, object_weights
from .schema import MultiViewConfig


def _plain(node) -> dict:
    """An optional config mapping as a plain dict ({} when absent)."""
    return OmegaConf.to_container(node, resolve=True) if node is not None else {}


def local_or_hub(value: str, subfolder: str | None, key: str) -> str:
    """A local diffusers folder (checked for ``config.json``) or else a hub id ``org/name``."""
    path = resolve_path(value)
    if path.exists():
        where = path / subfolder if subfolder else path
        if not (where / "config.json").is_file():
            raise FileNotFoundError(f"{key}: no diffusers model at {str(where)!r} (config.json missing)")
        return str(path)
    if str(value).count("/") == 1 and not str(value).startswith((".", "/", "~")):
        return str(value)  # hub id; loading needs the weights in the local hub cache or network access
    raise FileNotFoundError(
        f"{key}: {str(path)!r} does not exist (the toy configs use data/embedded/t2mv/vae; "
        "python scripts/train_vae.py --config configs/toy_vae.yaml trains one into runs/toy_vae/vae)")


def load_vae(vae_cfg: DictConfig) -> AutoencoderKL:
    """``vae.path`` (a diffusers model folder, ``vae.subfolder`` optional) or ``vae.init`` (a fresh
    ``AutoencoderKL`` config: only for tests and smoke runs)."""
    if vae_cfg.get("path"):
        subfolder = vae_cfg.get("subfolder") or None
        return AutoencoderKL.from_pretrained(local_or_hub(vae_cfg.path, subfolder, "vae.path"), subfolder=subfolder)
    if vae_cfg.get("init"):
        return AutoencoderKL(**OmegaConf.to_container(vae_cfg.init, resolve=True))
    raise ValueError("config needs vae.path (a diffusers AutoencoderKL folder) or vae.init (a fresh config)")


def build_unet(model_cfg: DictConfig, kind: str):
    from videomv.models import I2MVUNet, T2MVUNet

    cls = T2MVUNet if kind == "t2mv" else I2MVUNet
    subfolder = model_cfg.get("subfolder", "unet")
    if model_cfg.get("pretrained"):  # a multi-view UNet saved by this project (e.g. <run>/final)
        unet = cls.from_pretrained(local_or_hub(model_cfg.pretrained, subfolder, "unet.pretrained"), subfolder=subfolder)
    elif model_cfg.get("base"):
        unet = cls.from_base(local_or_hub(model_cfg.base, subfolder, "unet.base"), subfolder=subfolder)
    elif model_cfg.get("init"):
        unet = cls(**OmegaConf.to_container(model_cfg.init, resolve=True))
    else:
        raise ValueError("config needs unet.base (video UNet: hub id or local folder), unet.pretrained "
                         "(a saved multi-view UNet) or unet.init (a tiny config)")
    fovy = model_cfg.get("ray_map_fovy")
    if fovy is not None and unet.config.get("ray_map_fovy") != fovy:
        unet.add_ray_map(fovy)  # raises when the loaded UNet has a ray map of another field of view
    gain = model_cfg.get("cross_attention_gain", 1.0)
    if gain != 1.0:
        unet.sharpen_cross_attention(gain)  # a resumed run loads its checkpoint's weights over this
    return unet


def build_text_conditioner(text_cfg: DictConfig):
    from videomv.models.conditioning import TextConditioner
    from videomv.models.text_encoder import bidirectional_layers

    if text_cfg.get("base"):
        conditioner = TextConditioner.from_pretrained(local_or_hub(text_cfg.base, "text_encoder", "text_encoder.base"),
                                                      **_plain(text_cfg.get("kwargs")))
    elif text_cfg.get("init"):
        conditioner = TextConditioner.tiny(**OmegaConf.to_container(text_cfg.init, resolve=True))
    else:
        raise ValueError("config needs text_encoder.base (CLIP text model folder/hub id) or text_encoder.init")
    extra = text_cfg.get("extra_layers") or 0
    if extra and not text_cfg.get("train", False):
        raise ValueError(f"text_encoder.extra_layers={extra} needs text_encoder.train=true: "
                         "layers that start as the identity only matter once they are trained")
    conditioner.add_identity_layers(extra)
    both_ways = text_cfg.get("bidirectional_layers") or 0
    if both_ways and both_ways != bidirectional_layers(conditioner.text_encoder):
        if not text_cfg.get("train", False):
            raise ValueError(f"text_encoder.bidirectional_layers={both_ways} needs text_encoder.train=true: "
                             "the encoder's output changes and only training adapts the UNet to it")
        conditioner.attend_both_ways(both_ways)  # raises for a loaded encoder already bidirectional
    if text_cfg.get("zero_padding"):
        conditioner.zero_padding = True  # a loaded encoder that has it keeps it either way
    return conditioner


def build_image_conditioner(image_cfg: DictConfig, vae: AutoencoderKL):
    """``image_encoder.base``: a diffusers I2VGen-XL folder/hub id (``image_encoder`` and
    ``feature_extractor`` subfolders); ``image_encoder.init``: a tiny random CLIP vision model."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from videomv.models.conditioning import ImageConditioner

    if image_cfg.get("base"):
        source = local_or_hub(image_cfg.base, "image_encoder", "image_encoder.base")
        encoder = CLIPVisionModelWithProjection.from_pretrained(source, subfolder="image_encoder")
        extractor = CLIPImageProcessor.from_pretrained(source, subfolder="feature_extractor")
        return ImageConditioner.from_feature_extractor(encoder, extractor, vae)
    if image_cfg.get("init"):
        kwargs = OmegaConf.to_container(image_cfg.init, resolve=True)
        return ImageConditioner(ImageConditioner.tiny_image_encoder(**kwargs), vae, image_size=kwargs.get("image_size", 32))
    raise ValueError("config needs image_encoder.base (I2VGen-XL folder/hub id) or image_encoder.init")


class MultiViewTask(Task):
    """Text → multi-view (``model.kind: t2mv``) or image → multi-view (``model.kind: i2mv``)."""

    schema = MultiViewConfig

    def __init__(self, cfg: DictConfig, accelerator):
        self.cfg, self.accelerator = cfg, accelerator
        self.kind = cfg.model.kind
        if self.kind not in ("t2mv", "i2mv"):
            raise ValueError(f"model.kind must be t2mv or i2mv, got {self.kind!r}")
        if self.kind == "t2mv" and cfg.data.get("image_dropout"):
            raise ValueError("data.image_dropout is for image -> MV (i2mv); the text model has no image condition")
        self.clean_input_view = bool(cfg.model.get("clean_input_view", False))
        if self.kind == "t2mv" and self.clean_input_view:
            raise ValueError("model.clean_input_view is for image -> MV (i2mv); the text model has no input view")
        device = accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(cfg.mixed_precision, torch.float32)

        self.vae = load_vae(cfg.vae).to(device).requires_grad_(False).eval()
        # Frozen parts compute in the mixed-precision dtype; their float32 weights are kept (on the
        # CPU) for the export, which must hold the originals, not a bf16/fp16 rounding of them.
        self.frozen_originals: list[tuple[torch.nn.Module, dict]] = []
        if self.weight_dtype != torch.float32:
            self.keep_original(self.vae)
            self.vae.to(dtype=self.weight_dtype)
        self.scaling_factor = float(cfg.vae.get("scaling_factor") or self.vae.config.scaling_factor)
        # Trained weights stay float32 (mixed precision autocasts); model folders may store fp16.
        self.unet = build_unet(cfg.unet, self.kind).to(torch.float32)
        self.text = build_text_conditioner(cfg.text_encoder)
        self.train_text_encoder = bool(cfg.text_encoder.get("train", False))
        if not self.train_text_encoder:
            self.keep_original(self.text)
            self.text.requires_grad_(False)
        self.text.to(device, torch.float32 if self.train_text_encoder else self.weight_dtype)
        self.image_conditioner = None
        if self.kind == "i2mv":
            self.image_conditioner = build_image_conditioner(cfg.image_encoder, self.vae)
            self.keep_original(self.image_conditioner)
            self.image_conditioner.to(device, self.weight_dtype).requires_grad_(False)
        sched = cfg.noise_scheduler
        self.noise_scheduler = build_noise_scheduler(sched.get("preset", "t2v_eps"),
                                                     **_plain(sched.get("overrides")))
        warn_min_snr_high_noise(self.noise_scheduler, cfg.get("min_snr_gamma"))
        with accelerator.main_process_first():  # the main process builds a missing toy world / cache
            self.train_dataset = build_multiview_dataset(cfg.data, "train")
            self.latents = None
            if cfg.data.get("cache_latents"):
                if cfg.get("object_weight"):
                    raise ValueError("object_weight needs each view's alpha, which data.cache_latents does not keep; "
                                     "set data.cache_latents=false")
                key = latent_cache_key(self.vae, cfg.data, self.train_dataset, self.image_conditioner)
                path = resolve_path(cfg.output_dir) / "latent_cache.safetensors"
                self.latents = LatentCache(self.train_dataset, self.vae, path, key, device,
                                           workers=int(cfg.dataloader.num_workers),
                                           image_conditioner=self.image_conditioner)
        self.image_dataset = build_image_dataset(cfg.data.image_data, cfg.data) \
            if cfg.data.get("image_data") and cfg.data.image_data.get("probability", 0) > 0 else None
        grounding = cfg.get("grounding") or {}
        self.grounding_weights = {k: float(grounding.get(k) or 0.0) for k in ("token", "pixel")}
        if any(self.grounding_weights.values()):
            self.check_grounding()
        self.toy_objects: dict = {}

    # -- engine interface
    def trainable_models(self):
        models = {"unet": self.unet}
        if self.train_text_encoder:
            models["text_encoder"] = self.text.text_encoder  # the CLIPTextModel; the tokenizer has no weights
        return models

    def enable_gradient_checkpointing(self):
        self.unet.enable_gradient_checkpointing()

    def make_batches(self, rank, world):
        dl = self.cfg.dataloader
        seed = int(self.cfg.seed)
        source = self.latents if self.latents is not None else self.train_dataset
        rules = self.cfg.data.get("caption_repeats")
        repeats = caption_repeats([source.caption(i) for i in range(len(source))], _plain(rules)) if rules else None
        mv = make_stream(source, int(dl.batch_size), seed, rank, world, int(dl.num_workers), repeats)
        images = None
        if self.image_dataset is not None:
            images = make_stream(self.image_dataset, int(self.cfg.data.image_data.batch_size), seed + 1, rank, world,
                                 int(dl.num_workers))
        prob = float(self.cfg.data.image_data.probability) if images is not None else 0.0
        return MixedStream(mv, images, prob, seed)

    def encode_prompts(self, prompts: list[str], text_model=None) -> torch.Tensor:
        """(B, 77, D) prompt embeddings from the layer the task's pipeline takes (the image model:
        the penultimate, `IMAGE.clip_skip`); ``text_model`` is the (DDP-wrapped) trainable CLIPTextModel."""
        clip_skip = (TEXT if self.kind == "t2mv" else IMAGE).clip_skip
        return self.text.encode(prompts, clip_skip, text_model).to(self.accelerator.device)

    def loss(self, batch, models, step):
        device = self.accelerator.device
        window = self.cfg.data.get("window")
        num_views = batch["cameras"].shape[1]
        if window and num_views > 1:
            batch = take_views(batch, view_window(num_views, int(window)))
        if "latent_mean" in batch:  # cached posterior: sample it here, (B, F, C, h, w) -> (B, C, F, h, w)
            mean, std = batch["latent_mean"].to(device), batch["latent_std"].to(device)
            latents = ((mean + std * randn_as(mean)) * self.scaling_factor).permute(0, 2, 1, 3, 4)
        else:
            with torch.no_grad():
                latents = vae_encode(self.vae, batch["images"], self.scaling_factor).float()
        bsz = latents.shape[0]
        noise = randn_as(latents)
        bias = self.cfg.get("timestep_bias") or {}
        timesteps = sample_timesteps(self.noise_scheduler.config.num_train_timesteps, bsz, device,
                                     float(bias.get("share", 0.0)), int(bias.get("start", 500)))
        gamma = float(self.cfg.get("input_perturbation") or 0.0)
        noisy = self.noise_scheduler.add_noise(latents, perturbed_noise(noise, gamma), timesteps)
        target = diffusion_target(self.noise_scheduler, latents, noise, timesteps)

        has_cameras = batch["has_cameras"].to(device).bool()
        cameras = batch.get("cameras")
        if cameras is None or not torch.is_tensor(cameras):
            cameras = torch.zeros(bsz, latents.shape[2], 4, 4)
        cameras = cameras.to(device).float()
        camera_mask = has_cameras.float()

        if self.kind == "t2mv":
            prompts = drop_text(list(batch["caption"]), float(self.cfg.data.get("text_dropout", 0.0)))
            text_model = models.get("text_encoder")
            if text_model is None:
                with torch.no_grad():
                    context = self.encode_prompts(prompts)
            else:
                context = self.encode_prompts(prompts, text_model)
            condition = MultiViewCondition(context, cameras, camera_mask)
        else:
            prompt = self.cfg.data.get("prompt", "")
            with torch.no_grad():
                context = self.encode_prompts([prompt] * bsz)
            image = self.image_condition(batch, latents.shape[2])
            image_dropout = float(self.cfg.data.get("image_dropout", 0.0))
            if image_dropout > 0:
                drop = torch.rand(bsz, device=device) < image_dropout
                image = image.dropped(drop, self.cfg.data.get("unconditional_image", "embedding"))
            condition = MultiViewCondition(
                context, cameras, camera_mask, fps=int(self.cfg.model.get("fps", IMAGE.fps)), image=image)
        logs = {"frames": float(latents.shape[2])}
        grounding = {}
        if any(self.grounding_weights.values()):
            tokens, masks = self.grounding_targets(batch, prompts, context.shape[1], tuple(latents.shape[-2:]))
            tokens, masks = tokens.to(device), masks.to(device)
            with keep_cross_attention(models["unet"]) as maps:
                pred = denoise(models["unet"], noisy, timesteps, condition)
            grounding = grounding_losses(maps, tokens, masks)
            logs.update({f"grounding_{k}": float(v.detach()) for k, v in grounding.items()})
        else:
            pred = denoise(models["unet"], noisy, timesteps, condition)
        weight = None
        object_weight = float(self.cfg.get("object_weight") or 0.0)
        if object_weight:
            if "alphas" not in batch:
                raise ValueError("object_weight: this batch carries no alphas (its data has no object masks)")
            weight = object_weights(batch["alphas"].to(device), tuple(latents.shape[-2:]), object_weight)
        if condition.image is not None and condition.image.clean_input_view:
            weight = input_view_excluded(latents, weight)  # view 0 is given, not predicted
        loss = diffusion_loss(pred, target, self.noise_scheduler, timesteps, self.cfg.get("min_snr_gamma"), weight)
        if grounding:
            logs["diffusion"] = float(loss.detach())
            loss = loss + sum(self.grounding_weights[k] * v for k, v in grounding.items())
        return loss, logs

    def check_grounding(self) -> None:
        """The grounding losses need what only the toy world knows: where each caption word's part is drawn."""
        from videomv.toy.references import is_toy_dataset

        if self.kind != "t2mv":
            raise ValueError("grounding is for text -> MV (t2mv): it grounds the caption's words")
        if self.cfg.get("gradient_checkpointing"):
            raise ValueError("grounding keeps the cross-attention weights of the forward pass, which "
                             "gradient checkpointing recomputes; set gradient_checkpointing=false")
        if self.image_dataset is not None:
            raise ValueError("grounding grounds toy objects' captions; data.image_data batches have no "
                             "part masks (set its probability to 0)")
        root = resolve_path(self.cfg.data.root)
        if not is_toy_dataset(root):
            raise ValueError(f"grounding needs a toy-world dataset (part masks from its recipes); "
                             f"data.root {str(root)!r} has no toy-world toyworld.json")

    def grounding_targets(self, batch: dict, prompts: list[str], context_length: int, size: tuple[int, int]):
        """`videomv.toy.grounding.grounding_targets` for the batch's toy objects at its cameras; the
        words of a dropped prompt ("") ground nothing."""
        from videomv.toy.grounding import grounding_targets
        from videomv.toy.references import toy_object_for

        root = resolve_path(self.cfg.data.root)
        objects = []
        for object_id in batch["object_id"]:
            if object_id not in self.toy_objects:
                self.toy_objects[object_id] = toy_object_for(root, object_id)
            objects.append(self.toy_objects[object_id])
        for caption, obj in zip(batch["caption"], objects):
            if not caption.startswith(obj.caption):  # a suffix after it leaves its tokens where they are
                raise ValueError(f"grounding: caption {caption!r} is not the toy caption {obj.caption!r} "
                                 "of its object, so its words cannot be located")
        tokens, masks = grounding_targets(self.text.tokenizer, objects, batch["cameras"], size, context_length)
        dropped = torch.tensor([p != caption for p, caption in zip(prompts, batch["caption"])])
        tokens[dropped] = 0
        return tokens, masks

    @torch.no_grad()
    def image_condition(self, batch: dict, num_frames: int) -> ImageConditioning:
        """The image model's condition: the batch's first view is the input image. From a latent
        cache it is that view's cached CLIP embedding and posterior mean (the mode the conditioner
        encodes), so no pixels are needed."""
        device = self.accelerator.device
        if "image_embeds" in batch:
            embeddings = batch["image_embeds"][:, :1].to(device).float()
            # scaled as `ImageConditioner` scales it (and sampling does): by the VAE's own factor
            latent = batch["latent_mean"][:, 0].to(device).float() * self.vae.config.scaling_factor
            return ImageConditioning(embeddings, with_position_masks(latent, num_frames), self.clean_input_view)
        if "images" not in batch:
            raise ValueError("image model: the batch has neither images nor cached image embeddings "
                             f"(keys: {sorted(batch)})")
        first = ((batch["images"][:, 0].float() + 1) / 2).clamp(0, 1).to(device)  # [-1, 1] -> [0, 1]
        cond = self.image_conditioner.encode(first, num_frames=num_frames)
        return ImageConditioning(cond.image_embeddings.float(), cond.image_latents.float(), self.clean_input_view)

    # -- validation: sample a few prompts (text) or validation objects (image), save a grid
    def build_pipeline(self, models):
        """The current weights as a sampling pipeline, with the DDIM scheduler of the base model
        (same betas and prediction type as training)."""
        from transformers import CLIPImageProcessor

        from videomv.sampling import I2MVPipeline, T2MVPipeline
        from videomv.sampling.ddim import ddim_with, image_scheduler, text_scheduler

        base = text_scheduler() if self.kind == "t2mv" else image_scheduler()
        trained = {k: self.noise_scheduler.config[k] for k in ("num_train_timesteps", "beta_start", "beta_end",
                                                               "beta_schedule", "prediction_type",
                                                               "rescale_betas_zero_snr", "timestep_spacing")}
        scheduler = ddim_with(base.config, **trained)
        text = self.text  # holds the same CLIPTextModel object as models["text_encoder"]
        if self.kind == "t2mv":
            return T2MVPipeline(vae=self.vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer,
                                unet=models["unet"], scheduler=scheduler)
        cond = self.image_conditioner
        size = {"height": cond.image_size, "width": cond.image_size}
        extractor = CLIPImageProcessor(size={"shortest_edge": cond.image_size}, crop_size=size,
                                       image_mean=cond.mean.flatten().tolist(), image_std=cond.std.flatten().tolist())
        return I2MVPipeline(vae=self.vae, text_encoder=text.text_encoder, tokenizer=text.tokenizer,
                            image_encoder=cond.image_encoder, feature_extractor=extractor,
                            unet=models["unet"], scheduler=scheduler)

    def validate(self, step, out_dir: Path, models):
        from videomv.geometry import orbit_cameras

        val = self.cfg.validation
        views = int(val.get("num_views", 8))
        release = TEXT if self.kind == "t2mv" else IMAGE
        cams = orbit_cameras(num_views=views, elevation=float(val.get("elevation", release.elevation)),
                             radius=float(val.get("radius", release.radius)))
        common = dict(cameras=cams, num_inference_steps=int(val.get("steps", 20)),
                      guidance_scale=float(release.guidance_scale if val.get("guidance_scale") is None
                                           else val.guidance_scale),
                      seed=int(self.cfg.seed), progress=False)
        pipe = self.build_pipeline(models)
        rows = []
        if self.kind == "t2mv":
            for prompt in read_prompts(val.get("prompts")):
                rows.append(pipe(prompt, **common).images[0].float().cpu())
        else:
            for i in range(min(int(val.get("num_objects", 2)), len(self.train_dataset))):
                image = (self.train_dataset[i]["images"][0] + 1) / 2
                out = pipe(image.to(self.accelerator.device), prompt=self.cfg.data.get("prompt", ""),
                           target_fps=int(self.cfg.model.get("fps", IMAGE.fps)),
                           unconditional_image=self.cfg.data.get("unconditional_image", "embedding"),
                           clean_input_view=self.clean_input_view, **common)
                rows.append(torch.cat([image[None].cpu(), out.images[0].float().cpu()]))
        if rows:
            save_grid(torch.stack(rows), out_dir / "samples" / f"step_{step:06d}.png")
        return {}

    def keep_original(self, module: torch.nn.Module) -> None:
        """Remember `module`'s weights, before a cast to the compute dtype, for `finish`."""
        if self.weight_dtype != torch.float32 and not any(m is module for m, _ in self.frozen_originals):
            self.frozen_originals.append((module, {k: v.detach().to("cpu", copy=True)
                                                   for k, v in module.state_dict().items()}))

    def finish(self, out_dir: Path, models):
        """Export ``<output_dir>/final``, a pipeline folder (model_index.json, unet/, vae/,
        text_encoder/, tokenizer/, scheduler/ [, image_encoder/, feature_extractor/]; safetensors;
        EMA weights when EMA is on) that `T2MVPipeline` / `I2MVPipeline.from_pretrained` load.
        Frozen parts go back to float32 and to their original weights first."""
        for module, state in reversed(self.frozen_originals):  # a later one may hold an earlier one (the VAE)
            module.to(torch.float32).load_state_dict(state)
        with atomic_directory(Path(out_dir) / "final") as tmp:
            self.build_pipeline(models).save_pretrained(str(tmp), safe_serialization=True)


def save_grid(images: torch.Tensor, path: Path) -> None:
    """(rows, cols, 3, H, W) in [0, 1] → one PNG, written atomically."""
    from PIL import Image

    r, c, _, h, w = images.shape
    grid = images.clamp(0, 1).permute(0, 3, 1, 4, 2).reshape(r * h, c * w, 3)
    atomic_write(path, lambda tmp: Image.fromarray((grid.numpy() * 255 + 0.5).astype("uint8")).save(tmp, format="PNG"))
