"""The top-level package: `from videomv import VideoMV` works and `import videomv` stays light."""

import subprocess
import sys

import pytest


def test_import_videomv_is_light_and_videomv_is_loaded_on_first_use():
    code = ("import sys, videomv; light = 'torch' not in sys.modules and 'diffusers' not in sys.modules; "
            "from videomv import VideoMV; from videomv.sampling.system import VideoMV as V; "
            "print(light, VideoMV is V, 'VideoMV' in dir(videomv))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True", "True"]


def test_unknown_attribute_is_an_attribute_error():
    import videomv

    with pytest.raises(AttributeError, match="no attribute 'VideoMVV'"):
        videomv.VideoMVV  # noqa: B018
