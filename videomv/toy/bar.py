"""The bar the embedded toy models must clear, on toy test objects they never saw.

Text -> views: PSNR of the generated views against the ground-truth renders of a test object with
that caption, at that object's cameras. Two references bound it: the floor, a constant background
image, and the ceiling, another toy object with the same caption (same recipe, other sizes and
turns) rendered at the same cameras. `gap_closed` = (generated - floor) / (ceiling - floor); the bar
is at least 0.5, on the PSNRs averaged over the test prompts. Consistency: the mean absolute
difference between neighbouring views, generated vs ground truth (bar: ratio <= 2).
Image -> views: PSNR against the object's own ground truth, conditioned on its view 0 (bar: >= 20 dB).
Both rows also carry the per-part colour and layout scores of `videomv.toy.parts`. The VAE round
trip of the ground truth, scored the same way, is the ceiling of those scores for a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from videomv.data.common import composite as data_composite
from videomv.eval.cross_attention import attention_shares, record_cross_attention, token_roles
from videomv.eval.metrics import psnr
from videomv.models.denoise import MultiViewCondition, denoise
from videomv.models.latents import smooth_noise

from . import world as toyworld
from .parts import PartScore, score_parts
from .references import toy_object_for


def composite(rgba: torch.Tensor, background) -> torch.Tensor:
    """(V, H, W, 4) straight-alpha renders -> (V, 3, H, W) on `background`, as the datasets composite."""
    rgba = rgba.permute(0, 3, 1, 2)
    return data_composite(rgba[:, :3], rgba[:, 3:], torch.as_tensor(background, dtype=rgba.dtype)).clamp(0, 1)


def object_views(model, root, object_id: str):
    """The toy object, its orbit cameras, and its ground-truth views on the model's background."""
    s = model.settings
    obj = toy_object_for(root, object_id)
    cams, _, _ = toyworld.orbit_for(obj)
    return obj, cams, composite(toyworld.render_object(obj, cams, s.resolution, s.fovy), s.background)


def neighbour_difference(views: torch.Tensor) -> float:
    """Mean absolute difference between consecutive views of an orbit, wrapping around."""
    return float((views - views.roll(-1, dims=0)).abs().mean())


def mean_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(psnr(pred.clamp(0, 1), target.clamp(0, 1)).mean())


@dataclass
class TextBarRow:
    object_id: str
    caption: str
    generated: float
    floor: float
    ceiling: float
    neighbour_generated: float
    neighbour_truth: float
    parts: PartScore | None = None

    @property
    def gap_closed(self) -> float:
        """Per object; NaN when the same-caption twin is no closer than the blank floor."""
        return gap_closed(self.generated, self.floor, self.ceiling)


def percent(hits) -> str:
    """'75 % (3/4)' for the true share of `hits` (booleans), 'n/a' for none."""
    hits = list(hits)
    return f"{100 * sum(hits) / len(hits):.0f} % ({sum(hits)}/{len(hits)})" if hits else "n/a"


def part_summary(rows, key: str) -> tuple[str, str]:
    """(parts right, layouts right) over rows with `parts` (a PartScore), each a percentage with its
    count; `key` names the part score: "in_place" or "present"."""
    return (percent(h for r in rows for h in getattr(r.parts, key)),
            percent(r.parts.layout for r in rows if r.parts.layout is not None))


def gap_closed(generated: float, floor: float, ceiling: float) -> float:
    """(generated - floor) / (ceiling - floor): 0 at the floor, 1 at the ceiling; NaN without a gap."""
    return (generated - floor) / (ceiling - floor) if ceiling > floor else float("nan")


def text_bar_row(model, root, object_id: str, seed: int = 0, like_index: int = 1, three_d_aware: bool = True,
                 steps: int | None = None, guidance_scale: float | None = None, sampler: str | None = None) -> TextBarRow:
    """Score one test object (see the module docstring)."""
    s = model.settings
    obj, cams, truth = object_views(model, root, object_id)
    twin = toyworld.sample_like(obj, seed=10_000 + like_index, index=like_index)
    ceiling = composite(toyworld.render_object(twin, cams, s.resolution, s.fovy), s.background)
    floor = torch.tensor(s.background).view(1, 3, 1, 1).expand_as(truth)
    out = model(prompt=obj.caption, cameras=cams, seed=seed, three_d_aware=three_d_aware, num_inference_steps=steps,
                guidance_scale=guidance_scale, sampler=sampler, progress=False)
    return TextBarRow(object_id, obj.caption, mean_psnr(out.images, truth), mean_psnr(floor, truth),
                      mean_psnr(ceiling, truth), neighbour_difference(out.images), neighbour_difference(truth),
                      score_parts(out.images, obj, cams, s.fovy, s.background))


