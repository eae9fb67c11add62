"""Per-part colour and layout scores of generated views of a toy object, from what the toy world
knows: each part's colour, where it is drawn at each camera (analytic part masks), and the
arrangement its caption names.

A *part* is a primitive, or one half of a two-tone primitive. Three scores:

- `colour_in_place`: the generated views' mean colour inside the part's ground-truth mask is
  nearest, among the palette colours under the part's own shading, to the part's colour. This
  asks for *this* object at *these* cameras (the image model's task).
- `colour_present`: the generated views hold at least half as many pixels of the part's colour
  as the ground truth draws of that colour. Pixels are classed by the palette colour they are
  nearest to under any shading the toy light makes (or the background). This asks for *some*
  object with the caption (the text model's task: its sizes and turns are its own).
- `layout_right`: for objects of two or more parts, per view the centroids of the pixels of each
  part's colour, compared with the arrangement: "on top of" puts the top colour above the bottom
  one and the pair more vertical than horizontal; "next to" puts the pair more horizontal than
  vertical; "half ... and half" asks for two touching regions drawn in similar amounts (which
  two bodies touching in the image also are: the image cannot tell them apart); "in a row" also puts the middle colour between the ends. Views where a colour has too few pixels do
  not count; fewer than half the views counting is a wrong layout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from videomv.geometry import get_rays

from . import world

PALETTE_NAMES = tuple(world.PALETTE)
PALETTE_RGB = torch.tensor([world.PALETTE[n] for n in PALETTE_NAMES])
BACKGROUND = len(PALETTE_NAMES)  # class index of the background in `classify`


@dataclass(frozen=True)
class Part:
    """Primitive `primitive` of the object; `half` 0 for all of it, +1 / -1 for the local x >= 0 /
    x < 0 half of a two-tone primitive."""

    primitive: int
    half: int
    colour: str


def object_parts(obj: world.ToyObject) -> list[Part]:
    """The object's parts in recipe order (two-tone: first colour, then second)."""
    parts = []
    for i, prim in enumerate(obj.primitives):
        if prim.color2 is None:
            parts.append(Part(i, 0, prim.color))
        else:
            parts += [Part(i, 1, prim.color), Part(i, -1, prim.color2)]
    return parts


