"""The toy world: procedurally generated objects made of 1-3 coloured primitives, each with a
caption from a fixed grammar, rendered by exact ray-primitive intersection.

An object is drawn from (seed, index) alone: first a *recipe* (the discrete choices the caption is
made from: arrangement, shapes, colour names), then its continuous parameters (sizes, offsets,
yaw, camera elevation). Many objects share a recipe, hence a caption; `sample_like` draws a fresh
object with the same recipe, which the evaluation uses as the "same caption" reference.

World frame as in `videomv.geometry`: +y up, the object centred at the origin inside a sphere of
radius `OBJECT_RADIUS`. Two-tone primitives are split by their local x = 0 plane, and every
primitive has a random yaw, so views around the orbit differ and a multi-view model has to use
the camera. The renderer is independent of the Gaussian renderer: analytic intersections for
sphere, box, cylinder and cone, sphere tracing of the exact SDF for the torus.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from videomv.geometry import get_rays, orbit_camera

VERSION = 1
NUM_VIEWS = 24
RADIUS = 2.0
FOVY = 49.1
ELEVATION_RANGE = (5.0, 30.0)
OBJECT_RADIUS = 0.6

PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.10),
    "green": (0.10, 0.70, 0.15),
    "blue": (0.10, 0.25, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (1.00, 0.50, 0.00),
    "purple": (0.55, 0.15, 0.75),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
}
SHAPES = ("sphere", "cube", "cylinder", "cone", "torus")
# Shapes something can stand on (a flat top).
STACK_BASES = ("cube", "cylinder")
ARRANGEMENTS = {"single": 0.35, "two_tone": 0.25, "stacked": 0.2, "side_by_side": 0.15, "row": 0.05}

LIGHT_DIR = torch.nn.functional.normalize(torch.tensor([0.4, 0.8, 0.45]), dim=0)
AMBIENT, DIFFUSE = 0.35, 0.65


@dataclass
class Primitive:
    """One shape in its local frame (centred, y up), placed by `center` and a yaw about +y.

    size: sphere (radius,), cube (half side,), cylinder/cone (radius, half height),
    torus (major radius, minor radius; the ring stands upright in the local xy plane).
    `color2`, when set, paints the local x < 0 half.
    """

    shape: str
    size: tuple[float, ...]
    center: tuple[float, float, float]
    yaw: float
    color: str
    color2: str | None = None

    def half_extent(self) -> np.ndarray:
        """Half size of the local axis-aligned bounding box."""
        if self.shape == "sphere":
            return np.full(3, self.size[0])
        if self.shape == "cube":
            return np.full(3, self.size[0])
        if self.shape in ("cylinder", "cone"):
            return np.array([self.size[0], self.size[1], self.size[0]])
        if self.shape == "torus":
            outer = self.size[0] + self.size[1]
            return np.array([outer, outer, self.size[1]])
        raise ValueError(f"unknown shape {self.shape!r}; expected one of {SHAPES}")

    def bound_radius(self) -> float:
        """Radius of a sphere around `center` enclosing the primitive."""
        if self.shape == "sphere":
            return float(self.size[0])
        if self.shape == "torus":
            return float(self.size[0] + self.size[1])
        return float(np.linalg.norm(self.half_extent()))

    def world_half_extent(self) -> np.ndarray:
        c, s = abs(math.cos(self.yaw)), abs(math.sin(self.yaw))
        hx, hy, hz = self.half_extent()
        return np.array([c * hx + s * hz, hy, s * hx + c * hz])


@dataclass
class ToyObject:
    recipe: tuple
    caption: str
    primitives: list[Primitive]
    elevation: float
    index: int = -1
    seed: int = -1
    extras: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- #
# Sampling
# ------------------------------------------------------------------------------------------- #


def _rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return np.random.default_rng([seed, index, stream])


def sample_recipe(rng: np.random.Generator) -> tuple:
    """The discrete choices: (arrangement, ((shape, colour, colour2 or None), ...))."""
    names = list(PALETTE)
    arrangement = rng.choice(list(ARRANGEMENTS), p=list(ARRANGEMENTS.values()))

    def colour(exclude=()):
        return str(rng.choice([n for n in names if n not in exclude]))

    if arrangement == "single":
        parts = ((str(rng.choice(SHAPES)), colour(), None),)
    elif arrangement == "two_tone":
        c1 = colour()
        parts = ((str(rng.choice(SHAPES)), c1, colour(exclude=(c1,))),)
    elif arrangement == "stacked":
        bottom_colour = colour()
        parts = (
            (str(rng.choice(SHAPES)), colour(exclude=(bottom_colour,)), None),  # top
            (str(rng.choice(STACK_BASES)), bottom_colour, None),
        )
    elif arrangement == "side_by_side":
        c1 = colour()
        parts = ((str(rng.choice(SHAPES)), c1, None), (str(rng.choice(SHAPES)), colour(exclude=(c1,)), None))
    else:  # row of three
        c1 = colour()
        c2 = colour(exclude=(c1,))
        parts = tuple((str(rng.choice(SHAPES)), c, None) for c in (c1, c2, colour(exclude=(c2,))))
    return (str(arrangement), parts)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_from_recipe(recipe: tuple) -> str:
    arrangement, parts = recipe

    def noun(part):
        shape, c1, _ = part
        return f"{_article(c1)} {c1} {shape}"

    if arrangement == "single":
        return noun(parts[0])
    if arrangement == "two_tone":
        shape, c1, c2 = parts[0]
        return f"a {shape} that is half {c1} and half {c2}"
    if arrangement == "stacked":
        return f"{noun(parts[0])} on top of {noun(parts[1])}"
    if arrangement == "side_by_side":
        return f"{noun(parts[0])} next to {noun(parts[1])}"
    if arrangement == "row":
        return f"{noun(parts[0])}, {noun(parts[1])} and {noun(parts[2])} in a row"
    raise ValueError(f"unknown arrangement {arrangement!r}; expected one of {list(ARRANGEMENTS)}")


def order_shows(recipe: tuple) -> bool:
    """Whether the order of the caption's parts shows in the views. Only a stack's does (its first
    part is on top): side-by-side pairs and rows lie along a random horizontal axis and a two-tone
    object's halves turn with its random yaw, so their parts in the other order describe the same
    views seen from another azimuth."""
    return recipe[0] == "stacked"


def swapped_caption(recipe: tuple) -> str:
    """The caption with its parts in reverse order ("a red cube on top of a blue cylinder" -> "a blue
    cylinder on top of a red cube"; a two-tone object's colours swapped): the same words. Where the
    order shows in the views (`order_shows`), a model that scores it as well as the caption itself
    does not read which part goes where. A one-part, one-colour object has no other order and gets
    its own caption."""
    arrangement, parts = recipe
    if arrangement == "two_tone":
        shape, c1, c2 = parts[0]
        return caption_from_recipe((arrangement, ((shape, c2, c1),)))
    return caption_from_recipe((arrangement, tuple(parts)[::-1]))


def _sample_size(shape: str, scale: float, rng: np.random.Generator) -> tuple[float, ...]:
    """Sizes relative to a nominal extent `scale` (roughly the half height)."""
    if shape == "sphere":
        return (scale * rng.uniform(0.8, 1.0),)
    if shape == "cube":
        return (scale * rng.uniform(0.7, 0.9),)
    if shape == "cylinder":
        return (scale * rng.uniform(0.5, 0.9), scale * rng.uniform(0.6, 1.0))
    if shape == "cone":
        return (scale * rng.uniform(0.6, 0.9), scale * rng.uniform(0.7, 1.0))
    if shape == "torus":
        major = scale * rng.uniform(0.65, 0.8)
        return (major, major * rng.uniform(0.3, 0.45))
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _arrange(recipe: tuple, rng: np.random.Generator) -> list[Primitive]:
    arrangement, parts = recipe
    prims = []
    for shape, c1, c2 in parts:
        size = _sample_size(shape, 1.0, rng)
        prims.append(Primitive(shape, size, (0.0, 0.0, 0.0), float(rng.uniform(0, 2 * math.pi)), c1, c2))
    if arrangement == "stacked":
        top, bottom = prims
        top_h, bottom_h = top.half_extent()[1], bottom.half_extent()[1]
        offset = float(rng.uniform(-0.1, 0.1))
        bottom.center = (0.0, -top_h, 0.0)
        top.center = (offset, bottom_h, -offset)
    elif arrangement in ("side_by_side", "row"):
        # along a random horizontal direction, with a small gap
        angle = float(rng.uniform(0, 2 * math.pi))
        axis = np.array([math.cos(angle), 0.0, math.sin(angle)])
        widths = [p.world_half_extent()[[0, 2]].max() for p in prims]
        pos = 0.0
        for i, p in enumerate(prims):
            if i:
                pos += widths[i - 1] + float(rng.uniform(0.05, 0.2)) + widths[i]
            # all stand on the same ground plane
            p.center = tuple((axis * pos + np.array([0.0, p.half_extent()[1], 0.0])).tolist())
    return prims


def _fit(prims: list[Primitive], radius: float) -> None:
    """Centre the union's bounding box at the origin and scale it into a sphere of `radius`."""
    lo = np.min([np.array(p.center) - p.world_half_extent() for p in prims], axis=0)
    hi = np.max([np.array(p.center) + p.world_half_extent() for p in prims], axis=0)
    mid = (lo + hi) / 2
    extent = max(np.linalg.norm(np.array(p.center) - mid) + p.bound_radius() for p in prims)
    scale = radius / extent
    for p in prims:
        p.center = tuple(((np.array(p.center) - mid) * scale).tolist())
        p.size = tuple(s * scale for s in p.size)


def realize(recipe: tuple, rng: np.random.Generator) -> ToyObject:
    prims = _arrange(recipe, rng)
    _fit(prims, OBJECT_RADIUS * float(rng.uniform(0.85, 1.0)))
    elevation = float(rng.uniform(*ELEVATION_RANGE))
    return ToyObject(recipe=recipe, caption=caption_from_recipe(recipe), primitives=prims, elevation=elevation)


def sample_object(seed: int, index: int) -> ToyObject:
    """Object `index` of the toy world with `seed`; depends only on (seed, index)."""
    rng = _rng(seed, index)
    obj = realize(sample_recipe(rng), rng)
    obj.seed, obj.index = seed, index
    return obj


def sample_like(obj: ToyObject, seed: int, index: int = 0) -> ToyObject:
    """A different object with the same recipe (and caption) as `obj`, drawn from (seed, index)."""
    new = realize(obj.recipe, _rng(seed, index, stream=1))
    new.seed, new.index = seed, index
    return new


def orbit_for(obj: ToyObject, num_views: int = NUM_VIEWS, radius: float = RADIUS):
    """The object's orbit: (c2w (V,4,4), elevations (V,), azimuths (V,)), azimuth 0..360 step."""
    azimuths = torch.arange(num_views, dtype=torch.float32) * (360.0 / num_views)
    elevations = torch.full((num_views,), obj.elevation)
    return orbit_camera(elevations, azimuths, radius), elevations, azimuths


# ------------------------------------------------------------------------------------------- #
# Rendering
# ------------------------------------------------------------------------------------------- #


def _yaw_matrix(yaw: float) -> torch.Tensor:
    """Local -> world rotation about +y."""
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _nearest_root(a, b, c, valid_fn, o, d):
    """Smallest t > 0 solving a t^2 + 2 b t + c = 0 with valid_fn(o + t d); inf otherwise."""
    disc = b * b - a * c
    ok = (disc >= 0) & (a.abs() > 1e-12)
    sq = disc.clamp_min(0).sqrt()
    safe_a = torch.where(a.abs() > 1e-12, a, torch.ones_like(a))
    t_best = torch.full_like(a, math.inf)
    for sign in (1.0, -1.0):  # both roots; keep the nearest valid one
        t = (-b - sign * sq) / safe_a
        good = ok & (t > 1e-6) & valid_fn(o + t[..., None] * d)
        t_best = torch.where(good & (t < t_best), t, t_best)
    return t_best


def _intersect_sphere(o, d, size):
    (r,) = size
    a = (d * d).sum(-1)
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - r * r
    t = _nearest_root(a, b, c, lambda p: torch.ones(p.shape[:-1], dtype=torch.bool), o, d)
    p = o + t.clamp_max(1e6)[..., None] * d
    return t, p / r


def _intersect_box(o, d, size):
    (h,) = size
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0, t1 = (-h - o) * inv, (h - o) * inv
    t_near = torch.minimum(t0, t1)
    t_enter, axis = t_near.max(-1)
    t_exit = torch.maximum(t0, t1).min(-1).values
    hit = (t_enter <= t_exit) & (t_enter > 1e-6)
    t = torch.where(hit, t_enter, torch.full_like(t_enter, math.inf))
    normal = torch.nn.functional.one_hot(axis, 3).to(d.dtype) * -torch.sign(d)
    return t, normal


def _intersect_cylinder(o, d, size):
    r, h = size
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - r * r
    t_side = _nearest_root(a, b, c, lambda p: p[..., 1].abs() <= h, o, d)
    t_cap = _cap(o, d, h, r)
    t = torch.minimum(t_side, t_cap)
    p = o + t.clamp_max(1e6)[..., None] * d
    side_n = torch.stack([p[..., 0], torch.zeros_like(p[..., 0]), p[..., 2]], -1) / r
    cap_n = torch.stack([torch.zeros_like(t), torch.sign(p[..., 1]), torch.zeros_like(t)], -1)
    return t, torch.where((t_cap < t_side)[..., None], cap_n, side_n)


def _cap(o, d, h, r, heights=None):
    """Nearest hit with the discs y = +-h (or the given heights) of radius r."""
    heights = (h, -h) if heights is None else heights
    t_best = torch.full(o.shape[:-1], math.inf)
    dy = torch.where(d[..., 1].abs() < 1e-12, torch.full_like(d[..., 1], 1e-12), d[..., 1])
    for y in heights:
        t = (y - o[..., 1]) / dy
        p = o + t[..., None] * d
        good = (t > 1e-6) & (p[..., 0] ** 2 + p[..., 2] ** 2 <= r * r)
        t_best = torch.where(good & (t < t_best), t, t_best)
    return t_best


def _intersect_cone(o, d, size):
    """Apex at y = +h, base disc of radius r at y = -h."""
    r, h = size
    k2 = (r / (2 * h)) ** 2
    oy = h - o[..., 1]
    a = d[..., 0] ** 2 + d[..., 2] ** 2 - k2 * d[..., 1] ** 2
    b = o[..., 0] * d[..., 0] + o[..., 2] * d[..., 2] + k2 * oy * d[..., 1]
    c = o[..., 0] ** 2 + o[..., 2] ** 2 - k2 * oy**2
    t_side = _nearest_root(a, b, c, lambda p: p[..., 1].abs() <= h, o, d)
    t_base = _cap(o, d, h, r, heights=(-h,))
    t = torch.minimum(t_side, t_base)
    p = o + t.clamp_max(1e6)[..., None] * d
    side_n = torch.nn.functional.normalize(
        torch.stack([p[..., 0], k2 * (h - p[..., 1]), p[..., 2]], -1), dim=-1
    )
    base_n = torch.tensor([0.0, -1.0, 0.0]).expand_as(side_n)
    return t, torch.where((t_base < t_side)[..., None], base_n, side_n)


def _torus_sdf(p, major, minor):
    q = torch.stack([p[..., :2].norm(dim=-1) - major, p[..., 2]], -1)
    return q.norm(dim=-1) - minor


def _intersect_torus(o, d, size, steps: int = 64):
    """Sphere tracing of the exact torus SDF (ring in the local xy plane), started at the
    bounding sphere."""
    major, minor = size
    bound = major + minor
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - bound * bound
    disc = b * b - c
    t = torch.full(o.shape[:-1], math.inf)
    candidates = (disc > 0).nonzero(as_tuple=True)
    if candidates[0].numel() == 0:
        return t, torch.zeros_like(o)
    oc, dc = o[candidates], d[candidates]
    t_far = -b[candidates] + disc[candidates].sqrt()
    tc = (-b[candidates] - disc[candidates].sqrt()).clamp_min(0)
    for _ in range(steps):
        dist = _torus_sdf(oc + tc[..., None] * dc, major, minor)
        tc = tc + dist
    p = oc + tc[..., None] * dc
    hit = (_torus_sdf(p, major, minor).abs() < 1e-3 * bound) & (tc <= t_far)
    t[candidates] = torch.where(hit, tc, torch.full_like(tc, math.inf))
    ring = torch.nn.functional.normalize(
        torch.cat([p[..., :2], torch.zeros_like(p[..., 2:])], -1), dim=-1
    ) * major
    normal = torch.zeros_like(o)
    normal[candidates] = torch.nn.functional.normalize(p - ring, dim=-1)
    return t, normal


_INTERSECT = {
    "sphere": _intersect_sphere,
    "cube": _intersect_box,
    "cylinder": _intersect_cylinder,
    "cone": _intersect_cone,
    "torus": _intersect_torus,
}


def render_rays(obj: ToyObject, origins: torch.Tensor, dirs: torch.Tensor):
    """Shade rays (..., 3): returns rgb (..., 3) (zero where nothing is hit) and hit mask (...)."""
    shape = origins.shape[:-1]
    o, d = origins.reshape(-1, 3).float(), dirs.reshape(-1, 3).float()
    t_min = torch.full((o.shape[0],), math.inf)
    rgb = torch.zeros(o.shape[0], 3)
    for prim in obj.primitives:
        if prim.shape not in _INTERSECT:
            raise ValueError(f"unknown shape {prim.shape!r}; expected one of {SHAPES}")
        # only rays that meet the primitive's bounding sphere are intersected exactly
        centre = torch.tensor(prim.center, dtype=torch.float32)
        oc = o - centre
        b = (oc * d).sum(-1)
        near = (b * b - (oc * oc).sum(-1) + (prim.bound_radius() * 1.001) ** 2 > 0).nonzero(as_tuple=True)[0]
        if near.numel() == 0:
            continue
        rot = _yaw_matrix(prim.yaw)
        o_local, d_local = oc[near] @ rot, d[near] @ rot  # rot^T applied to row vectors
        t, n_local = _INTERSECT[prim.shape](o_local, d_local, prim.size)
        closer = t < t_min[near]
        if not closer.any():
            continue
        keep = near[closer]
        t, n_local, o_local, d_local = t[closer], n_local[closer], o_local[closer], d_local[closer]
        t_min[keep] = t
        p_local = o_local + t[:, None] * d_local
        base = torch.tensor(PALETTE[prim.color])
        colour = base.expand(keep.numel(), 3)
        if prim.color2 is not None:
            colour = torch.where(p_local[:, :1] >= 0, base, torch.tensor(PALETTE[prim.color2]))
        normal = n_local @ rot.T
        normal = torch.where((normal * d[keep]).sum(-1, keepdim=True) > 0, -normal, normal)
        shade = AMBIENT + DIFFUSE * (normal @ LIGHT_DIR).clamp_min(0)
        rgb[keep] = colour * shade[:, None]
    hit = torch.isfinite(t_min)
    return rgb.clamp(0, 1).reshape(*shape, 3), hit.reshape(shape)


def render_object(obj: ToyObject, c2w: torch.Tensor, resolution: int, fovy: float = FOVY, supersample: int = 2):
    """RGBA renders (V, H, W, 4) in [0, 1] of `obj` from project c2w poses (V, 4, 4).

    RGB is straight (not premultiplied), alpha is pixel coverage from supersample^2 rays per pixel.
    """
    if resolution < 1 or supersample < 1:
        raise ValueError(f"resolution and supersample must be >= 1, got {resolution}, {supersample}")
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    if c2w.ndim == 2:
        c2w = c2w[None]
    s = supersample
    origins, dirs = get_rays(c2w, resolution * s, resolution * s, fovy)
    rgb, hit = render_rays(obj, origins, dirs)
    V = c2w.shape[0]
    hit = hit.float()
    # average the s x s sub-pixels
    rgb_sum = (rgb * hit[..., None]).reshape(V, resolution, s, resolution, s, 3).sum((2, 4))
    cover = hit.reshape(V, resolution, s, resolution, s).sum((2, 4))
    rgb = rgb_sum / cover.clamp_min(1)[..., None]
    alpha = cover / (s * s)
    return torch.cat([rgb, alpha[..., None]], -1)


def to_uint8(rgba: torch.Tensor) -> np.ndarray:
    return (rgba.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------- #
# Occupancy (the analytic solid, for reference meshes)
# ------------------------------------------------------------------------------------------- #


def primitive_occupancy(prim: Primitive, points: torch.Tensor) -> torch.Tensor:
    """Whether world points (..., 3) lie inside the primitive (closed solid), bool (...)."""
    points = torch.as_tensor(points, dtype=torch.float32)
    centre = torch.tensor(prim.center, dtype=torch.float32)
    p = (points - centre) @ _yaw_matrix(prim.yaw)  # world -> local (rot^T on row vectors)
    x, y, z = p.unbind(-1)
    if prim.shape == "sphere":
        return p.norm(dim=-1) <= prim.size[0]
    if prim.shape == "cube":
        return p.abs().max(-1).values <= prim.size[0]
    if prim.shape == "cylinder":
        r, h = prim.size
        return (x * x + z * z <= r * r) & (y.abs() <= h)
    if prim.shape == "cone":  # apex at y = +h, base disc of radius r at y = -h
        r, h = prim.size
        return (y.abs() <= h) & ((x * x + z * z).sqrt() <= r * (h - y) / (2 * h))
    if prim.shape == "torus":  # ring in the local xy plane
        return _torus_sdf(p, *prim.size) <= 0
    raise ValueError(f"unknown shape {prim.shape!r}; expected one of {SHAPES}")


def occupancy(obj: ToyObject, points: torch.Tensor) -> torch.Tensor:
    """Whether world points (..., 3) lie inside the object (union of its primitives), bool (...)."""
    points = torch.as_tensor(points, dtype=torch.float32)
    if points.shape[-1] != 3:
        raise ValueError(f"points: expected shape (..., 3), got {tuple(points.shape)}")
    inside = torch.zeros(points.shape[:-1], dtype=torch.bool)
    for prim in obj.primitives:
        inside |= primitive_occupancy(prim, points)
    return inside
