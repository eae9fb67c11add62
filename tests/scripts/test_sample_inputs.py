"""What the sampler reads and writes: camera files (untrusted sizes and geometry), the condition
image's background check, and atomic outputs that honour the umask and survive an interrupt."""

import json
import os
import stat

import pytest
import torch

from videomv.geometry import check_object_cameras, load_trajectory, look_at, orbit_cameras
from videomv.geometry.cameras import MAX_CAMERA_FILE_BYTES, json_depth
from videomv.io import atomic_directory, atomic_write_text
from videomv.sampling.export import border_off_background

# ---------------------------------------------------------------------------------------------- #
# Camera files
# ---------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("text,depth", [("1", 0), ("[]", 1), ('{"a": [[1, 2], [3]]}', 3),
                                        ('["[[[[", "\\"[{"]', 1), ("[" * 5 + "]" * 5, 5)])
def test_json_depth_counts_brackets_outside_strings(text, depth):
    assert json_depth(text) == depth


def test_a_deeply_nested_camera_file_is_refused_without_recursion(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text("[" * 200_000 + "]" * 200_000)  # json.loads raises RecursionError on this
    with pytest.raises(RecursionError):
        json.loads(path.read_text())
    with pytest.raises(ValueError, match="nests deeper than 8 levels"):
        load_trajectory(path)


def test_camera_file_size_and_count_are_bounded(tmp_path):
    path = tmp_path / "big.json"
    path.write_text(json.dumps([{"elevation": 0, "azimuth": 0, "radius": 2}]) + " " * MAX_CAMERA_FILE_BYTES)
    with pytest.raises(ValueError, match=f"expected at most {MAX_CAMERA_FILE_BYTES}"):
        load_trajectory(path)
    path.write_text(json.dumps([{"elevation": 10, "azimuth": a, "radius": 2} for a in range(10)]))
    assert load_trajectory(path, max_cameras=10).shape == (10, 4, 4)
    with pytest.raises(ValueError, match="holds 10 cameras; at most 9"):
        load_trajectory(path, max_cameras=9)
    with pytest.raises(ValueError, match="is a folder"):
        load_trajectory(tmp_path)


def _turned(c2w: torch.Tensor, degrees: float) -> torch.Tensor:
    """c2w rotated about its own camera y axis (the camera turns its head)."""
    a = torch.deg2rad(torch.tensor(degrees))
    turn = torch.eye(4)
    turn[0, 0], turn[0, 2], turn[2, 0], turn[2, 2] = torch.cos(a), torch.sin(a), -torch.sin(a), torch.cos(a)
    return c2w @ turn


def test_object_cameras_must_look_at_the_object_from_outside():
    good = orbit_cameras(8, 15, 2.0)
    assert torch.equal(check_object_cameras(good), good)
    assert check_object_cameras(_turned(good, 25)).shape == (8, 4, 4)  # within 30 deg of the axis

    at_origin = good.clone()
    at_origin[3, :3, 3] = 0
    with pytest.raises(ValueError, match="camera 3 is at the object centre"):
        check_object_cameras(at_origin)
    away = torch.cat([good[:2], _turned(good[2:3], 180)])
    with pytest.raises(ValueError, match="camera 2 looks 180 deg away"):
        check_object_cameras(away)
    with pytest.raises(ValueError, match="camera 0 looks 40 deg away"):
        check_object_cameras(_turned(good, 40))
    mirrored = good.clone()
    mirrored[5, :3, 0] *= -1  # still orthonormal, but left-handed
    with pytest.raises(ValueError, match="camera 5 has a mirrored rotation"):
        check_object_cameras(mirrored)
    scaled = good.clone()
    scaled[:, :3, :3] *= 2
    with pytest.raises(ValueError, match="orthonormal"):
        check_object_cameras(scaled)
    with pytest.raises(ValueError, match=r"shape \(V, 4, 4\)"):
        check_object_cameras(good[0])


@pytest.mark.parametrize("cameras,match", [
    ([[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]], "at the object centre"),
    ([[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -2], [0, 0, 0, 1]]], "looks 180 deg away"),
    ([{"elevation": float("nan"), "azimuth": 0, "radius": 2}], "finite"),
    ([{"elevation": 0, "azimuth": 0, "radius": float("inf")}], "finite"),
    ([{"elevation": 120, "azimuth": 0, "radius": 2}], r"elevation must be in \[-90, 90\]"),
    ([[[[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]]], r"shape \(V, 4, 4\)"),
])
def test_camera_files_with_impossible_geometry_are_refused(tmp_path, cameras, match):
    path = tmp_path / "cams.json"
    path.write_text(json.dumps(cameras))  # NaN / Infinity are written as JSON allows them in Python
    with pytest.raises(ValueError, match=match) as info:
        load_trajectory(path)
    assert str(path) in str(info.value)


def test_a_camera_on_the_z_axis_looking_at_the_origin_is_accepted(tmp_path):
    path = tmp_path / "cams.json"
    cams = look_at(torch.tensor([[0.0, 0.0, 2.0], [0.0, 2.0, 0.0], [1.0, 1.0, -1.0]]))
    path.write_text(json.dumps(cams.tolist()))
    torch.testing.assert_close(load_trajectory(path), cams)


# ---------------------------------------------------------------------------------------------- #
# The condition image's border
# ---------------------------------------------------------------------------------------------- #


def test_border_off_background_is_the_fraction_of_the_frame_that_differs():
    image = torch.ones(3, 16, 16)
    image[:, 4:12, 4:12] = torch.tensor([0.8, 0.1, 0.1]).view(3, 1, 1)  # an object in the middle
    assert border_off_background(image, (1.0, 1.0, 1.0)) == 0.0
    assert border_off_background(image, (0.5, 0.5, 0.5)) == 1.0
    image[:, :2, :] = 0.95  # within the tolerance
    assert border_off_background(image, (1.0, 1.0, 1.0)) == 0.0
    image[:, :2, :] = 0.0  # the top two rows: 32 of the 2-pixel frame's 16*16 - 12*12 = 112 pixels
    assert border_off_background(image, (1.0, 1.0, 1.0)) == pytest.approx(32 / 112)


# ---------------------------------------------------------------------------------------------- #
# Atomic outputs
# ---------------------------------------------------------------------------------------------- #


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_honour_the_umask(tmp_path, umask_027):
    atomic_write_text(tmp_path / "a.txt", "x")
    assert mode(tmp_path / "a.txt") == 0o640
    os.chmod(tmp_path / "a.txt", 0o604)  # a replaced file keeps its mode, as with open(..., "w")
    atomic_write_text(tmp_path / "a.txt", "y")
    assert mode(tmp_path / "a.txt") == 0o604 and (tmp_path / "a.txt").read_text() == "y"
    with atomic_directory(tmp_path / "run") as tmp:
        (tmp / "f.txt").write_text("z")
        atomic_write_text(tmp / "g.txt", "z")
    assert mode(tmp_path / "run") == 0o750
    assert mode(tmp_path / "run" / "f.txt") == mode(tmp_path / "run" / "g.txt") == 0o640


def test_an_interrupted_directory_write_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(tmp_path / "run") as tmp:
            (tmp / "half.txt").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_atomic_directory_follows_a_link_to_an_empty_folder(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with atomic_directory(tmp_path / "link", replace=False) as tmp:
        (tmp / "f.txt").write_text("x")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "target" / "f.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target"]
