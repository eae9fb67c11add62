"""Reconstructor configurations: LGM's published shapes (`big`, `small`) and a CPU-sized `tiny`.

A config fixes the network shape (which must match a checkpoint exactly) and the camera model the
network was trained with (field of view, canonical camera radius). `splat_size` is not free: it
follows from `input_size` and the number of down/up blocks, and `validate` checks it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ReconstructorConfig:
    # network input and output
    input_size: int = 256  # input views are resized to input_size x input_size
    splat_size: int = 128  # each view yields splat_size x splat_size Gaussians
    output_size: int = 512  # render size used for supervision (training)
    num_input_views: int = 4
    in_channels: int = 9  # RGB + 6 Plücker channels
    out_channels: int = 14  # pos 3, opacity 1, scale 3, rotation 4, rgb 3
    # asymmetric UNet
    down_channels: tuple[int, ...] = (64, 128, 256, 512, 1024, 1024)
    down_attention: tuple[bool, ...] = (False, False, False, True, True, True)
    mid_attention: bool = True
    up_channels: tuple[int, ...] = (1024, 1024, 512, 256, 128)
    up_attention: tuple[bool, ...] = (True, True, True, False, False)
    layers_per_block: int = 2
    attention_heads: int = 16
    num_groups: int = 32
    norm_eps: float = 1e-5
    # cameras the network was trained with
    fovy: float = 49.1
    znear: float = 0.5
    zfar: float = 2.5
    cam_radius: float = 1.5
    # scale the input cameras so that view 0 sits at cam_radius (see `frames.py`)
    rescale_cameras: bool = True
    # The released LGM weights were trained with F.normalize(x) (dim=1, i.e. across Gaussians)
    # as rotation activation; set True to reproduce their outputs exactly. False normalises each
    # quaternion to unit length, the intended behaviour.
    lgm_release_rotation: bool = False
    # How the 3 position channels become a Gaussian centre. "absolute" (LGM): the centre itself,
    # clamped to [-1, 1]. "ray": anchored on the pixel's camera ray, c = p + d * ray_extent * tanh(x0)
    # with p the ray's point closest to the origin (x1, x2 unused) -- much easier for a small
    # network to learn from scratch, as in Splatter Image.
    position: str = "absolute"
    ray_extent: float = 1.0

    def validate(self) -> "ReconstructorConfig":
        def fail(msg):
            raise ValueError(f"ReconstructorConfig: {msg}")

        if len(self.down_attention) != len(self.down_channels):
            fail(f"down_attention has {len(self.down_attention)} entries, down_channels {len(self.down_channels)}")
        if len(self.up_attention) != len(self.up_channels):
            fail(f"up_attention has {len(self.up_attention)} entries, up_channels {len(self.up_channels)}")
        if not 1 <= len(self.up_channels) <= len(self.down_channels):
            fail(f"need 1 <= len(up_channels) <= len(down_channels), got {len(self.up_channels)} and {len(self.down_channels)}")
        if self.position not in ("absolute", "ray"):
            fail(f"position must be 'absolute' or 'ray', got {self.position!r}")
        if self.layers_per_block < 1:
            fail(f"layers_per_block must be >= 1, got {self.layers_per_block}")
        for c in (*self.down_channels, *self.up_channels):
            if c % self.num_groups:
                fail(f"channel count {c} is not divisible by num_groups={self.num_groups}")
        attended = [c for c, a in zip(self.down_channels, self.down_attention) if a]
        attended += [c for c, a in zip(self.up_channels, self.up_attention) if a]
        attended += [self.down_channels[-1]] if self.mid_attention else []
        for c in attended:
            if c % self.attention_heads:
                fail(f"attention width {c} is not divisible by attention_heads={self.attention_heads}")
        down_factor = 2 ** (len(self.down_channels) - 1)
        if self.input_size % down_factor:
            fail(f"input_size {self.input_size} must be divisible by {down_factor} (one halving per down block but the last)")
        expected = self.input_size // down_factor * 2 ** (len(self.up_channels) - 1)
        if self.splat_size != expected:
            fail(f"splat_size {self.splat_size} does not match the UNet shape, which gives {expected}")
        if self.out_channels != 14:
            fail(f"out_channels must be 14 (LGM's Gaussian layout), got {self.out_channels}")
        if self.in_channels != 9:
            fail(f"in_channels must be 9 (RGB + Plücker), got {self.in_channels}")
        if self.num_input_views < 1:
            fail(f"num_input_views must be >= 1, got {self.num_input_views}")
        if not 0 < self.fovy < 180:
            fail(f"fovy must be in (0, 180) degrees, got {self.fovy}")
        if self.cam_radius <= 0:
            fail(f"cam_radius must be positive, got {self.cam_radius}")
        return self

    @property
    def num_gaussians(self) -> int:
        return self.num_input_views * self.splat_size**2

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ReconstructorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"ReconstructorConfig: unknown keys {unknown}; known keys are {sorted(names)}")
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**data).validate()

    def replace(self, **changes) -> "ReconstructorConfig":
        return dataclasses.replace(self, **changes).validate()


PRESETS: dict[str, ReconstructorConfig] = {
    # LGM's released model: 415M parameters in the UNet, 4 x 128^2 Gaussians.
    "big": ReconstructorConfig(),
    # LGM's `small`: one decoder block fewer, 4 x 64^2 Gaussians rendered at 256.
    "small": ReconstructorConfig(
        splat_size=64,
        output_size=256,
        up_channels=(1024, 1024, 512, 256),
        up_attention=(True, True, True, False),
    ),
    # CPU-sized model for the toy world and tests: 4 x 64^2 in, 4 x 32^2 Gaussians out;
    # 0.83M parameters, 1.3 GFLOP per forward of 4 views.
    "tiny": ReconstructorConfig(
        input_size=64,
        splat_size=32,
        output_size=64,
        down_channels=(16, 32, 64, 64),
        down_attention=(False, False, True, True),
        up_channels=(64, 32, 16),
        up_attention=(True, True, False),
        layers_per_block=1,
        attention_heads=4,
        num_groups=8,
        position="ray",
    ),
}


def get_preset(name: str, **overrides) -> ReconstructorConfig:
    """A preset by name, optionally with some fields replaced (e.g. `cam_radius=2.0`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown reconstructor preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name].validate()
