"""Reference meshes of real objects for the geometry protocol: a provider, object id -> Mesh, over
mesh files or Google Scanned Objects folders, each mesh normalised into the unit cube exactly as
tools/render_objects.py normalised it before rendering (so it lies in the renders' frame)."""

from __future__ import annotations

from pathlib import Path

from videomv.data.meshes import find_meshes, unit_cube

from .mesh import Mesh, load_mesh


class MeshReferences:
    """`MeshReferences(folder)(object_id)`: the mesh named after the id's last part ('<dir>/<name>')."""

    def __init__(self, sources, max_bytes: int | None = None):
        self.meshes = find_meshes(sources)
        self.max_bytes = max_bytes

    def path(self, object_id: str) -> Path:
        name = object_id.rsplit("/", 1)[-1]
        if name not in self.meshes:
            raise ValueError(f"no reference mesh named {name!r} (object {object_id}); known: "
                             f"{', '.join(list(self.meshes)[:5])}{', ...' if len(self.meshes) > 5 else ''}")
        return self.meshes[name]

    def __call__(self, object_id: str) -> Mesh:
        mesh = load_mesh(self.path(object_id), self.max_bytes)
        center, scale = unit_cube(mesh.vertices)
        return mesh.transformed(center, scale)
