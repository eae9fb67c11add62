"""Reference shapes of toy objects: each object recreated from its dataset folder's settings and
id, and the marching-cubes mesh of its analytic occupancy, as a reference-mesh provider for the
geometry evaluation (`ToyReferences(root)(object_id) -> Mesh`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from videomv.eval.fields import grid_points
from videomv.eval.geometry_eval import BOUND
from videomv.eval.mesh import Mesh, extract_mesh

from . import world
from .writer import GENERATORS


def toy_reference_mesh(obj: world.ToyObject, resolution: int = 128, bound: float = BOUND) -> Mesh:
    """Marching cubes of the object's analytic occupancy on a `resolution`^3 grid."""
    inside = world.occupancy(obj, grid_points(resolution, bound))
    return extract_mesh(inside.float(), 0.5, bound)


def is_toy_dataset(root: str | Path) -> bool:
    """Whether `root` holds a toy world (its `toyworld.json` names the toy generator)."""
    try:
        return json.loads((Path(root) / "toyworld.json").read_text()).get("generator") in GENERATORS
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def toy_object_for(root: str | Path, object_id: str) -> world.ToyObject:
    """Recreate a toy object from its dataset folder's settings (`toyworld.json`) and its id."""
    settings_file = Path(root) / "toyworld.json"
    try:
        settings = json.loads(settings_file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{settings_file}: cannot read the toy world settings ({err}); is {root} a toy dataset?") from None
    match = re.fullmatch(r"\d+/toy_(\d+)", object_id)
    if not isinstance(settings, dict) or settings.get("generator") not in GENERATORS or match is None:
        raise ValueError(f"{object_id} in {root} is not a toy-world object (expected '<dir>/toy_<index>')")
    return world.sample_object(int(settings["seed"]), int(match.group(1)))


class ToyReferences:
    """Reference-mesh provider for a toy dataset: object id -> analytic mesh on a `resolution`^3 grid."""

    def __init__(self, root: str | Path, resolution: int = 128):
        self.root, self.resolution = Path(root), resolution

    def __call__(self, object_id: str) -> Mesh:
        return toy_reference_mesh(toy_object_for(self.root, object_id), self.resolution)
