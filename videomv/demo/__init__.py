"""The web demo (gradio, the `demo` extra): `Demo` runs generations, `build_app` lays out the page."""

from .app import EMBEDDED_MODELS, Demo, DemoResult, build_app, launch

__all__ = ["EMBEDDED_MODELS", "Demo", "DemoResult", "build_app", "launch"]
