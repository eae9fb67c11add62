"""Render a folder of meshes into the published G-Objaverse layout:

    <out>/<dir_id>/<name>/campos_512_v4/<v:05d>/<v:05d>.png (RGBA) and <v:05d>.json
    <out>/captions.json            {"<dir_id>/<name>": caption}  (from the file names unless given)
    <out>/{train,val,test}.txt     one "<dir_id>/<name>" per line
    <out>/render_settings.json     the settings; <out>/skipped.json the meshes that failed, with reasons

Each mesh is normalised into the unit cube (bounding box centred, longest side 1, as G-Objaverse
does) and rendered on an orbit of `num_views` views at azimuths 0, 360/V, ... and one elevation
drawn uniformly from `elevation_range` by (seed, name), so a resumed run draws the same orbits.
An object whose view files all exist is not rendered again; a mesh that cannot be read is skipped
and named in skipped.json.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from videomv.data.gobjaverse import VIEW_DIR, view_files
from videomv.data.meshes import caption_from_name, gso_mesh, unit_cube
from videomv.geometry import c2w_to_gobjaverse_json, orbit_camera
from videomv.io import atomic_write_text

from .blender import ENGINES

logger = logging.getLogger("videomv.render")


@dataclass
class RenderSettings:
    num_views: int = 24
    resolution: int = 512
    elevation_range: tuple[float, float] = (5.0, 30.0)
    radius: float = 2.0
    fovy: float = 49.1
    engine: str = "workbench"
    samples: int = 32  # Cycles samples per pixel
    seed: int = 0
    dir_id: str = "0"
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    threads: int | None = None  # Blender render threads (None: all cores)

    def __post_init__(self):
        self.elevation_range = tuple(float(e) for e in self.elevation_range)
        self.split = tuple(float(s) for s in self.split)
        lo, hi = self.elevation_range
        if not -90 < lo <= hi < 90:
            raise ValueError(f"elevation_range must satisfy -90 < low <= high < 90, got {self.elevation_range}")
        if not 1 <= self.num_views <= 1000 or self.resolution < 8 or self.samples < 1:
            raise ValueError(f"need 1 <= num_views <= 1000, resolution >= 8, samples >= 1; got {self}")
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if not 0 < self.fovy < 180 or self.radius <= 0:
            raise ValueError(f"need 0 < fovy < 180 and radius > 0, got {self.fovy}, {self.radius}")
        if len(self.split) != 3 or min(self.split) < 0 or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"split must be three non-negative fractions summing to 1, got {self.split}")
        if not self.dir_id or "/" in self.dir_id:
            raise ValueError(f"dir_id must be a non-empty folder name, got {self.dir_id!r}")


@dataclass
class RenderSummary:
    rendered: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # render time per rendered object


def object_orbit(name: str, settings: RenderSettings):
    """(c2w (V, 4, 4), elevation, azimuths (V,)) of object `name`."""
    rng = np.random.default_rng([settings.seed, zlib.crc32(name.encode())])
    elevation = float(rng.uniform(*settings.elevation_range))
    azimuths = torch.arange(settings.num_views, dtype=torch.float32) * (360.0 / settings.num_views)
    return orbit_camera(torch.full_like(azimuths, elevation), azimuths, settings.radius), elevation, azimuths


def load_normalized_scene(path: Path):
    """The mesh file as a trimesh Scene (textures kept), moved and scaled into the unit cube. A GSO
    item's texture (materials/textures/texture.png) is attached when its .mtl does not find it."""
    import trimesh
    from PIL import Image

    from videomv.eval.mesh import check_mesh_file

    check_mesh_file(path)
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as err:  # trimesh raises many types for malformed files
        raise ValueError(f"cannot read mesh file {path}: {type(err).__name__}: {err}") from None
    geometries = [g for g in scene.geometry.values() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not geometries:
        raise ValueError(f"mesh file {path} holds no triangles")
    texture = path.parent.parent / "materials" / "textures" / "texture.png"
    if gso_mesh(path.parent.parent) == path and texture.is_file():
        for g in geometries:
            visual = g.visual
            if getattr(visual, "uv", None) is not None and getattr(getattr(visual, "material", None), "image", None) is None:
                g.visual = trimesh.visual.TextureVisuals(uv=visual.uv, image=Image.open(texture).convert("RGB"))
    center, scale = unit_cube(scene.to_geometry().vertices)
    transform = np.diag([scale, scale, scale, 1.0])
    transform[:3, 3] = -center * scale
    scene.apply_transform(transform)
    return scene


def is_rendered(obj_dir: Path, num_views: int) -> bool:
    """All view files exist (each view's json is written after its png)."""
    return all(view_files(obj_dir / VIEW_DIR, v)[1].is_file() for v in range(num_views))


def render_object(path: Path, obj_dir: Path, name: str, settings: RenderSettings) -> None:
    """Render one mesh's orbit into `obj_dir` (raises ValueError for a broken mesh)."""
    from . import blender

    scene = load_normalized_scene(path)
    c2w, elevation, azimuths = object_orbit(name, settings)
    paths = [view_files(obj_dir / VIEW_DIR, v) for v in range(settings.num_views)]
    for png, _ in paths:
        png.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="videomv-render-") as tmp:
        glb = Path(tmp) / "object.glb"
        glb.write_bytes(scene.export(file_type="glb"))
        bl_scene, camera = blender.new_scene(settings.engine, settings.resolution, settings.fovy, settings.samples,
                                            settings.threads)
        blender.import_gltf(glb)
    blender.render_views(bl_scene, camera, c2w, [png for png, _ in paths])
    for v, (_, meta_file) in enumerate(paths):
        meta = c2w_to_gobjaverse_json(c2w[v], settings.fovy)
        meta.update(elevation=elevation, azimuth=float(azimuths[v]), radius=settings.radius)
        atomic_write_text(meta_file, json.dumps(meta))


