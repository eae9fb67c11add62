"""Training data from the config: G-Objaverse-layout datasets,
view windows, text dropout and the 3D/2D batch alternation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from videomv.io import atomic_write

from .batches import BatchStream, ShardedOrder
from .config import REPO_ROOT, resolve_path  # noqa: F401  (resolve_path is part of this module's API)

def dataset_root(data_cfg: DictConfig) -> Path:
    root = resolve_path(data_cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r} does not exist")
    return root


def build_multiview_dataset(data_cfg: DictConfig, split: str = "train"):
    """``GObjaverseDataset`` for ``split`` (``objects`` for train, ``val_objects`` for val)."""
    from videomv.data import GObjaverseDataset

    root = dataset_root(data_cfg)
    key = "objects" if split == "train" else f"{split}_objects"
    objects = data_cfg.get(key)
    if objects is not None and isinstance(objects, str):
        objects = str(resolve_path(objects, root))
    captions = data_cfg.get("captions")
    if isinstance(captions, str):
        captions = str(resolve_path(captions, root))
    return GObjaverseDataset(
        str(root), objects=objects, num_views=int(data_cfg.get("num_views", 24)),
        resolution=int(data_cfg.resolution), background=data_cfg.get("background", "grey"),
        captions=captions, caption_suffix=data_cfg.get("caption_suffix", ""),
        random_elevation_subset=bool(data_cfg.get("random_elevation_subset", False)),
    )


def build_image_dataset(image_cfg: DictConfig, data_cfg: DictConfig):
    from videomv.data import ImageCaptionDataset

    root = resolve_path(image_cfg.root)
    if not root.is_dir():
        raise FileNotFoundError(f"data.image_data.root {str(root)!r} does not exist")
    return ImageCaptionDataset(str(root), resolution=int(data_cfg.resolution),
                               background=data_cfg.get("background", "grey"),
                               caption_suffix=image_cfg.get("caption_suffix", ""))


def view_window(num_views: int, window: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of ``window`` consecutive views starting at a random view, wrapping around the orbit."""
    if not 1 <= window <= num_views:
        raise ValueError(f"data.window must be in [1, {num_views}], got {window}")
    start = int(torch.randint(num_views, (1,), generator=generator))
    return (start + torch.arange(window)) % num_views


def take_views(batch: dict, index: torch.Tensor) -> dict:
    """Restrict the per-frame entries (images, alphas, cameras, cached latents and image embeddings)
    of a batch to ``index``."""
    out = dict(batch)
    for key in ("images", "alphas", "cameras", "latent_mean", "latent_std", "image_embeds"):
        if key in out and torch.is_tensor(out[key]):
            out[key] = out[key][:, index]
    return out


def drop_text(prompts: list[str], probability: float, generator: torch.Generator | None = None) -> list[str]:
    """Replace each prompt by "" with ``probability`` (classifier-free guidance training)."""
    if probability <= 0:
        return list(prompts)
    keep = torch.rand(len(prompts), generator=generator) >= probability
    return [p if k else "" for p, k in zip(prompts, keep.tolist())]


def collate(items: list[dict]) -> dict:
    """Stack tensors, keep strings as lists, numbers as tensors."""
    out = {}
    for key in items[0]:
        values = [it[key] for it in items]
        if torch.is_tensor(values[0]):
            out[key] = torch.stack(values)
        elif isinstance(values[0], str):
            out[key] = values
        elif isinstance(values[0], (bool, int, float)):
            out[key] = torch.tensor(values)
        else:
            out[key] = values
    return out