def part_coverage(obj: world.ToyObject, c2w: torch.Tensor, resolution: int, fovy: float = world.FOVY,
                  supersample: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Analytic part masks: (coverage (P, V, H, W), shade (P, V, H, W)) for the parts of
    `object_parts(obj)`, with the renderer's rays and nearest-hit rule. coverage is the fraction of
    each pixel's supersample^2 rays whose nearest hit is the part; shade, their summed Lambert
    factor over the same count (so shade / coverage is the part's mean shading in the pixel)."""
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    c2w = c2w[None] if c2w.ndim == 2 else c2w
    s = supersample
    origins, dirs = get_rays(c2w, resolution * s, resolution * s, fovy)
    o, d = origins.reshape(-1, 3).float(), dirs.reshape(-1, 3).float()
    t_min = torch.full((o.shape[0],), math.inf)
    part_id = torch.full((o.shape[0],), -1, dtype=torch.long)
    shade = torch.zeros(o.shape[0])
    parts = object_parts(obj)
    for i, prim in enumerate(obj.primitives):
        rot = world._yaw_matrix(prim.yaw)
        o_local = (o - torch.tensor(prim.center, dtype=torch.float32)) @ rot
        d_local = d @ rot
        t, n_local = world._INTERSECT[prim.shape](o_local, d_local, prim.size)
        closer = t < t_min
        if not closer.any():
            continue
        t_min = torch.where(closer, t, t_min)
        if prim.color2 is None:
            ids = torch.full_like(part_id, parts.index(Part(i, 0, prim.color)))
        else:
            x = (o_local + t.clamp_max(1e6)[:, None] * d_local)[:, 0]
            ids = torch.where(x >= 0, parts.index(Part(i, 1, prim.color)), parts.index(Part(i, -1, prim.color2)))
        part_id = torch.where(closer, ids, part_id)
        normal = n_local @ rot.T
        normal = torch.where((normal * d).sum(-1, keepdim=True) > 0, -normal, normal)
        shade = torch.where(closer, world.AMBIENT + world.DIFFUSE * (normal @ world.LIGHT_DIR).clamp_min(0), shade)
    V = c2w.shape[0]
    one_hot = torch.nn.functional.one_hot(part_id.clamp_min(0), len(parts)).float() * (part_id >= 0)[:, None]
    per_ray = torch.stack([one_hot, one_hot * shade[:, None]])  # (2, N, P)
    per_ray = per_ray.reshape(2, V, resolution, s, resolution, s, len(parts)).sum((3, 5)) / (s * s)
    coverage, shade_sum = per_ray.permute(0, 4, 1, 2, 3)
    return coverage, shade_sum


def _check_views(views: torch.Tensor) -> None:
    if views.ndim != 4 or views.shape[1] != 3:
        raise ValueError(f"views: expected (V, 3, H, W) RGB, got shape {tuple(views.shape)}")


def colour_in_place(views: torch.Tensor, parts: list[Part], coverage: torch.Tensor, shade: torch.Tensor,
                    min_coverage: float = 0.75) -> list[bool]:
    """Per part: is the mean colour of `views` (V, 3, H, W) inside the part's mask nearest to the
    part's palette colour, each palette colour taken under the part's mean shading there. The mask
    is the pixels the part covers at least `min_coverage` of (its best-covered pixels if none)."""
    _check_views(views)
    if coverage.shape[0] != len(parts) or coverage.shape[1:] != views[:, 0].shape:
        raise ValueError(f"coverage: expected shape ({len(parts)}, {', '.join(map(str, views[:, 0].shape))}), "
                         f"got {tuple(coverage.shape)}")
    hits = []
    for part, cov, sh in zip(parts, coverage, shade):
        if cov.max() <= 0:
            raise ValueError(f"part {part} is not drawn at any camera; it cannot be scored")
        w = cov * (cov >= min(min_coverage, float(cov.max())))
        mean = (views * w[:, None]).sum((0, 2, 3)) / w.sum()
        mean_shade = (sh * (w > 0)).sum() / (cov * (w > 0)).sum()
        nearest = (PALETTE_RGB * mean_shade - mean).norm(dim=-1).argmin()
        hits.append(PALETTE_NAMES[int(nearest)] == part.colour)
    return hits


def classify(views: torch.Tensor, background, background_tolerance: float = 0.06) -> torch.Tensor:
    """Per pixel of `views` (V, 3, H, W): the index of the palette colour it is nearest to under
    some shading in [AMBIENT, AMBIENT + DIFFUSE], or BACKGROUND if `background` is nearer or
    within `background_tolerance` (a grey background is also a shaded white): (V, H, W)."""
    _check_views(views)
    pix = views.permute(0, 2, 3, 1)[..., None, :]  # (V, H, W, 1, 3)
    p = PALETTE_RGB
    a = ((pix * p).sum(-1) / (p * p).sum(-1)).clamp(world.AMBIENT, world.AMBIENT + world.DIFFUSE)
    residual = (pix - a[..., None] * p).norm(dim=-1)  # (V, H, W, 8)
    bg = (pix[..., 0, :] - torch.as_tensor(background, dtype=views.dtype)).norm(dim=-1)
    classes = torch.cat([residual, bg[..., None]], -1).argmin(-1)
    return torch.where(bg <= background_tolerance, BACKGROUND, classes)


def colour_present(classes: torch.Tensor, parts: list[Part], coverage: torch.Tensor, share: float = 0.5) -> list[bool]:
    """Per part: do `classes` (from `classify`) hold at least `share` times as many pixels of the
    part's colour as the ground truth (the parts of that colour, by analytic coverage)."""
    hits = []
    for part in parts:
        truth = sum(float(cov.sum()) for p, cov in zip(parts, coverage) if p.colour == part.colour)
        drawn = float((classes == PALETTE_NAMES.index(part.colour)).sum())
        hits.append(drawn >= share * truth)
    return hits


def _centroids(classes: torch.Tensor, colour: str, min_pixels: int):
    """Per view (x, y) centroid of the colour's pixels in units of the image size, NaN below min_pixels."""
    _, H, W = classes.shape
    mask = (classes == PALETTE_NAMES.index(colour)).float()
    n = mask.sum((1, 2))
    ys = (torch.arange(H, dtype=torch.float32) + 0.5) / H
    xs = (torch.arange(W, dtype=torch.float32) + 0.5) / W
    cx = (mask * xs).sum((1, 2)) / n.clamp_min(1)
    cy = (mask * ys[:, None]).sum((1, 2)) / n.clamp_min(1)
    c = torch.stack([cx, cy], -1)
    return torch.where((n >= min_pixels)[:, None], c, torch.full_like(c, math.nan))


def _pair_layout(a, b, seen):
    """(mean |dx|, mean |dy|, mean dy) of b - a over the views where both are seen."""
    d = (b - a)[seen]
    return float(d[:, 0].abs().mean()), float(d[:, 1].abs().mean()), float(d[:, 1].mean())


def layout_right(classes: torch.Tensor, arrangement: str, parts: list[Part], min_pixels: int | None = None) -> bool | None:
    """Whether the colours in `classes` (V, H, W) are arranged as `arrangement` says (see the module
    docstring); None for a single part. `min_pixels` per colour and view defaults to 0.2 % of a view."""
    if arrangement not in world.ARRANGEMENTS:
        raise ValueError(f"unknown arrangement {arrangement!r}; expected one of {list(world.ARRANGEMENTS)}")
    if arrangement == "single":
        return None
    V, H, W = classes.shape
    min_pixels = max(4, round(0.002 * H * W)) if min_pixels is None else min_pixels
    colours = [p.colour for p in parts]
    cents = [_centroids(classes, c, min_pixels) for c in colours]
    seen = torch.stack([~c[:, 0].isnan() for c in cents]).all(0)
    if int(seen.sum()) * 2 < V:
        return False
    if arrangement == "stacked":  # parts: top, bottom
        dx, dy, down = _pair_layout(cents[0], cents[1], seen)
        return down > 0 and dy > dx
    if arrangement == "two_tone":
        return _two_tone(classes, colours, seen)
    if arrangement == "side_by_side":
        dx, dy, _ = _pair_layout(cents[0], cents[1], seen)
        return dx > dy
    # row of three: the ends' colours may be the same
    first, middle, last = cents
    if colours[0] != colours[2]:
        (dx1, dy1, _), (dx2, dy2, _) = _pair_layout(first, middle, seen), _pair_layout(middle, last, seen)
        end = (last - first)[seen]
        t = ((middle - first)[seen] * end).sum(-1) / (end * end).sum(-1).clamp_min(1e-12)
        return dx1 > dy1 and dx2 > dy2 and float(((t > 0) & (t < 1)).float().mean()) >= 0.5
    # same colour at both ends: it must show on both sides of the middle, left and right
    end_mask = classes == PALETTE_NAMES.index(colours[0])
    xs = torch.arange(W, dtype=torch.float32)[None, None, :].add(0.5) / W
    left = (end_mask & (xs < middle[:, 0, None, None])).sum((1, 2))
    right = (end_mask & (xs > middle[:, 0, None, None])).sum((1, 2))
    both = ((left >= min_pixels) & (right >= min_pixels))[seen]
    return float(both.float().mean()) >= 0.5


def _two_tone(classes, colours, seen) -> bool:
    """Two halves of one body: drawn in similar amounts (within 3x over the orbit), touching in at
    least half the views where both show."""
    a, b = (classes == PALETTE_NAMES.index(c) for c in colours)
    na, nb = float(a.sum()), float(b.sum())
    if not (na <= 3 * nb and nb <= 3 * na):
        return False
    touch = (a[:, 1:] & b[:, :-1]) | (a[:, :-1] & b[:, 1:])
    touch_x = (a[:, :, 1:] & b[:, :, :-1]) | (a[:, :, :-1] & b[:, :, 1:])
    touching = touch.any(-1).any(-1) | touch_x.any(-1).any(-1)
    return float(touching[seen].float().mean()) >= 0.5


@dataclass
class PartScore:
    """One object's per-part scores (see the module docstring)."""

    arrangement: str
    colours: tuple[str, ...]
    in_place: list[bool]
    present: list[bool]
    layout: bool | None


def score_parts(views: torch.Tensor, obj: world.ToyObject, c2w: torch.Tensor, fovy: float, background) -> PartScore:
    """Score generated `views` (V, 3, H, W) of toy object `obj` at cameras `c2w` (V, 4, 4)."""
    _check_views(views)
    if views.shape[2] != views.shape[3]:
        raise ValueError(f"views: expected square views, got {views.shape[2]}x{views.shape[3]}")
    if len(views) != len(c2w):
        raise ValueError(f"views: {len(views)} views for {len(c2w)} cameras")
    parts = object_parts(obj)
    coverage, shade = part_coverage(obj, c2w, views.shape[-1], fovy)
    views = views.float().clamp(0, 1)
    classes = classify(views, background)
    return PartScore(obj.recipe[0], tuple(p.colour for p in parts), colour_in_place(views, parts, coverage, shade),
                     colour_present(classes, parts, coverage), layout_right(classes, obj.recipe[0], parts))
