"""Reading a condition image and writing a generation's results to a folder."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..gaussians import save_ply
from ..io import atomic_directory

MIN_IMAGE_SIZE = 16


def load_condition_image(path: str | Path, resolution: int) -> torch.Tensor:
    """An object image -> (3, resolution, resolution) in [0, 1]. RGBA is composited on white (the
    image model's background); background removal is the caller's. The image must be square."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            img = img.convert("RGBA") if mode in ("RGBA", "LA", "PA") or "transparency" in img.info else img.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"image {path} could not be read as an image ({err})") from None
    width, height = img.size
    if min(width, height) < MIN_IMAGE_SIZE:
        raise ValueError(f"image {path} is {width}x{height}; it must be at least {MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE}")
    if abs(width - height) > 0.01 * max(width, height):
        raise ValueError(f"image {path} is {width}x{height}; expected a square, object-centred image (crop it first)")
    array = np.asarray(img.resize((resolution, resolution), Image.Resampling.LANCZOS), dtype=np.float32) / 255.0
    if array.shape[-1] == 4:
        array = array[..., :3] * array[..., 3:] + (1.0 - array[..., 3:])
    return torch.from_numpy(array).permute(2, 0, 1).clamp(0, 1).contiguous()


def border_off_background(image: torch.Tensor, background, width: int = 2, tolerance: float = 0.1) -> float:
    """The fraction of the pixels in a `width`-pixel frame around (3, H, W) `image` that differ from
    `background` (RGB in [0, 1]) by more than `tolerance` in some channel. An object image on the
    model's background gives about 0; a photo with its surroundings, most of the frame."""
    frame = torch.ones(image.shape[-2:], dtype=torch.bool)
    frame[width:-width, width:-width] = False
    off = (image - torch.as_tensor(background, dtype=image.dtype).view(3, 1, 1)).abs().amax(0) > tolerance
    return float(off[frame].float().mean())


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) in [0, 1] -> (..., H, W, 3) uint8."""
    return (images.clamp(0, 1).movedim(-3, -1).cpu().numpy() * 255).round().astype(np.uint8)


def make_grid(images: np.ndarray, columns: int = 6) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one image with `columns` views per row (empty cells black)."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    grid = np.zeros((rows * h, columns * w, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    return grid


def write_video(frames: np.ndarray, path_without_suffix: Path, fps: int = 8) -> Path:
    """An mp4 via imageio-ffmpeg; a gif when ffmpeg is unavailable. Returns the written path."""
    mp4 = path_without_suffix.with_suffix(".mp4")
    try:
        # macro_block_size=1 keeps small toy resolutions as they are instead of padding them.
        imageio.mimwrite(mp4, list(frames), fps=fps, macro_block_size=1)
        return mp4
    except Exception:  # noqa: BLE001 - any ffmpeg failure falls back to gif
        mp4.unlink(missing_ok=True)
        gif = path_without_suffix.with_suffix(".gif")
        imageio.mimwrite(gif, list(frames), duration=1000 / fps, loop=0)
        return gif


def save_generation(output, out_dir: str | Path, extra_settings: dict | None = None) -> dict:
    """Write views (one PNG each + grid), an orbit video, the Gaussians (.ply), the cameras and the
    resolved settings into `out_dir`. All is written to a temporary folder first and moved into
    place at the end, so a failure or an interrupt leaves nothing half-written; the files get the
    umask's permissions. Returns {name: path}."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"output folder {out_dir} exists and is not empty")
    with atomic_directory(out_dir, replace=False) as tmp:
        frames = to_uint8(output.images)
        (tmp / "views").mkdir()
        for i, frame in enumerate(frames):
            imageio.imwrite(tmp / "views" / f"view_{i:03d}.png", frame)
        imageio.imwrite(tmp / "grid.png", make_grid(frames))
        video = write_video(frames, tmp / "orbit")
        written = {"views": "views", "grid": "grid.png", "video": video.name}
        if output.gaussians is not None:
            save_ply(output.gaussians, tmp / "gaussians.ply")
            written["gaussians"] = "gaussians.ply"
        cameras = {"convention": "opengl_c2w", "fovy_deg": output.settings.get("fovy"),
                   "cameras": output.cameras.tolist()}
        (tmp / "cameras.json").write_text(json.dumps(cameras, indent=1))
        settings = {**output.settings, "aware_steps_used": list(output.aware_steps), **(extra_settings or {})}
        (tmp / "settings.json").write_text(json.dumps(settings, indent=2, default=str))
        written.update(cameras="cameras.json", settings="settings.json")
    return {name: out_dir / rel for name, rel in written.items()}