@dataclass
class ImageBarRow:
    object_id: str
    caption: str
    psnr: float
    parts: PartScore


def image_bar_row(model, root, object_id: str, seed: int = 0, three_d_aware: bool = True,
                  steps: int | None = None, guidance_scale: float | None = None, sampler: str | None = None) -> ImageBarRow:
    """Image -> views conditioned on the object's view 0: PSNR against its own renders, and part scores."""
    s = model.settings
    obj, cams, truth = object_views(model, root, object_id)
    out = model(image=truth[0], cameras=cams, seed=seed, three_d_aware=three_d_aware, num_inference_steps=steps,
                guidance_scale=guidance_scale, sampler=sampler, progress=False)
    return ImageBarRow(object_id, obj.caption, mean_psnr(out.images, truth),
                       score_parts(out.images, obj, cams, s.fovy, s.background))


@torch.no_grad()
def vae_round_trip_row(model, root, object_id: str, latent_noise: float = 0.0, seed: int = 0,
                       noise_cell: int = 4) -> ImageBarRow:
    """The object's ground-truth views encoded and decoded by the model's VAE, scored as generated
    views are: the best any sample of this model can reach, so the ceiling of the part scores.

    `latent_noise` s adds s x smooth N(0, 1) noise (`smooth_noise` over `noise_cell` latent pixels,
    drawn from `seed`) to the scaled latents before decoding: the scores of a sample whose latents
    are off by a smooth error of that size, in the unit a diffusion model's error has in these
    latents (their std is 1 by the VAE's scaling factor)."""
    s = model.settings
    obj, cams, truth = object_views(model, root, object_id)
    latents = model.encode(truth[None].to(model.pipeline.unet.dtype))
    if latent_noise:
        noise = smooth_noise(latents.shape, noise_cell, torch.Generator().manual_seed(seed))
        latents = latents + latent_noise * noise.to(latents)
    views = model.decode(latents)[0].float().cpu()
    return ImageBarRow(object_id, obj.caption, mean_psnr(views, truth), score_parts(views, obj, cams, s.fovy, s.background))


def image_bar_psnr(model, root, object_id: str, seed: int = 0, three_d_aware: bool = True,
                   steps: int | None = None, guidance_scale: float | None = None, sampler: str | None = None) -> float:
    """PSNR of image -> views against the object's own renders, conditioned on its view 0."""
    return image_bar_row(model, root, object_id, seed, three_d_aware, steps, guidance_scale, sampler).psnr


def training_captions(root) -> set[str]:
    """The captions of the toy dataset's train split (objects recreated from their ids)."""
    from videomv.eval.view_sets import read_split

    return {toy_object_for(root, o).caption for o in read_split(root, "train")}


class _LastStepSeen(Exception):
    """Raised by a probe's z0 hook to stop the loop after the last step it asked for."""


def first_step_views(model, root, object_id: str, num_frames: int, seed: int = 0):
    """The image model's conditional x0 estimate at the loop's first (noisiest) step, decoded, for
    the first `num_frames` orbit cameras of a test object conditioned on its view 0, with the
    ground truth at those cameras: ((F, 3, H, W), (F, 3, H, W)).

    This is the step where only the condition can tell the colours, so a model that lost its
    condition shows it here first (e.g. trained on 8-view windows, sampled with 24 views)."""
    estimates, truth = x0_estimates(model, root, object_id, [0], num_frames, seed)
    return estimates[0], truth


