"""Cameras in the project's one convention, and converters at the boundary.

Convention (as kiui.cam and LGM): world +y up; a camera-to-world matrix (c2w) is OpenGL-style,
camera +x right, +y up, looking along -z. Angles are degrees. Elevation is positive when the camera
is above the object (kiui's `orbit_camera` uses the opposite sign); azimuth 0 puts the camera on
the +z axis and azimuth 90 on the +x axis.

Every function takes and returns float32 torch tensors of shape (..., 4, 4) for poses.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import torch

from ..defaults import TEXT

# OpenCV camera axes (x right, y down, z forward) <-> OpenGL camera axes (x right, y up, z back):
# flip the camera's y and z columns. The matrix is its own inverse.
_FLIP_YZ = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))

# Blender world (z up) -> project world (y up): a +90 degree rotation about x, (x, y, z) -> (x, z, -y).
BLENDER_TO_WORLD = torch.tensor(
    [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]
)


def _as_tensor(x, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype)


def check_c2w(c2w: torch.Tensor, name: str = "c2w") -> torch.Tensor:
    """Validate a (..., 4, 4) pose: finite, last row (0, 0, 0, 1), rotation orthonormal."""
    c2w = _as_tensor(c2w)
    if c2w.ndim < 2 or c2w.shape[-2:] != (4, 4):
        raise ValueError(f"{name}: expected camera-to-world matrices of shape (..., 4, 4), got {tuple(c2w.shape)}")
    if not torch.isfinite(c2w).all():
        raise ValueError(f"{name}: camera matrices contain NaN or inf")
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], device=c2w.device)
    if not torch.allclose(c2w[..., 3, :], last.expand_as(c2w[..., 3, :]), atol=1e-4):
        raise ValueError(f"{name}: the last row of every camera matrix must be (0, 0, 0, 1)")
    rot = c2w[..., :3, :3]
    eye = torch.eye(3, device=c2w.device).expand_as(rot)
    if not torch.allclose(rot @ rot.transpose(-1, -2), eye, atol=1e-3):
        raise ValueError(f"{name}: the rotation part of every camera matrix must be orthonormal")
    return c2w


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """OpenGL c2w for a camera at `eye` looking at `target`. eye: (..., 3)."""
    eye = _as_tensor(eye)
    target = _as_tensor(target).expand_as(eye)
    up = _as_tensor(up).expand_as(eye)
    back = torch.nn.functional.normalize(eye - target, dim=-1)  # camera +z points away from the target
    right = torch.linalg.cross(up, back, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6  # looking straight up or down
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0]).expand_as(right), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.linalg.cross(back, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = cam_up
    c2w[..., :3, 2] = back
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def orbit_camera(elevation, azimuth, radius, target=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """c2w of a camera on a sphere around `target`, looking at it. Broadcasts over its inputs."""
    elevation, azimuth, radius = torch.broadcast_tensors(
        _as_tensor(elevation), _as_tensor(azimuth), _as_tensor(radius)
    )
    el, az = torch.deg2rad(elevation), torch.deg2rad(azimuth)
    eye = torch.stack(
        [radius * torch.cos(el) * torch.sin(az), radius * torch.sin(el), radius * torch.cos(el) * torch.cos(az)],
        dim=-1,
    )
    target = _as_tensor(target)
    return look_at(eye + target, target)


def orbit_cameras(
    num_views: int = TEXT.num_views, elevation: float = TEXT.elevation, radius: float = TEXT.radius,
    start_azimuth: float = 0.0,
) -> torch.Tensor:
    """`num_views` cameras evenly spaced in azimuth (360/num_views apart) at a fixed elevation."""
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if not -90.0 < elevation < 90.0:
        raise ValueError(f"elevation must be in (-90, 90) degrees, got {elevation}")
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    azimuths = start_azimuth + torch.arange(num_views, dtype=torch.float32) * (360.0 / num_views)
    return orbit_camera(torch.full((num_views,), float(elevation)), azimuths, float(radius))


def orbit_angles(c2w: torch.Tensor, target=(0.0, 0.0, 0.0)):
    """Inverse of `orbit_camera` for the camera position: (elevation, azimuth, radius), degrees."""
    pos = check_c2w(c2w)[..., :3, 3] - _as_tensor(target)
    radius = pos.norm(dim=-1)
    elevation = torch.rad2deg(torch.asin((pos[..., 1] / radius).clamp(-1, 1)))
    azimuth = torch.rad2deg(torch.atan2(pos[..., 0], pos[..., 2]))
    return elevation, azimuth, radius


# --------------------------------------------------------------------------------------------- #
# Conventions at the boundary
# --------------------------------------------------------------------------------------------- #


def opencv_to_opengl(c2w_cv: torch.Tensor) -> torch.Tensor:
    """OpenCV/COLMAP c2w (x right, y down, z forward) -> project c2w. Same world frame."""
    return _as_tensor(c2w_cv) @ _FLIP_YZ


def opengl_to_opencv(c2w_gl: torch.Tensor) -> torch.Tensor:
    """Project c2w -> OpenCV/COLMAP c2w. Same world frame."""
    return _as_tensor(c2w_gl) @ _FLIP_YZ


def colmap_to_c2w(qvec, tvec) -> torch.Tensor:
    """COLMAP world-to-camera (qvec = w,x,y,z; tvec) -> project c2w (in COLMAP's world frame)."""
    w, x, y, z = _as_tensor(qvec).unbind(-1)
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        -2,
    )
    w2c = torch.zeros(*rot.shape[:-2], 4, 4)
    w2c[..., :3, :3] = rot
    w2c[..., :3, 3] = _as_tensor(tvec)
    w2c[..., 3, 3] = 1.0
    return opencv_to_opengl(torch.linalg.inv(w2c))


