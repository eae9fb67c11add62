"""The procedural toy world: objects made of coloured primitives with captions (`world`), written
in the G-Objaverse layout (`writer`), their analytic reference meshes (`references`), and the bar
the embedded toy models must clear with its probes (`bar`). The library outside this package does
not import it; scripts, tools and tests do."""

from .world import ToyObject, render_object, sample_like, sample_object
from .writer import build_configured_world, build_dataset, ensure_toy_dataset

__all__ = ["ToyObject", "build_configured_world", "build_dataset", "ensure_toy_dataset", "render_object", "sample_like", "sample_object"]