def x0_estimates(model, root, object_id: str, step_indices: list[int], num_frames: int | None = None,
                 seed: int = 0, decode=None):
    """The image model's conditional x0 estimates at the loop indices `step_indices` of one sampling
    run (the model's sampler, steps and guidance, not 3D-aware), decoded, for the first `num_frames`
    orbit cameras of a test object (default all) conditioned on its view 0:
    ({index: (F, 3, H, W)}, ground truth (F, 3, H, W)). `decode` maps (B, C, F, h, w) latents to
    (B, F, 3, H, W) images in [0, 1] (default the model's VAE).

    Against the truth they show where along the loop a sample keeps or loses what the first step
    knew; the loop stops after the last index asked for."""
    s = model.settings
    if s.task != "image":
        raise ValueError(f"x0_estimates probes an image model; this one is a {s.task!r} model")
    _, cams, truth = object_views(model, root, object_id)
    num_frames = len(cams) if num_frames is None else num_frames
    if not 1 <= num_frames <= len(cams):
        raise ValueError(f"num_frames must be in [1, {len(cams)}], got {num_frames}")
    wanted = sorted(set(step_indices))
    if not wanted or wanted[0] < 0 or wanted[-1] >= s.num_inference_steps:
        raise ValueError(f"step_indices must be loop indices in [0, {s.num_inference_steps - 1}], got {step_indices}")
    decode = decode or model.decode
    seen = {}

    def hook(i, t, z0_cond, z0_uncond, latents):
        if i in wanted:
            seen[i] = decode(z0_cond)[0].float().cpu()
        if i == wanted[-1]:
            raise _LastStepSeen

    try:
        model.pipeline(truth[0][None], cameras=cams[None, :num_frames], guidance_scale=s.guidance_scale,
                       num_inference_steps=s.num_inference_steps, sampler=s.sampler, seed=seed, target_fps=s.fps,
                       height=s.resolution, width=s.resolution, z0_hook=hook, progress=False)
    except _LastStepSeen:
        pass
    return seen, truth[:num_frames]


@torch.no_grad()
def prompt_losses(model, root, object_ids: list[str], timesteps: list[int], seed: int = 0) -> dict[int, dict[str, float]]:
    """The text model's training loss (MSE against its scheduler's target) on toy objects at fixed
    timesteps, with each object's own caption, with the next object's caption and with the empty
    prompt, and over the stacked objects alone (the one arrangement whose part order shows in the
    views, `world.order_shows`) with their own caption and with its parts swapped
    (`world.swapped_caption`): {t: {"own", "other", "empty", "stacked_own", "stacked_swapped"}}; the
    stacked pair is NaN where no object is stacked.

    Where "own" is well below "empty" the model uses the prompt; where "other" is far above "own"
    it could tell the captions apart; where "stacked_swapped" is no higher than "stacked_own" it
    does not read which part the caption puts on top. Comparing these with what samples show
    separates a model that ignores its prompt from a sampler that loses what the model learned."""
    s = model.settings
    if s.task != "text":
        raise ValueError(f"prompt_losses probes a text model; this one is a {s.task!r} model")
    if len(object_ids) < 2:
        raise ValueError(f"object_ids: need at least 2 objects (each is scored with another's caption), got {len(object_ids)}")
    pipe, scheduler, unet = model.pipeline, model.pipeline.scheduler, model.pipeline.unet
    views = [object_views(model, root, o) for o in object_ids]
    captions = [obj.caption for obj, _, _ in views]
    stacked = [i for i, (obj, _, _) in enumerate(views) if toyworld.order_shows(obj.recipe)]
    prompts = {"own": captions, "other": captions[1:] + captions[:1], "empty": [""] * len(captions),
               "swapped": [toyworld.swapped_caption(obj.recipe) for obj, _, _ in views]}
    # Latents, cameras and prompt embeddings do not depend on t: computed once, reused at every t.
    latents = [model.encode(truth[None].to(pipe.device, unet.dtype)) for _, _, truth in views]
    cameras = [cams[None].to(z) for (_, cams, _), z in zip(views, latents)]
    contexts = {k: pipe.encode_prompt(p, None, do_cfg=False).to(unet.dtype) for k, p in prompts.items()}

    def mean(values):
        return sum(values) / len(values) if values else float("nan")

    result = {}
    for t in timesteps:
        losses = {k: [] for k in prompts}
        for i, z in enumerate(latents):
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed * 100_003 + t * 1009 + i)).to(z)
            step = torch.tensor([t], device=z.device)
            noisy = scheduler.add_noise(z, noise, step)
            target = noise if scheduler.config.prediction_type == "epsilon" else scheduler.get_velocity(z, noise, step)
            for k, context in contexts.items():
                if k == "swapped" and i not in stacked:
                    continue
                pred = denoise(unet, noisy, step, MultiViewCondition(context[i : i + 1], cameras[i]))
                losses[k].append(float((pred.float() - target.float()).pow(2).mean()))

        result[t] = {k: mean(losses[k]) for k in ("own", "other", "empty")}
        result[t]["stacked_own"] = mean([losses["own"][i] for i in stacked])
        result[t]["stacked_swapped"] = mean(losses["swapped"])
    return result