class MixedStream:
    """Alternates a 3D (multi-view) stream with a 2D (1-frame) stream.

    Frame counts differ, so each step takes a whole batch from one stream. The choice for step
    ``k`` comes from a generator seeded by (seed, k): identical on all processes (DDP needs the
    same graph everywhere) and independent of resuming.
    """

    def __init__(self, multiview: BatchStream, images: BatchStream | None, probability: float, seed: int):
        self.multiview, self.images, self.probability, self.seed = multiview, images, float(probability), seed
        self.count = 0

    def __iter__(self):
        return self

    def __next__(self):
        g = torch.Generator().manual_seed(self.seed * 7_919 + self.count)
        self.count += 1
        use_images = self.images is not None and float(torch.rand((), generator=g)) < self.probability
        return next(self.images) if use_images else next(self.multiview)

    def state_dict(self) -> dict:
        return {"count": self.count, "multiview": self.multiview.state_dict(),
                "images": self.images.state_dict() if self.images is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state["count"])
        self.multiview.load_state_dict(state["multiview"])
        if self.images is not None and state.get("images"):
            self.images.load_state_dict(state["images"])


def make_stream(dataset, batch_size: int, seed: int, rank: int, world: int, num_workers: int = 0,
                repeats: list[int] | None = None) -> BatchStream:
    order = ShardedOrder(len(dataset), batch_size, seed, rank, world, repeats=repeats)
    return BatchStream(dataset, order, collate, num_workers)


def caption_repeats(captions: list[str], rules: dict[str, int]) -> list[int]:
    """How often each item enters an epoch under ``data.caption_repeats``: the largest count whose
    text occurs in the item's caption, 1 where none does. A text that occurs in no caption is
    refused (a typo would otherwise silently change nothing)."""
    counts = [1] * len(captions)
    for text, count in rules.items():
        if not text or not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"data.caption_repeats: expected a non-empty text mapped to an integer >= 1, "
                             f"got {text!r}: {count!r}")
        hits = [i for i, caption in enumerate(captions) if text in caption]
        if not hits:
            raise ValueError(f"data.caption_repeats: {text!r} occurs in none of the {len(captions)} training captions")
        for i in hits:
            counts[i] = max(counts[i], count)
    return counts


def read_prompts(value) -> list[str]:
    """Validation prompts: a list, or a path to a .txt (one per line) / .json list."""
    if value is None:
        return []
    if isinstance(value, str):
        path = resolve_path(value)
        if path.suffix == ".json":
            return list(json.loads(path.read_text()))
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [str(v) for v in value]