def gobjaverse_json_to_c2w(meta: dict) -> torch.Tensor:
    """A G-Objaverse camera json (keys x, y, z, origin: OpenCV camera axes in a Blender z-up world)
    -> project c2w."""
    missing = [k for k in ("x", "y", "z", "origin") if k not in meta]
    if missing:
        raise KeyError(f"G-Objaverse camera json is missing keys {missing}; has {sorted(meta)}")
    c2w = torch.eye(4)
    for col, key in enumerate(("x", "y", "z", "origin")):
        value = _as_tensor(meta[key])
        if value.shape != (3,):
            raise ValueError(f"G-Objaverse camera json key {key!r} must hold 3 numbers, got {meta[key]!r}")
        c2w[:3, col] = value
    return opencv_to_opengl(BLENDER_TO_WORLD @ c2w)


def c2w_to_gobjaverse_json(c2w: torch.Tensor, fov_deg: float) -> dict:
    """Project c2w -> a G-Objaverse camera json dict (fov stored in radians as `x_fov`, `y_fov`)."""
    blender = BLENDER_TO_WORLD.T @ opengl_to_opencv(check_c2w(c2w))
    fov = math.radians(fov_deg)
    return {
        "x": blender[:3, 0].tolist(),
        "y": blender[:3, 1].tolist(),
        "z": blender[:3, 2].tolist(),
        "origin": blender[:3, 3].tolist(),
        "x_fov": fov,
        "y_fov": fov,
    }


def gobjaverse_fov_deg(meta: dict, default: float | None = None) -> float:
    """Vertical field of view (degrees) of a G-Objaverse camera json (stored in radians)."""
    if "y_fov" in meta:
        return math.degrees(float(meta["y_fov"]))
    if "fov" in meta:
        return math.degrees(float(meta["fov"]))
    if default is None:
        raise KeyError(f"G-Objaverse camera json has no field of view (y_fov); keys {sorted(meta)}")
    return default


MAX_CAMERA_FILE_BYTES = 1 << 20  # a 4x4 matrix is under 1 kB of JSON: room for a thousand cameras
MAX_CAMERA_FILE_DEPTH = 8  # {"cameras": [[[...]]]} nests 4 deep
MIN_CAMERA_DISTANCE = 1e-2  # closer to the object centre than this, "looking at it" is undefined
MAX_OFF_AXIS_DEG = 30.0  # the object centre must be this close to the view axis (field of view: ~49 deg)