def _noised_text_passes(model, root, object_ids: list[str]):
    """For probing a text model on toy objects under their own captions: (objects, cameras, a
    function that runs the UNet on every object's views noised to timestep t, in order, and the
    latent grid's (h, w))."""
    s = model.settings
    if s.task != "text":
        raise ValueError(f"this probe needs a text model; this one is a {s.task!r} model")
    if not object_ids:
        raise ValueError("object_ids: expected at least one toy object")
    pipe, scheduler, unet = model.pipeline, model.pipeline.scheduler, model.pipeline.unet
    views = [object_views(model, root, o) for o in object_ids]
    contexts = pipe.encode_prompt([obj.caption for obj, _, _ in views], None, do_cfg=False).to(unet.dtype)
    latents = [model.encode(truth[None].to(pipe.device, unet.dtype)) for _, _, truth in views]  # the same at every t

    def run(t: int, seed: int) -> None:
        step = torch.tensor([t], device=pipe.device)
        for i, ((_, cams, _), z) in enumerate(zip(views, latents)):
            noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed * 100_003 + t * 1009 + i))
            denoise(unet, scheduler.add_noise(z, noise.to(z), step), step,
                    MultiViewCondition(contexts[i : i + 1], cams[None].to(z)))

    return [obj for obj, _, _ in views], [cams for _, cams, _ in views], run, tuple(latents[0].shape[-2:])


def cross_attention_by_timestep(model, root, object_ids: list[str], timesteps: list[int], seed: int = 0) -> dict:
    """Where the text model's cross-attention looks (`videomv.eval.cross_attention`) while it
    denoises toy objects' views noised to each of `timesteps` under their own captions:
    {t: [AttentionShares per layer, then all layers]}."""
    objects, _, run, _ = _noised_text_passes(model, root, object_ids)
    pipe = model.pipeline
    roles = token_roles(pipe.text_conditioner.tokenize([obj.caption for obj in objects]), pipe.tokenizer.eos_token_id)
    result = {}
    for t in timesteps:
        with record_cross_attention(pipe.unet) as records:
            run(t, seed)
        result[t] = attention_shares(records, [roles[i : i + 1] for i in range(len(objects))])
    return result


def grounding_by_timestep(model, root, object_ids: list[str], timesteps: list[int], seed: int = 0) -> dict:
    """How much of each caption word's cross-attention falls on its part (`videomv.train.grounding`)
    in the same passes as `cross_attention_by_timestep`: {t: (inside, uniform)}, the mean over the
    words, views and layers that count of the share inside the part's mask, and of the share
    uniform attention would put there."""
    from videomv.train.grounding import keep_cross_attention, word_attention

    from .grounding import grounding_targets

    objects, cameras, run, size = _noised_text_passes(model, root, object_ids)
    pipe = model.pipeline
    targets = [grounding_targets(pipe.tokenizer, [obj], cams[None], size, pipe.tokenizer.model_max_length)
               for obj, cams in zip(objects, cameras)]
    result = {}
    for t in timesteps:
        inside, uniform, count = 0.0, 0.0, 0
        with torch.no_grad(), keep_cross_attention(pipe.unet) as maps:
            run(t, seed)
        layers = len(maps) // len(objects)
        for i, (tokens, masks) in enumerate(targets):
            for share, area, counts in word_attention(maps[i * layers: (i + 1) * layers], tokens, masks):
                inside += float(share[counts].sum())
                uniform += float(area[counts].sum())
                count += int(counts.sum())
        result[t] = (inside / max(count, 1), uniform / max(count, 1))
    return result
