"""Mesh sources for rendering and evaluation: finding mesh files (plain files, or Google Scanned
Objects folders `<name>/meshes/model.obj` with `<name>/materials/textures/texture.png`), naming
them, and the unit-cube normalisation G-Objaverse applies before rendering (bounding box centred
at the origin, longest side 1).

Frames: a mesh is taken in its file's own frame with +y up (the glTF and OBJ convention), which is
the project's world frame, so the renders' cameras and the evaluation's reference meshes agree.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".off", ".stl")


def gso_mesh(folder: Path) -> Path | None:
    """`<folder>/meshes/model.obj` when `folder` is a Google Scanned Objects item."""
    path = Path(folder) / "meshes" / "model.obj"
    return path if path.is_file() else None


def find_meshes(sources) -> dict[str, Path]:
    """{name: mesh file} from files and folders. A folder contributes its mesh files (name = file
    stem) and its GSO items (name = folder name); a GSO item folder given directly is one mesh.
    Sorted by name; two meshes with one name are an error."""
    found: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        if name in found and found[name] != path:
            raise ValueError(f"two meshes named {name!r}: {found[name]} and {path}; rename one")
        found[name] = path

    for source in [sources] if isinstance(sources, (str, Path)) else list(sources):
        source = Path(source)
        if source.is_file():
            if source.suffix.lower() not in MESH_SUFFIXES:
                raise ValueError(f"{source}: unsupported mesh type {source.suffix!r}; expected one of {MESH_SUFFIXES}")
            add(source.stem, source)
        elif source.is_dir():
            if gso_mesh(source):
                add(source.name, gso_mesh(source))
                continue
            for child in sorted(source.iterdir()):
                if child.is_file() and child.suffix.lower() in MESH_SUFFIXES:
                    add(child.stem, child)
                elif child.is_dir() and gso_mesh(child):
                    add(child.name, gso_mesh(child))
        else:
            raise ValueError(f"mesh source {source} does not exist")
    if not found:
        raise ValueError(f"no meshes ({', '.join(MESH_SUFFIXES)} files or <name>/meshes/model.obj folders) in {sources}")
    return dict(sorted(found.items()))


def unit_cube(vertices) -> tuple[np.ndarray, float]:
    """(centre, scale) mapping a bounding box to the origin-centred box of longest side 1:
    `(v - centre) * scale`."""
    vertices = np.asarray(vertices, dtype=np.float64)
    lo, hi = vertices.min(0), vertices.max(0)
    extent = float((hi - lo).max())
    if not np.isfinite(extent) or extent <= 0:
        raise ValueError(f"mesh has no extent (bounding box {lo.tolist()} .. {hi.tolist()})")
    return (lo + hi) / 2, 1.0 / extent


def caption_from_name(name: str) -> str:
    """'red_coffee-mug' -> 'red coffee mug'."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())
