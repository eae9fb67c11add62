"""Load one of the repository's scripts or tools as a module, to call its `main` in this process."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_script(relative_path: str):
    """The module of `REPO / relative_path` (e.g. "tools/toy_model_bar.py"), executed afresh and
    registered under its file name (dataclasses look their module up while the file executes)."""
    path = REPO / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
