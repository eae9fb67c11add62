"""Camera geometry against kiui.cam (an independent implementation of the same convention),
closed-form cases and hand-computed values."""

import json
import math

import kiui.cam
import numpy as np
import pytest
import torch

from videomv.geometry import (
    c2w_to_gobjaverse_json,
    camera_vector,
    check_c2w,
    colmap_to_c2w,
    focal_from_fov,
    get_rays,
    gobjaverse_fov_deg,
    gobjaverse_json_to_c2w,
    intrinsics_from_fov,
    load_trajectory,
    look_at,
    normalize_to_first_view,
    opencv_to_opengl,
    opengl_to_opencv,
    orbit_angles,
    orbit_camera,
    orbit_cameras,
    plucker_rays,
    save_trajectory,
    select_views,
)

ANGLES = [(15.0, 0.0, 2.0), (30.0, 45.0, 1.5), (-20.0, 200.0, 3.0), (5.0, -90.0, 1.7), (60.0, 330.0, 2.5)]


def _random_pose(gen: torch.Generator) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    pose = torch.eye(4)
    pose[:3, :3] = q
    pose[:3, 3] = torch.randn(3, generator=gen)
    return pose


# ------------------------------------------------------------------------------------------- #
# Orbit cameras
# ------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("el,az,r", ANGLES)
def test_orbit_camera_matches_kiui_with_flipped_elevation(el, az, r):
    ours = orbit_camera(el, az, r)
    theirs = torch.from_numpy(kiui.cam.orbit_camera(-el, az, r, opengl=True)).float()
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("el,az,r", ANGLES)
def test_orbit_angles_inverts_orbit_camera_and_matches_kiui(el, az, r):
    c2w = orbit_camera(el, az, r)
    el2, az2, r2 = orbit_angles(c2w)
    k_el, k_az, k_r = kiui.cam.undo_orbit_camera(c2w.numpy())
    assert el2.item() == pytest.approx(el, abs=1e-3)
    assert el2.item() == pytest.approx(-k_el, abs=1e-3)
    assert math.cos(math.radians(az2.item() - az)) == pytest.approx(1.0, abs=1e-6)
    assert az2.item() == pytest.approx(k_az, abs=1e-3)
    assert r2.item() == pytest.approx(r, rel=1e-5) == k_r