def split_names(names: list[str], fractions, seed: int) -> dict[str, list[str]]:
    """Disjoint train/val/test lists of `names`, shuffled by `seed`, each sorted."""
    order = [names[i] for i in np.random.default_rng([seed, 1]).permutation(len(names))]
    n_val, n_test = int(round(len(names) * fractions[1])), int(round(len(names) * fractions[2]))
    n_train = len(names) - n_val - n_test
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train : n_train + n_val]),
            "test": sorted(order[n_train + n_val :])}


def render_objects(meshes: dict[str, Path], out, settings: RenderSettings | None = None,
                   captions: dict[str, str] | None = None, progress: bool = True) -> RenderSummary:
    """Render `meshes` ({name: file}, see `videomv.data.meshes.find_meshes`) into `out` (see the
    module docstring); returns what was rendered, reused and skipped."""
    settings = settings or RenderSettings()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = RenderSummary()
    bar = tqdm(meshes.items(), desc=f"render ({settings.engine})", unit="obj", disable=not progress)
    for name, path in bar:
        obj_dir = out / settings.dir_id / name
        if is_rendered(obj_dir, settings.num_views):
            summary.reused.append(name)
            continue
        start = time.perf_counter()
        try:
            render_object(Path(path), obj_dir, name, settings)
        except ValueError as err:
            summary.skipped[name] = str(err)
            logger.warning("skipping mesh %s: %s", name, err)
            bar.set_postfix(skipped=len(summary.skipped))
            continue
        summary.seconds[name] = time.perf_counter() - start
        summary.rendered.append(name)
    done = sorted(summary.rendered + summary.reused)
    keys = {name: f"{settings.dir_id}/{name}" for name in done}
    caption_file = out / "captions.json"
    written = json.loads(caption_file.read_text()) if caption_file.is_file() else {}
    given = captions or {}
    written.update({keys[n]: given.get(n, given.get(keys[n], caption_from_name(n))) for n in done})
    atomic_write_text(caption_file, json.dumps(written, indent=0))
    for split, names in split_names(done, settings.split, settings.seed).items():
        atomic_write_text(out / f"{split}.txt", "".join(keys[n] + "\n" for n in names))
    atomic_write_text(out / "skipped.json", json.dumps(summary.skipped, indent=1))
    atomic_write_text(out / "render_settings.json", json.dumps({**asdict(settings), "layout":
                      f"<dir_id>/<obj_id>/{VIEW_DIR}/<view:05d>/<view:05d>.png", "normalization": "unit cube"}, indent=1))
    return summary
