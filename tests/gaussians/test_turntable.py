"""Turntable video of a 3D result (Gaussians, optionally a mesh) and sample.py's --mesh/--turntable."""

from __future__ import annotations

import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from videomv.gaussians import GaussianSet
from videomv.gaussians.turntable import render_turntable, save_turntable
from repo_scripts import load_script

FOVY = 49.1


def one_gaussian(x: float) -> GaussianSet:
    return GaussianSet(means=torch.tensor([[x, 0.0, 0.0]]), scales=torch.full((1, 3), 0.05),
                       rotations=torch.tensor([[1.0, 0.0, 0.0, 0.0]]), opacities=torch.tensor([[0.99]]),
                       colors=torch.tensor([[1.0, 0.0, 0.0]]))


def centroid_column(frame: torch.Tensor) -> float:
    """Column of the red blob's centre (weights: how far the pixel is from the white background)."""
    weight = (1 - frame[1]).clamp_min(0)
    cols = torch.arange(frame.shape[-1], dtype=torch.float32) + 0.5
    return float((weight.sum(0) * cols).sum() / weight.sum())


def test_frames_follow_the_orbit():
    """A point at x = 0.3: the camera starts on +z (it appears right of centre), after half a turn it
    is on -z (left of centre), at a quarter turn it is on +x (in front, centred). Hand-projected."""
    frames = render_turntable(one_gaussian(0.3), num_frames=4, resolution=64, elevation=0.0, radius=2.0, fovy=FOVY)
    assert frames.shape == (4, 3, 64, 64)
    focal = 32 / math.tan(math.radians(FOVY) / 2)
    expected = [32 + focal * 0.3 / 2.0, 32.0, 32 - focal * 0.3 / 2.0]
    for frame, want in zip(frames[:3], expected):
        assert abs(centroid_column(frame) - want) < 0.5, (centroid_column(frame), want)


def test_mesh_is_rendered_beside_the_gaussians():
    trimesh = pytest.importorskip("trimesh")
    from videomv.mesh.render import render_mesh

    box = trimesh.creation.box((0.5, 0.5, 0.5))
    colors = np.where(box.vertices[:, 2:3] > 0, [255, 0, 0, 255], [0, 0, 255, 255]).astype(np.uint8)
    box = trimesh.Trimesh(box.vertices, box.faces, vertex_colors=colors, process=False)
    frames = render_turntable(one_gaussian(0.0), num_frames=2, resolution=64, elevation=0.0, fovy=FOVY, mesh=box)
    assert frames.shape == (2, 3, 64, 128)
    front, back = frames[0, :, :, 64:], frames[1, :, :, 64:]
    assert front[0, 32, 32] > 0.3 and front[2, 32, 32] < 0.05  # the +z face is red, the -z face hidden
    assert back[2, 32, 32] > 0.3 and back[0, 32, 32] < 0.05
    # silhouette: the front face (z = 0.25) spans f * 0.25 / 1.75 pixels either side of the centre
    c2w = torch.eye(4)
    c2w[2, 3] = 2.0  # on +z, looking along -z at the origin
    image = render_mesh(box, c2w[None], FOVY, 64)
    covered = (image[0] - 1).abs().amax(0) > 1e-3
    half = 32 / math.tan(math.radians(FOVY) / 2) * 0.25 / 1.75
    assert abs(covered[32].sum().item() - 2 * half) <= 2


def test_video_file_and_bad_input(tmp_path):
    path = save_turntable(one_gaussian(0.1), tmp_path / "turntable", num_frames=6, resolution=32)
    assert path.name in ("turntable.mp4", "turntable.gif") and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left behind
    frames = imageio.mimread(path)
    assert len(frames) == 6 and frames[0].shape[:2] == (32, 32)
    with pytest.raises(ValueError, match="resolution"):
        render_turntable(one_gaussian(0.0), resolution=8)
    with pytest.raises(TypeError, match="GaussianSet"):
        render_turntable(torch.zeros(3))


def _sample_main():
    return load_script("scripts/sample.py").main


def test_sample_writes_mesh_and_turntable(tmp_path):
    pytest.importorskip("trimesh")
    pytest.importorskip("xatlas")
    trimesh = pytest.importorskip("trimesh")
    out = tmp_path / "out"
    main = _sample_main()
    assert main(["--prompt", "a red sphere", "--out", str(out), "--steps", "8", "--no-3d-aware", "--mesh",
                 "--turntable", "48", "--device", "cpu"]) == 0
    for name in ("mesh.glb", "mesh.obj", "mesh.mtl", "gaussians.ply"):
        assert (out / name).is_file(), name
    video = next(out.glob("turntable.*"))
    frames = imageio.mimread(video)
    assert frames[0].shape[:2] == (48, 96)  # Gaussians and mesh side by side
    assert len(trimesh.load(out / "mesh.glb", force="mesh").faces) > 0
    with pytest.raises(SystemExit):
        main(["--prompt", "a red sphere", "--out", str(tmp_path / "bad"), "--turntable", "8"])
    assert not (tmp_path / "bad").exists()
