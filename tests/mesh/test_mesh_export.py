"""Textured mesh export: a toy object's ground-truth views -> Gaussians (the embedded reconstructor)
-> carved, textured mesh, against the object's analytic shape and colours."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("xatlas")
pytest.importorskip("skimage")

from videomv.eval.mesh import Mesh, mesh_metrics  # noqa: E402
from videomv.geometry import orbit_cameras  # noqa: E402
from videomv.mesh import CarveSettings, MeshSettings, export_mesh, project_colors  # noqa: E402
from videomv.mesh.texture import depth_buffers, rasterize_uv  # noqa: E402
from videomv.toy import world as toyworld  # noqa: E402
from videomv.toy.references import toy_reference_mesh  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECONSTRUCTOR = REPO / "data" / "embedded" / "t2mv" / "reconstructor"
FOVY, BACKGROUND = 49.1, 128 / 255
INPUT_VIEWS = [0, 6, 12, 18]


def red_cube_on_blue_cylinder() -> toyworld.ToyObject:
    prims = [toyworld.Primitive("cylinder", (0.3, 0.18), (0.0, -0.18, 0.0), 0.3, "blue"),
             toyworld.Primitive("cube", (0.18,), (0.0, 0.18, 0.0), 0.5, "red")]
    return toyworld.ToyObject(recipe=("stacked",), caption="a red cube on top of a blue cylinder", primitives=prims,
                              elevation=15.0)


def ground_truth_views(obj, num_views=24, resolution=64):
    cameras = orbit_cameras(num_views, 15.0, 2.0)
    rgba = toyworld.render_object(obj, cameras, resolution, FOVY)
    images = rgba[..., :3] * rgba[..., 3:] + BACKGROUND * (1 - rgba[..., 3:])
    return images.permute(0, 3, 1, 2).contiguous(), cameras


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    if not RECONSTRUCTOR.is_dir():
        pytest.skip("embedded reconstructor not present")
    from videomv.recon import Reconstructor

    torch.manual_seed(0)
    obj = red_cube_on_blue_cylinder()
    images, cameras = ground_truth_views(obj)
    recon = Reconstructor.from_pretrained(RECONSTRUCTOR)
    with torch.no_grad():
        gaussians = recon.reconstruct(images[None, INPUT_VIEWS], cameras[None, INPUT_VIEWS], fovy=FOVY)[0]
    out = tmp_path_factory.mktemp("mesh")
    written = export_mesh(gaussians, images, cameras, FOVY, out, MeshSettings(texture_size=256))
    return obj, written, (gaussians, images, cameras)


def test_mesh_matches_the_analytic_shape(exported):
    obj, written, _ = exported
    mesh = trimesh.load(written["mesh_glb"], force="mesh")
    closed = trimesh.Trimesh(mesh.vertices, mesh.faces)  # merges the vertices the UV seams split
    assert closed.is_watertight and closed.volume > 0
    reference = toy_reference_mesh(obj, 96)
    metrics = mesh_metrics(Mesh(mesh.vertices, mesh.faces), reference, num_points=20_000, normalize="gt")
    # measured (bounding-box normalisation of the reference, this object): Chamfer 0.034, IoU 0.78;
    # a mesh shifted by a tenth of the object's size fails both bounds (checked below)
    assert metrics["chamfer"] < 0.05, metrics
    assert metrics["volume_iou"] > 0.65, metrics
    shifted = Mesh(mesh.vertices + np.array([0.06, 0.0, 0.0]), mesh.faces)
    worse = mesh_metrics(shifted, reference, num_points=20_000, normalize="gt")
    assert worse["chamfer"] > 0.05 or worse["volume_iou"] < 0.65, worse


def assert_red_above_blue(mesh):
    visual = mesh.visual if mesh.visual.kind == "vertex" else mesh.visual.to_color()
    rgb = visual.vertex_colors[:, :3].astype(float) / 255
    y = mesh.vertices[:, 1]
    red, blue = rgb[y > 0.08].mean(0), rgb[y < -0.08].mean(0)
    # measured: red (0.41, 0.06, 0.06), blue (0.13, 0.18, 0.43) (the toy renders' Lambertian shading darkens)
    assert red[0] > 0.3 and red[0] > 3 * max(red[1], red[2]), red
    assert blue[2] > 0.3 and blue[2] > 2 * blue[0] and blue[2] > 1.5 * blue[1], blue


def test_glb_colours_follow_the_object(exported):
    _, written, _ = exported
    mesh = trimesh.load(written["mesh_glb"], force="mesh")
    assert mesh.visual.kind == "texture"
    assert_red_above_blue(mesh)


def test_vertex_colour_mode(exported, tmp_path):
    _, _, (gaussians, images, cameras) = exported
    written = export_mesh(gaussians, images, cameras, FOVY, tmp_path, MeshSettings(texture="vertex"))
    mesh = trimesh.load(written["mesh_glb"], force="mesh")
    assert mesh.visual.kind == "vertex"
    assert_red_above_blue(mesh)


def test_obj_has_its_texture(exported):
    _, written, _ = exported
    obj_path = Path(written["mesh_obj"])
    text = obj_path.read_text()
    assert "mtllib mesh.mtl" in text and "vt " in text
    mtl = (obj_path.parent / "mesh.mtl").read_text()
    texture_name = next(line.split()[-1] for line in mtl.splitlines() if line.startswith("map_Kd"))
    kd = next(line.split()[1:] for line in mtl.splitlines() if line.startswith("Kd"))
    assert [float(v) for v in kd] == [1.0, 1.0, 1.0]  # the texture is not darkened by the diffuse factor
    assert (obj_path.parent / texture_name).is_file()
    loaded = trimesh.load(obj_path, force="mesh")
    glb = trimesh.load(written["mesh_glb"], force="mesh")
    assert loaded.visual.kind == "texture"
    np.testing.assert_allclose(np.sort(loaded.vertices, 0), np.sort(glb.vertices, 0), atol=1e-5)


def test_rasterize_uv_covers_the_unit_square_once():
    uvs = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    faces = np.array([[0, 1, 2], [0, 2, 3]])
    fid, bary, row, col = rasterize_uv(uvs, faces, 16)
    cover = np.zeros((16, 16), int)
    np.add.at(cover, (row, col), 1)
    # texel centres on the shared diagonal count for both triangles; all others exactly once
    diagonal = np.eye(16, dtype=bool)[::-1]
    assert (cover[~diagonal] == 1).all() and (cover[diagonal] == 2).all()
    np.testing.assert_allclose(bary.sum(1), 1.0)
    # the barycentric point of each texel is its centre (row 0 is the top, v = 1)
    point = (bary[:, :, None] * uvs[faces[fid]]).sum(1)
    np.testing.assert_allclose(point, np.stack([(col + 0.5) / 16, 1 - (row + 0.5) / 16], -1), atol=1e-9)


def test_projection_respects_occlusion():
    """Two parallel squares facing a camera on +z: the front one takes the image's colour, the back
    one (hidden behind it) is not seen."""
    front = trimesh.creation.box((0.6, 0.6, 0.01)).apply_translation([0, 0, 0.3])
    back = trimesh.creation.box((0.3, 0.3, 0.01)).apply_translation([0, 0, -0.3])
    scene = trimesh.util.concatenate([front, back])
    cameras = orbit_cameras(1, 0.0, 2.0)  # azimuth 0: on +z, looking at the origin
    image = torch.zeros(1, 3, 32, 32)
    image[:, 0] = torch.linspace(0, 1, 32)[None, None, :]  # red ramp, left to right
    buffers = depth_buffers(scene, cameras, FOVY, 32)
    points = np.array([[0.0, 0.0, 0.305], [0.1, 0.0, 0.305], [0.0, 0.0, -0.295]])
    normals = np.array([[0, 0, 1.0], [0, 0, 1.0], [0, 0, 1.0]])
    rgb, seen = project_colors(points, normals, image, cameras, FOVY, buffers, tolerance=0.03)
    assert seen.tolist() == [True, True, False]
    focal = 16 / np.tan(np.radians(FOVY) / 2)
    for i in range(2):  # red = the ramp at the projected column, hand computed
        u = 16 + focal * points[i, 0] / (2.0 - points[i, 2])
        assert abs(rgb[i, 0] - np.clip((u - 0.5) / 31, 0, 1)) < 0.02
    # a point facing away from the camera is never seen
    _, seen = project_colors(points[:1], -normals[:1], image, cameras, FOVY, buffers)
    assert not seen.any()


def test_bad_settings_and_inputs_are_named():
    with pytest.raises(ValueError, match="texture"):
        MeshSettings(texture="png")
    with pytest.raises(ValueError, match="radius"):
        CarveSettings(bound=1.5, radius=2.0)
    from videomv.gaussians import random_init

    g = random_init(10)
    with pytest.raises(ValueError, match="images"):
        export_mesh(g, torch.zeros(4, 3, 8, 9), orbit_cameras(4), FOVY, "/nonexistent")