def test_orbit_camera_convention_closed_form():
    # azimuth 0 -> camera on +z; azimuth 90 -> camera on +x; positive elevation -> above.
    torch.testing.assert_close(orbit_camera(0.0, 0.0, 2.0), torch.tensor(
        [[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2], [0, 0, 0, 1]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(orbit_camera(0.0, 90.0, 2.0)[:3, 3], torch.tensor([2.0, 0, 0]), atol=1e-6, rtol=0)
    assert orbit_camera(30.0, 0.0, 2.0)[1, 3] == pytest.approx(1.0, abs=1e-6)
    # the camera looks at the origin: its -z axis points from the eye to the target
    c2w = orbit_camera(25.0, 130.0, 1.7)
    torch.testing.assert_close(-c2w[:3, 2], -c2w[:3, 3] / c2w[:3, 3].norm(), atol=1e-6, rtol=0)


def test_orbit_cameras_24_views():
    cams = orbit_cameras(24, elevation=15.0, radius=2.0)
    assert cams.shape == (24, 4, 4)
    check_c2w(cams)
    el, az, r = orbit_angles(cams)
    torch.testing.assert_close(r, torch.full((24,), 2.0), atol=1e-5, rtol=0)
    torch.testing.assert_close(el, torch.full((24,), 15.0), atol=1e-4, rtol=0)
    step = np.diff(np.rad2deg(np.unwrap(np.deg2rad(az.double().numpy()))))
    np.testing.assert_allclose(step, 15.0, atol=1e-3)
    # consecutive camera positions subtend 15 degrees seen from the origin's vertical axis
    pos = cams[:, :3, 3]
    horiz = pos[:, [0, 2]]
    cos = (horiz[:-1] * horiz[1:]).sum(-1) / (horiz[:-1].norm(dim=-1) * horiz[1:].norm(dim=-1))
    torch.testing.assert_close(cos, torch.full((23,), math.cos(math.radians(15))), atol=1e-5, rtol=0)


def test_orbit_cameras_rejects_bad_input():
    with pytest.raises(ValueError, match="num_views"):
        orbit_cameras(0)
    with pytest.raises(ValueError, match="elevation"):
        orbit_cameras(24, elevation=90.0)
    with pytest.raises(ValueError, match="radius"):
        orbit_cameras(24, radius=0.0)


def test_look_at_straight_down_is_valid():
    c2w = look_at(torch.tensor([0.0, 3.0, 0.0]))
    check_c2w(c2w)
    torch.testing.assert_close(c2w[:3, 2], torch.tensor([0.0, 1.0, 0.0]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------- #
# Intrinsics and projection
# ------------------------------------------------------------------------------------------- #


def test_focal_closed_form_and_errors():
    assert focal_from_fov(90.0, 256) == pytest.approx(128.0)
    assert focal_from_fov(49.1, 512) == pytest.approx(560.0, rel=2e-3)  # the Objaverse renders' focal
    with pytest.raises(ValueError, match="field of view"):
        focal_from_fov(0.0, 64)
    with pytest.raises(ValueError, match="field of view"):
        focal_from_fov(180.0, 64)
    K = intrinsics_from_fov(49.1, 64, 96)
    assert K[0, 0] == K[1, 1] == pytest.approx(focal_from_fov(49.1, 64))
    assert (K[0, 2].item(), K[1, 2].item()) == (48.0, 32.0)


def _project(c2w_gl: torch.Tensor, K: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    w2c = torch.linalg.inv(opengl_to_opencv(c2w_gl))
    cam = (w2c[:3, :3] @ points.T).T + w2c[:3, 3]
    uv = (K @ cam.T).T
    return uv[:, :2] / uv[:, 2:]


@pytest.mark.parametrize("el,az,r", ANGLES)
def test_origin_projects_to_image_centre(el, az, r):
    K = intrinsics_from_fov(49.1, 48, 64)
    uv = _project(orbit_camera(el, az, r), K, torch.zeros(1, 3))
    torch.testing.assert_close(uv[0], torch.tensor([32.0, 24.0]), atol=1e-4, rtol=0)


def test_rays_and_intrinsics_agree():
    """A point on the ray through pixel (i, j) projects back to that pixel's centre."""
    c2w = orbit_camera(20.0, 75.0, 2.0)
    H, W = 12, 16
    K = intrinsics_from_fov(40.0, H, W)
    o, d = get_rays(c2w, H, W, 40.0)
    for i, j in [(0, 0), (3, 11), (11, 15), (6, 8)]:
        point = o[i, j] + 1.7 * d[i, j]
        uv = _project(c2w, K, point[None])[0]
        torch.testing.assert_close(uv, torch.tensor([j + 0.5, i + 0.5]), atol=1e-3, rtol=0)


@pytest.mark.parametrize("el,az,r", ANGLES[:3])
def test_get_rays_matches_kiui(el, az, r):
    c2w = orbit_camera(el, az, r)
    o, d = get_rays(c2w, 10, 14, 49.1)
    # kiui.cam.get_rays calls `.transpose(0, 1)` on the rotation, a no-op on numpy arrays, so hand it
    # the transposed rotation to get the intended `dirs @ R.T`.
    pose = c2w.numpy().copy()
    pose[:3, :3] = pose[:3, :3].T
    ko, kd = kiui.cam.get_rays(pose, 10, 14, 49.1, opengl=True)
    assert o.shape == d.shape == (10, 14, 3)
    torch.testing.assert_close(o, torch.from_numpy(ko).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(d, torch.from_numpy(kd).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(10, 14), atol=1e-5, rtol=0)


def test_get_rays_batched_matches_single():
    cams = orbit_cameras(4, elevation=10.0)
    o, d = get_rays(cams, 6, 6, 49.1)
    assert d.shape == (4, 6, 6, 3)
    for v in range(4):
        torch.testing.assert_close(d[v], get_rays(cams[v], 6, 6, 49.1)[1])


def test_plucker_centre_ray_and_moment():
    c2w = orbit_camera(22.0, 140.0, 1.5)
    pl = plucker_rays(c2w, 5, 7, 49.1)  # odd sizes: pixel (2, 3) is exactly on the optical axis
    assert pl.shape == (6, 5, 7)
    moment, d = pl[:3], pl[3:]
    torch.testing.assert_close(d[:, 2, 3], -c2w[:3, 2], atol=1e-6, rtol=0)
    torch.testing.assert_close((moment * d).sum(0), torch.zeros(5, 7), atol=1e-5, rtol=0)
    # moment = o x d with o the camera centre
    o = c2w[:3, 3]
    torch.testing.assert_close(moment[:, 0, 0], torch.linalg.cross(o, d[:, 0, 0], dim=0), atol=1e-6, rtol=0)
    # the centre ray passes through the origin (the camera looks at it), so its moment vanishes
    torch.testing.assert_close(moment[:, 2, 3], torch.zeros(3), atol=1e-5, rtol=0)
    assert plucker_rays(orbit_cameras(3), 4, 4, 49.1).shape == (3, 6, 4, 4)


# ------------------------------------------------------------------------------------------- #
# Conversions
# ------------------------------------------------------------------------------------------- #


def test_opencv_opengl_round_trip_and_axes():
    gen = torch.Generator().manual_seed(0)
    poses = torch.stack([_random_pose(gen) for _ in range(5)])
    torch.testing.assert_close(opencv_to_opengl(opengl_to_opencv(poses)), poses)
    cv = opengl_to_opencv(poses)
    torch.testing.assert_close(cv[:, :3, 0], poses[:, :3, 0])
    torch.testing.assert_close(cv[:, :3, 1], -poses[:, :3, 1])
    torch.testing.assert_close(cv[:, :3, 2], -poses[:, :3, 2])
    torch.testing.assert_close(cv[:, :3, 3], poses[:, :3, 3])
    # an OpenCV camera looks along its +z: the OpenGL orbit camera's forward (-z) direction
    c2w = orbit_camera(10.0, 60.0, 2.0)
    torch.testing.assert_close(opengl_to_opencv(c2w)[:3, 2], -c2w[:3, 3] / 2.0, atol=1e-6, rtol=0)
    assert torch.det(opengl_to_opencv(c2w)[:3, :3]) == pytest.approx(1.0, abs=1e-5)


def test_gobjaverse_hand_made_camera():
    # Blender world (z up): camera at (0, -2, 0) looking at the origin along +y; OpenCV axes.
    meta = {"x": [1.0, 0.0, 0.0], "y": [0.0, 0.0, -1.0], "z": [0.0, 1.0, 0.0], "origin": [0.0, -2.0, 0.0],
            "x_fov": math.radians(49.1), "y_fov": math.radians(49.1)}
    expected = torch.eye(4)
    expected[2, 3] = 2.0
    torch.testing.assert_close(gobjaverse_json_to_c2w(meta), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(gobjaverse_json_to_c2w(meta), orbit_camera(0.0, 0.0, 2.0), atol=1e-6, rtol=0)
    assert gobjaverse_fov_deg(meta) == pytest.approx(49.1)
    back = c2w_to_gobjaverse_json(expected, 49.1)
    for key in ("x", "y", "z", "origin"):
        np.testing.assert_allclose(back[key], meta[key], atol=1e-6)
    assert back["y_fov"] == pytest.approx(meta["y_fov"])


def test_gobjaverse_round_trip_and_json_serialisable():
    cams = orbit_cameras(24, elevation=20.0)
    for c2w in cams:
        meta = json.loads(json.dumps(c2w_to_gobjaverse_json(c2w, 49.1)))
        torch.testing.assert_close(gobjaverse_json_to_c2w(meta), c2w, atol=1e-5, rtol=0)
        # a Blender-world camera above the object has a positive z (up) coordinate
        assert meta["origin"][2] > 0


def test_gobjaverse_bad_json():
    with pytest.raises(KeyError, match="origin"):
        gobjaverse_json_to_c2w({"x": [1, 0, 0], "y": [0, 1, 0], "z": [0, 0, 1]})
    with pytest.raises(ValueError, match="'y'"):
        gobjaverse_json_to_c2w({"x": [1, 0, 0], "y": [0, 1], "z": [0, 0, 1], "origin": [0, 0, 0]})
    with pytest.raises(KeyError, match="field of view"):
        gobjaverse_fov_deg({"x": [1, 0, 0]})
    assert gobjaverse_fov_deg({}, default=30.0) == 30.0


def test_colmap_hand_computed():
    # w2c rotation: 90 degrees about +y; translation (1, 2, 3).
    qvec = [math.cos(math.pi / 4), 0.0, math.sin(math.pi / 4), 0.0]
    tvec = [1.0, 2.0, 3.0]
    expected = torch.tensor(
        [[0.0, 0.0, 1.0, 3.0], [0.0, -1.0, 0.0, -2.0], [1.0, 0.0, 0.0, -1.0], [0.0, 0.0, 0.0, 1.0]]
    )
    c2w = colmap_to_c2w(qvec, tvec)
    torch.testing.assert_close(c2w, expected, atol=1e-6, rtol=0)
    # camera centre C satisfies R C + t = 0
    R = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])
    torch.testing.assert_close(R @ c2w[:3, 3] + torch.tensor(tvec), torch.zeros(3), atol=1e-6, rtol=0)
    # identity quaternion: camera at -t with OpenCV axes
    c2w = colmap_to_c2w([1.0, 0, 0, 0], [0.0, 0.0, 4.0])
    torch.testing.assert_close(c2w, torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0])) + torch.tensor(
        [[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, -4.0], [0, 0, 0, 0]]), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------------------- #
# Trajectory files
# ------------------------------------------------------------------------------------------- #


def test_load_trajectory_both_forms(tmp_path):
    angles = [{"elevation": 15.0, "azimuth": 15.0 * i, "radius": 2.0} for i in range(4)]
    (tmp_path / "angles.json").write_text(json.dumps(angles))
    (tmp_path / "wrapped.json").write_text(json.dumps({"cameras": angles}))
    expected = orbit_camera(torch.full((4,), 15.0), torch.arange(4) * 15.0, 2.0)
    torch.testing.assert_close(load_trajectory(tmp_path / "angles.json"), expected)
    torch.testing.assert_close(load_trajectory(tmp_path / "wrapped.json"), expected)
    (tmp_path / "mats.json").write_text(json.dumps(expected.tolist()))
    torch.testing.assert_close(load_trajectory(tmp_path / "mats.json"), expected)
    save_trajectory(tmp_path / "saved.json", expected)
    torch.testing.assert_close(load_trajectory(tmp_path / "saved.json"), expected)


@pytest.mark.parametrize(
    "content,match",
    [
        (None, "does not exist"),
        ("{not json", "not valid JSON"),
        ("[]", "non-empty list"),
        ('{"foo": 1}', "non-empty list"),
        ('[{"elevation": 10, "azimuth": 0}]', "elevation, azimuth and radius"),
        ('[{"elevation": "high", "azimuth": 0, "radius": 2}]', "elevation, azimuth and radius"),
        ('[{"elevation": 10, "azimuth": 0, "radius": -1}]', "radius must be positive"),
        ("[[1, 2, 3]]", "shape"),
        ("[[[2,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]]", "orthonormal"),
        ('[[["a",0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]]', "4x4 matrices"),
    ],
)
def test_load_trajectory_bad_files(tmp_path, content, match):
    path = tmp_path / "cams.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=match) as err:
        load_trajectory(path)
    assert "cams.json" in str(err.value)


# ------------------------------------------------------------------------------------------- #
# Conditioning helpers
# ------------------------------------------------------------------------------------------- #


def test_normalize_to_first_view():
    gen = torch.Generator().manual_seed(1)
    cams = torch.stack([_random_pose(gen) for _ in range(5)])
    out = normalize_to_first_view(cams, radius=1.5)
    expected0 = torch.eye(4)
    expected0[2, 3] = 1.5
    torch.testing.assert_close(out[0], expected0, atol=1e-5, rtol=0)
    for i in range(5):  # relative poses preserved
        torch.testing.assert_close(
            torch.linalg.inv(out[0]) @ out[i], torch.linalg.inv(cams[0]) @ cams[i], atol=1e-4, rtol=0
        )
    check_c2w(out)
    # an orbit at radius 1.5 starting at azimuth 0 with elevation 0 is unchanged
    orbit = orbit_cameras(8, elevation=0.0, radius=1.5)
    torch.testing.assert_close(normalize_to_first_view(orbit, radius=1.5), orbit, atol=1e-5, rtol=0)
    # rescale: distances scaled so view 0 sits at the target radius, then normalised
    orbit2 = orbit_cameras(8, elevation=0.0, radius=3.0)
    torch.testing.assert_close(normalize_to_first_view(orbit2, radius=1.5, rescale=True), orbit, atol=1e-5, rtol=0)
    # without rescale the other cameras keep their distance from view 0
    n = normalize_to_first_view(orbit2, radius=1.5)
    torch.testing.assert_close((n[4, :3, 3] - n[0, :3, 3]).norm(), torch.tensor(6.0), atol=1e-5, rtol=0)


def test_camera_vector_row_major():
    c2w = orbit_camera(15.0, 30.0, 2.0)
    vec = camera_vector(c2w)
    assert vec.shape == (16,)
    for i in range(4):
        for j in range(4):
            assert vec[4 * i + j] == c2w[i, j]
    assert vec[3] == c2w[0, 3] and vec[7] == c2w[1, 3] and vec[11] == c2w[2, 3]
    torch.testing.assert_close(vec[12:], torch.tensor([0.0, 0.0, 0.0, 1.0]))
    assert camera_vector(orbit_cameras(24)).shape == (24, 16)
    with pytest.raises(ValueError, match="4, 4"):
        camera_vector(torch.eye(3))


def test_check_c2w_errors():
    bad = torch.eye(4)
    bad[3, 0] = 1.0
    with pytest.raises(ValueError, match="last row"):
        check_c2w(bad)
    bad = torch.eye(4)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_c2w(bad)


def test_select_views():
    assert select_views(24, 4) == [0, 6, 12, 18]
    assert select_views(24, 4, first=3) == [3, 9, 15, 21]
    assert select_views(24, 24) == list(range(24))
    with pytest.raises(ValueError, match="evenly"):
        select_views(24, 5)