def json_depth(text: str) -> int:
    """The deepest nesting of [ ] and { } in JSON `text`, outside strings (no recursion, so any
    depth can be measured before a parser recurses into it)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def check_object_cameras(c2w: torch.Tensor, name: str = "cameras", target=(0.0, 0.0, 0.0),
                         min_distance: float = MIN_CAMERA_DISTANCE,
                         max_off_axis_deg: float = MAX_OFF_AXIS_DEG) -> torch.Tensor:
    """`check_c2w`, and what the models assume of cameras around an object at `target`: rotations
    are proper (no mirror), no camera sits at the object, and every camera looks at it (the object
    within `max_off_axis_deg` of the view axis). (V, 4, 4) -> itself; ValueError naming the camera."""
    c2w = check_c2w(c2w, name)
    if c2w.ndim != 3:
        raise ValueError(f"{name}: expected a list of cameras, shape (V, 4, 4), got {tuple(c2w.shape)}")
    det = torch.linalg.det(c2w[:, :3, :3])
    offset = _as_tensor(target) - c2w[:, :3, 3]
    distance = offset.norm(dim=-1)
    forward = -c2w[:, :3, 2]  # OpenGL cameras look along their -z axis
    cos_off = (forward * offset).sum(-1) / distance.clamp_min(1e-12)
    off_axis = torch.rad2deg(torch.acos(cos_off.clamp(-1, 1)))
    for i in range(len(c2w)):
        if det[i] < 0:
            raise ValueError(f"{name}: camera {i} has a mirrored rotation (determinant {det[i]:.3f}); "
                             "expected a right-handed camera-to-world matrix")
        if distance[i] < min_distance:
            raise ValueError(f"{name}: camera {i} is at the object centre {tuple(target)} (distance "
                             f"{distance[i]:.3g}); expected cameras at least {min_distance} away, looking at it")
        if off_axis[i] > max_off_axis_deg:
            raise ValueError(f"{name}: camera {i} looks {off_axis[i]:.0f} deg away from the object centre "
                             f"{tuple(target)}; expected at most {max_off_axis_deg:.0f} deg (OpenGL c2w: the "
                             "camera looks along its -z axis)")
    return c2w


def load_trajectory(path: str | Path, max_cameras: int | None = None) -> torch.Tensor:
    """Read cameras from a JSON file: a list of 4x4 c2w matrices (project convention), or a list of
    {"elevation", "azimuth", "radius"} objects, or an object {"cameras": [...]} holding either.
    The file is untrusted: its size and nesting are bounded before parsing, and the cameras must
    pass `check_object_cameras` (and number at most `max_cameras`)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CAMERA_FILE_BYTES:
            raise ValueError(f"camera file {path} is {size} bytes; expected at most {MAX_CAMERA_FILE_BYTES}")
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"camera file {path} does not exist") from None
    except IsADirectoryError:
        raise ValueError(f"camera file {path} is a folder; expected a JSON file") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"camera file {path} is not valid JSON: {err}") from None
    except OSError as err:
        raise ValueError(f"camera file {path} could not be read: {err.strerror or err}") from None
    if json_depth(text) > MAX_CAMERA_FILE_DEPTH:
        raise ValueError(f"camera file {path} nests deeper than {MAX_CAMERA_FILE_DEPTH} levels; "
                         "expected a list of 4x4 matrices or of elevation/azimuth/radius objects")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"camera file {path} is not valid JSON: {err}") from None
    if isinstance(data, dict) and "cameras" in data:
        data = data["cameras"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"camera file {path}: expected a non-empty list of cameras")
    if max_cameras is not None and len(data) > max_cameras:
        raise ValueError(f"camera file {path} holds {len(data)} cameras; at most {max_cameras} are allowed")
    if all(isinstance(c, dict) for c in data):
        try:
            angles = torch.tensor([[float(c["elevation"]), float(c["azimuth"]), float(c["radius"])] for c in data])
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"camera file {path}: each camera object needs numeric elevation, azimuth and radius ({err})"
            ) from None
        if not torch.isfinite(angles).all():
            raise ValueError(f"camera file {path}: elevation, azimuth and radius must be finite numbers")
        if (angles[:, 2] <= 0).any():
            raise ValueError(f"camera file {path}: every radius must be positive")
        if (angles[:, 0].abs() > 90).any():
            raise ValueError(f"camera file {path}: every elevation must be in [-90, 90] degrees")
        c2w = orbit_camera(angles[:, 0], angles[:, 1], angles[:, 2])
    else:
        try:
            c2w = torch.tensor(data, dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"camera file {path}: expected 4x4 matrices or elevation/azimuth/radius objects ({err})") from None
    return check_object_cameras(c2w, name=f"camera file {path}")


def save_trajectory(path: str | Path, c2w: torch.Tensor) -> None:
    Path(path).write_text(json.dumps({"convention": "opengl_c2w", "cameras": check_c2w(c2w).tolist()}, indent=1))


# --------------------------------------------------------------------------------------------- #
# Intrinsics and conditioning vectors
# --------------------------------------------------------------------------------------------- #


def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a field of view spanning `size` pixels."""
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"field of view must be in (0, 180) degrees, got {fov_deg}")
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


def intrinsics_from_fov(fovy_deg: float, height: int, width: int, fovx_deg: float | None = None) -> torch.Tensor:
    """3x3 pinhole intrinsics (OpenCV pixel convention, principal point at the image centre).
    With no `fovx_deg` the pixels are square."""
    fy = focal_from_fov(fovy_deg, height)
    fx = fy if fovx_deg is None else focal_from_fov(fovx_deg, width)
    return torch.tensor([[fx, 0.0, width / 2], [0.0, fy, height / 2], [0.0, 0.0, 1.0]])


def camera_vector(c2w: torch.Tensor) -> torch.Tensor:
    """The UNet's camera condition: the c2w flattened row-major to 16 numbers, not normalised."""
    return check_c2w(c2w).flatten(-2)


def normalize_to_first_view(c2w: torch.Tensor, radius: float = 1.5, rescale: bool = False) -> torch.Tensor:
    """Express (V, 4, 4) poses relative to view 0, placed at (0, 0, radius) with identity rotation,
    as LGM feeds its reconstructor. With `rescale`, camera distances are first scaled so that view 0
    sits at `radius` from the origin."""
    c2w = check_c2w(c2w).clone()
    if rescale:
        c2w[..., :3, 3] *= radius / c2w[0, :3, 3].norm()
    anchor = torch.eye(4)
    anchor[2, 3] = radius
    return anchor @ torch.linalg.inv(c2w[0]) @ c2w


def select_views(num_views: int, count: int = 4, first: int = 0) -> list[int]:
    """Indices of `count` views evenly spread over an orbit of `num_views` (0, 6, 12, 18 for 24)."""
    if num_views % count:
        raise ValueError(f"cannot pick {count} evenly spaced views out of {num_views}")
    step = num_views // count
    return [(first + i * step) % num_views for i in range(count)]


def stack_cameras(cams: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([check_c2w(c) for c in cams])
