"""VideoMV: consistent multi-view generation with video diffusion models.

`from videomv import VideoMV` gives the whole model (see `videomv.sampling.system`); it is imported
on first use, so `import videomv` stays fast.
"""

_LAZY = {
    "VideoMV": "videomv.sampling.system",
    "VideoMVOutput": "videomv.sampling.system",
    "VideoMVSettings": "videomv.sampling.system",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'videomv' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