class LatentCache(Dataset):
    """Multi-view items with the frozen VAE's posterior (mean, std) in place of the images.

    Encoding every view once (instead of every step) makes toy training several times cheaper.
    Stored in one safetensors file (fp16 mean/std, fp32 cameras; captions, object ids and the items
    left out in its metadata), keyed by a hash of the VAE weights and the dataset settings, so a
    changed VAE or dataset is never served stale latents. Latents are in VAE units (not yet scaled),
    held contiguous whether just encoded or read back.

    With ``image_conditioner`` (the image model's frozen `ImageConditioner`) it also keeps each
    view's CLIP image embedding, so that any view can be the input image without its pixels.

    An item the dataset cannot read (``load`` raises ``ItemError``) is left out and listed in
    ``skipped`` as ``(object id, reason)``; no other item takes its place. ``workers`` > 0 reads
    the items in that many processes (in order), while this one encodes.
    """

    def __init__(self, dataset, vae, path: Path, key: str, device="cpu", chunk: int = 96, workers: int = 0,
                 image_conditioner=None):
        path = Path(path)
        self.path = path
        self.skipped: list[tuple[str, str]] = []
        if path.is_file():
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") == key:
                    self._load(f, meta)
                    return
        self._build(dataset, vae, key, device, chunk, workers, image_conditioner)

    def _load(self, f, meta: dict) -> None:
        self.mean, self.std = f.get_tensor("mean"), f.get_tensor("std")
        self.cameras = f.get_tensor("cameras")
        self.image_embeds = f.get_tensor("image_embeds") if "image_embeds" in f.keys() else None
        self.captions = json.loads(meta["captions"])
        self.object_ids = json.loads(meta["object_ids"])
        self.skipped = [tuple(x) for x in json.loads(meta.get("skipped", "[]"))]

    @torch.no_grad()
    def _build(self, dataset, vae, key: str, device, chunk: int, workers: int, image_conditioner) -> None:
        means, stds, cameras, captions, ids, embeds = [], [], [], [], [], []
        items = DataLoader(_ItemOrError(dataset), batch_size=None, num_workers=workers,
                           prefetch_factor=4 if workers else None)
        for item in tqdm(items, total=len(dataset), desc="caching latents", unit="obj"):
            if "error" in item:
                self.skipped.append((item["object_id"], item["error"]))
                continue
            parts = [vae.encode(x.to(device, vae.dtype)).latent_dist for x in item["images"].split(chunk)]
            means.append(torch.cat([p.mean for p in parts]).half().cpu().contiguous())
            stds.append(torch.cat([p.std for p in parts]).half().cpu().contiguous())
            if image_conditioner is not None:  # (F, D): each view as the input image, in [0, 1]
                views = ((item["images"].float() + 1) / 2).clamp(0, 1)
                embeds.append(torch.cat([image_conditioner.image_embeddings(x.to(device))[:, 0].float().cpu()
                                         for x in views.split(chunk)]))
            cameras.append(item["cameras"].float())
            captions.append(item["caption"])
            ids.append(item["object_id"])
        if not means:
            raise RuntimeError(f"latent cache: none of the {len(dataset)} items could be read: {self.skipped[:3]}")
        self.mean = torch.stack(means).contiguous()
        self.std = torch.stack(stds).contiguous()
        self.cameras = torch.stack(cameras).contiguous()
        self.image_embeds = torch.stack(embeds).contiguous() if embeds else None
        self.captions, self.object_ids = captions, ids
        tensors = {"mean": self.mean, "std": self.std, "cameras": self.cameras}
        if self.image_embeds is not None:
            tensors["image_embeds"] = self.image_embeds
        metadata = {"key": key, "captions": json.dumps(captions), "object_ids": json.dumps(ids),
                    "skipped": json.dumps(self.skipped)}
        atomic_write(self.path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    def __len__(self) -> int:
        return self.mean.shape[0]

    def caption(self, index: int) -> str:
        return self.captions[index]

    def __getitem__(self, index: int) -> dict:
        item = {"latent_mean": self.mean[index].float(), "latent_std": self.std[index].float(),
                "cameras": self.cameras[index], "caption": self.captions[index],
                "object_id": self.object_ids[index], "has_cameras": True}
        if self.image_embeds is not None:
            item["image_embeds"] = self.image_embeds[index]
        return item


class _ItemOrError(Dataset):
    """``dataset``'s items themselves (``dataset.load``, never a neighbour standing in), or
    ``{"object_id", "error"}`` for one it cannot read, so a worker process reports it rather than dying."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        from videomv.data.common import ItemError

        try:
            return self.dataset.load(index) if hasattr(self.dataset, "load") else self.dataset[index]
        except ItemError as err:
            item_id = self.dataset.item_id(index) if hasattr(self.dataset, "item_id") else str(index)
            return {"object_id": item_id, "error": str(err)}


def latent_cache_key(vae, data_cfg, dataset, image_conditioner=None) -> str:
    """A hash of everything the cached tensors depend on: the VAE (and the image encoder with its
    input size and normalisation, for the image model), the data settings and the object list."""
    h = hashlib.sha256()
    modules = [vae] if image_conditioner is None else [vae, image_conditioner.image_encoder]
    for module in modules:
        for name, p in sorted(module.state_dict().items()):
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    if image_conditioner is not None:
        h.update(json.dumps([image_conditioner.image_size, image_conditioner.mean.flatten().tolist(),
                             image_conditioner.std.flatten().tolist()]).encode())
    settings = {k: data_cfg.get(k) for k in ("root", "resolution", "background", "num_views", "caption_suffix")}
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    h.update(json.dumps(list(getattr(dataset, "objects", []))).encode())
    return h.hexdigest()
