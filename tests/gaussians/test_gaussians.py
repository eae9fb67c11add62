"""Gaussian set, .ply I/O, renderers (tiled vs dense vs closed form vs gsplat) and fitting."""

import math

import numpy as np
import pytest
import torch
from plyfile import PlyData, PlyElement

from videomv.gaussians import (
    PLY_PROPERTIES,
    SH_C0,
    GaussianSet,
    fit_gaussians,
    load_ply,
    project,
    render,
    render_dense,
    render_tiled,
    save_ply,
)
from videomv.gaussians.ply import check_ply_header
from videomv.geometry import intrinsics_from_fov, look_at, opengl_to_opencv, orbit_camera, orbit_cameras

FOVY = 49.1


def random_scene(n, seed=0, radius=0.5, scale=(0.01, 0.03), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g, dtype=torch.float64), dim=-1)
    r = radius * torch.rand(n, 1, generator=g, dtype=torch.float64) ** (1 / 3)
    lo, hi = scale
    return GaussianSet(
        means=direction * r,
        scales=lo + (hi - lo) * torch.rand(n, 3, generator=g, dtype=torch.float64),
        rotations=torch.nn.functional.normalize(torch.randn(n, 4, generator=g, dtype=torch.float64), dim=-1),
        opacities=0.1 + 0.85 * torch.rand(n, 1, generator=g, dtype=torch.float64),
        colors=torch.rand(n, 3, generator=g, dtype=torch.float64),
    ).to(dtype=dtype)


def single_gaussian(position, scale, opacity, color, dtype=torch.float64):
    return GaussianSet(
        means=torch.tensor([position], dtype=dtype),
        scales=torch.full((1, 3), scale, dtype=dtype),
        rotations=torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype),
        opacities=torch.tensor([[opacity]], dtype=dtype),
        colors=torch.tensor([color], dtype=dtype),
    )


# ---------------------------------------------------------------------------------------------- #
# GaussianSet
# ---------------------------------------------------------------------------------------------- #


def test_from_lgm_applies_lgm_activations():
    raw = torch.randn(50, 14) * 3
    g = GaussianSet.from_lgm(raw)
    r = raw.double().numpy()
    np.testing.assert_allclose(g.means.numpy(), np.clip(r[:, 0:3], -1, 1), atol=1e-6)
    np.testing.assert_allclose(g.opacities.numpy(), 1 / (1 + np.exp(-r[:, 3:4])), atol=1e-6)
    np.testing.assert_allclose(g.scales.numpy(), 0.1 * np.log1p(np.exp(r[:, 4:7])), atol=1e-6)
    np.testing.assert_allclose(g.rotations.numpy(), r[:, 7:11] / np.linalg.norm(r[:, 7:11], axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(g.colors.numpy(), 0.5 * np.tanh(r[:, 11:14]) + 0.5, atol=1e-6)
    assert torch.equal(g.to_lgm_activated()[:, 3:4], g.opacities)
    batch = GaussianSet.from_lgm_batch(raw.view(2, 25, 14))
    assert len(batch) == 2 and torch.equal(batch[1].means, g.means[25:])
    with pytest.raises(ValueError, match=r"\(N, 14\)"):
        GaussianSet.from_lgm(torch.zeros(5, 13))


def test_gaussian_set_validates_shapes():
    g = single_gaussian([0, 0, 0], 0.1, 0.5, [1, 0, 0])
    with pytest.raises(ValueError, match="rotations"):
        GaussianSet(g.means, g.scales, g.rotations[:, :3], g.opacities, g.colors)
    with pytest.raises(ValueError, match="colors: has 2 rows"):
        GaussianSet(g.means, g.scales, g.rotations, g.opacities, g.colors.repeat(2, 1))
    assert len(GaussianSet.cat([g, g])) == 2


def test_covariance_matches_gsplat():
    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci

    g = random_scene(20, dtype=torch.float64)
    covar, _ = _quat_scale_to_covar_preci(g.rotations, g.scales, compute_preci=False)
    torch.testing.assert_close(g.covariances(), covar)


# ---------------------------------------------------------------------------------------------- #
# .ply
# ---------------------------------------------------------------------------------------------- #


def test_ply_round_trip_and_layout(tmp_path):
    g = random_scene(300)
    path = tmp_path / "scene.ply"
    assert save_ply(g, path) == 300
    vertex = PlyData.read(str(path))["vertex"]
    assert [p.name for p in vertex.properties] == PLY_PROPERTIES
    # Stored values are the original 3DGS pre-activations.
    np.testing.assert_allclose(vertex["f_dc_1"], (g.colors[:, 1].numpy() - 0.5) / SH_C0, rtol=1e-5, atol=1e-5)
    o = g.opacities[:, 0].double().numpy()
    np.testing.assert_allclose(vertex["opacity"], np.log(o / (1 - o)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vertex["scale_2"], np.log(g.scales[:, 2].numpy()), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(vertex["rot_0"], g.rotations[:, 0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(vertex["nx"], 0)

    back = load_ply(path)
    for name in ("means", "scales", "rotations", "opacities", "colors"):
        torch.testing.assert_close(getattr(back, name), getattr(g, name), atol=1e-5, rtol=1e-5)
    assert not list(tmp_path.glob("*.tmp"))

    assert save_ply(g, tmp_path / "pruned.ply", min_opacity=0.5) == int((g.opacities >= 0.5).sum())


def test_ply_missing_property_fails_clearly(tmp_path):
    names = [p for p in PLY_PROPERTIES if p != "scale_1"]
    vertices = np.zeros(4, dtype=[(n, "f4") for n in names])
    path = tmp_path / "broken.ply"
    PlyData([PlyElement.describe(vertices, "vertex")]).write(str(path))
    with pytest.raises(ValueError, match="scale_1"):
        load_ply(path)
    with pytest.raises(FileNotFoundError):
        load_ply(tmp_path / "absent.ply")


def _gaussian_header(count: int, fmt: str = "binary_little_endian") -> bytes:
    lines = ["ply", f"format {fmt} 1.0", f"element vertex {count}"] + [f"property float {n}" for n in PLY_PROPERTIES]
    return ("\n".join(lines + ["end_header"]) + "\n").encode()


def test_ply_header_declaring_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    # 10^10 Gaussians would need 680 GB of rows (68 bytes each); the file holds a few hundred bytes.
    path = tmp_path / "bomb.ply"
    header = _gaussian_header(10**10)
    path.write_bytes(header + bytes(440 - len(header)))
    assert path.stat().st_size == 440
    with pytest.raises(ValueError, match=r"declares 10000000000 vertex \(at least 680000000000 bytes\)"):
        load_ply(path)
    # The same for an ASCII header (two bytes at least per value) and for one row too few.
    path.write_bytes(_gaussian_header(10**10, "ascii") + b"0 " * 17)
    with pytest.raises(ValueError, match="declares"):
        load_ply(path)
    good = tmp_path / "good.ply"
    save_ply(random_scene(5), good)
    data = good.read_bytes()
    assert check_ply_header(good) == {"vertex": 5}
    good.write_bytes(data[:-68])  # drop the last row
    with pytest.raises(ValueError, match="declares 5 vertex"):
        load_ply(good)


@pytest.mark.parametrize("header,match", [
    (b"PK\x03\x04 not a ply", "not a .ply"),
    (b"ply\nformat ascii 1.0\nelement vertex 3\n" + b"comment x\n" * 10000, "no end_header"),
    (b"ply\nformat ascii 1.0\nelement vertex -3\nend_header\n", "header line 3"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty quad x\nend_header\n0\n", "header line 4"),
    (b"ply\nformat zip 1.0\nelement vertex 0\nend_header\n", "unknown .ply format"),
])
def test_ply_header_errors_name_the_file_and_the_problem(tmp_path, header, match):
    path = tmp_path / "bad.ply"
    path.write_bytes(header)
    with pytest.raises(ValueError, match=match) as info:
        check_ply_header(path)
    assert str(path) in str(info.value)


def test_ply_header_check_accepts_lists_and_ascii(tmp_path):
    # A mesh-style file: a list property counts only its length byte per row (lists may be empty).
    path = tmp_path / "mesh.ply"
    vertices = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    faces = np.array([([0, 1, 2],)], dtype=[("vertex_indices", "i4", (3,))])
    for text in (False, True):
        PlyData([PlyElement.describe(vertices, "vertex"), PlyElement.describe(faces, "face")], text=text).write(str(path))
        assert check_ply_header(path) == {"vertex": 3, "face": 1}


# ---------------------------------------------------------------------------------------------- #
# Projection against gsplat
# ---------------------------------------------------------------------------------------------- #


def test_projection_matches_gsplat():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    g = random_scene(400, dtype=torch.float64)
    c2w = orbit_cameras(3, elevation=20, radius=1.6).double()
    height, width = 48, 64
    viewmats = torch.linalg.inv(opengl_to_opencv(c2w).double())  # OpenCV world-to-camera
    ks = intrinsics_from_fov(FOVY, height, width).double().expand(3, 3, 3)
    radii, means2d, depths, conics, _ = _fully_fused_projection(
        g.means, g.covariances(), viewmats, ks, width, height, eps2d=0.3
    )
    proj = project(g, c2w, FOVY, height, width)
    visible = radii.amax(-1) > 0
    assert visible.sum() > 600
    # Poses are float32: inverse vs transpose of their rotation differ at ~1e-7.
    tol = dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(proj.means2d[visible], means2d[visible], **tol)
    torch.testing.assert_close(proj.depths, depths, **tol)
    torch.testing.assert_close(proj.conics[visible], conics[visible], **tol)


# ---------------------------------------------------------------------------------------------- #
# Rendering
# ---------------------------------------------------------------------------------------------- #


def test_tiled_matches_dense_reference():
    g = random_scene(3000, seed=1)
    c2w = torch.cat([orbit_cameras(2, elevation=15, radius=1.8), orbit_camera(-30.0, 100.0, 1.5)[None]])
    bg = torch.tensor([0.2, 0.5, 0.9])
    height, width = 45, 70  # not multiples of the tile size
    tiled = render_tiled(g, c2w, FOVY, height, width, bg)
    dense = render_dense(g, c2w, FOVY, height, width, bg)
    for key, shape in (("rgb", (3, 3, height, width)), ("alpha", (3, 1, height, width)), ("depth", (3, 1, height, width))):
        assert tiled[key].shape == shape
        assert (tiled[key] - dense[key]).abs().max() <= 1e-4, key
    assert tiled["alpha"].max() > 0.99 and tiled["alpha"].min() == 0.0  # opaque core, empty corners
    # Small tiles and blocks exercise the same result through many more batches.
    small = render_tiled(g, c2w, FOVY, height, width, bg, tile=4, block=8, max_elements=4096)
    assert (small["rgb"] - dense["rgb"]).abs().max() <= 1e-4


@pytest.mark.parametrize("size", [33, 32])
def test_single_gaussian_closed_form(size):
    scale, opacity, dist = 0.05, 0.8, 2.0
    color, bg = torch.tensor([0.9, 0.3, 0.1], dtype=torch.float64), torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64)
    g = single_gaussian([0.0, 0.0, 0.0], scale, opacity, color.tolist())
    c2w = orbit_camera(0.0, 0.0, dist)[None].double()  # on +z, looking at the origin
    out = render(g, c2w, FOVY, size, size, bg)
    focal = 0.5 * size / math.tan(math.radians(FOVY) / 2)
    var = (focal * scale / dist) ** 2 + 0.3  # EWA footprint plus the low-pass dilation
    centre = torch.arange(size, dtype=torch.float64) + 0.5 - size / 2
    r2 = centre[None, :] ** 2 + centre[:, None] ** 2
    alpha = (opacity * torch.exp(-0.5 * r2 / var)).clamp(max=0.99)
    alpha = torch.where(alpha >= 1 / 255, alpha, torch.zeros_like(alpha))
    torch.testing.assert_close(out["alpha"][0, 0], alpha)
    torch.testing.assert_close(out["rgb"][0], alpha * color[:, None, None] + (1 - alpha) * bg[:, None, None])
    torch.testing.assert_close(out["depth"][0, 0], alpha * dist)
    peak = torch.nonzero(out["alpha"][0, 0] == out["alpha"].max())
    expected = [[size // 2, size // 2]] if size % 2 else [[i, j] for i in (15, 16) for j in (15, 16)]
    assert peak.tolist() == expected
    if size % 2:
        assert out["alpha"].max().item() == pytest.approx(opacity)


def test_offset_gaussian_lands_at_projected_pixel():
    # A Gaussian at +x/+y (world, up) must appear right of and above the image centre.
    g = single_gaussian([0.2, 0.1, 0.0], 0.02, 0.9, [1.0, 1.0, 1.0])
    c2w = look_at(torch.tensor([0.0, 0.0, 2.0]))[None].double()
    out = render(g, c2w, FOVY, 64, 64, (0.0, 0.0, 0.0))
    row, col = divmod(int(out["alpha"][0, 0].argmax()), 64)
    focal = 32 / math.tan(math.radians(FOVY) / 2)
    assert col == int(32 + focal * 0.2 / 2.0) and row == int(32 - focal * 0.1 / 2.0)


def test_early_termination_matches_3dgs_loop():
    # Many Gaussians stacked on the optical axis: compositing must stop where 3DGS's loop stops.
    n = 150
    depth = torch.linspace(-0.5, 0.5, n, dtype=torch.float64)
    g = GaussianSet(
        means=torch.stack([torch.zeros(n), torch.zeros(n), -depth.float()], -1).double(),
        scales=torch.full((n, 3), 0.05, dtype=torch.float64),
        rotations=torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64).repeat(n, 1),
        opacities=torch.full((n, 1), 0.3, dtype=torch.float64),
        colors=torch.rand(n, 3, dtype=torch.float64),
    )
    c2w = orbit_camera(0.0, 0.0, 2.0)[None].double()
    out = render(g, c2w, FOVY, 17, 17, (0.5, 0.5, 0.5))
    # Scalar reference of the 3DGS forward loop for the centre pixel (front to back = +z first).
    colour, t = torch.zeros(3, dtype=torch.float64), 1.0
    for i in range(n):
        alpha = min(0.99, 0.3)
        if t * (1 - alpha) < 1e-4:
            break
        colour += g.colors[i] * alpha * t
        t *= 1 - alpha
    assert 20 < i < n - 1  # terminated well inside the stack
    torch.testing.assert_close(out["rgb"][0, :, 8, 8], colour + t * 0.5)
    assert out["alpha"][0, 0, 8, 8].item() == pytest.approx(1 - t, abs=1e-12)


def test_background_where_empty_and_linear_in_background():
    g = random_scene(500, radius=0.3)
    c2w = orbit_cameras(2, radius=2.0)
    a = render(g, c2w, FOVY, 40, 40, (0.1, 0.6, 0.3))
    b = render(g, c2w, FOVY, 40, 40, torch.tensor([1.0, 0.0, 0.5]))
    empty = a["alpha"][:, 0] == 0
    assert empty.float().mean() > 0.3
    assert torch.equal(a["rgb"].permute(0, 2, 3, 1)[empty], torch.tensor([0.1, 0.6, 0.3]).expand(int(empty.sum()), 3))
    delta = torch.tensor([0.1 - 1.0, 0.6, 0.3 - 0.5]).view(1, 3, 1, 1)
    torch.testing.assert_close(a["rgb"] - b["rgb"], (1 - a["alpha"]) * delta, atol=1e-6, rtol=0)


def test_batched_views_equal_single_views():
    g = random_scene(800)
    c2w = orbit_cameras(4, elevation=10, radius=1.7)
    together = render(g, c2w, FOVY, 24, 32)
    for i in range(4):
        alone = render(g, c2w[i : i + 1], FOVY, 24, 32)
        for key in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(together[key][i : i + 1], alone[key], atol=1e-5, rtol=0)


def test_gradients_match_finite_differences():
    g = random_scene(4, radius=0.15, scale=(0.06, 0.12), dtype=torch.float64)
    g.opacities[:] = torch.tensor([[0.5], [0.7], [0.4], [0.6]], dtype=torch.float64)
    c2w = orbit_camera(10.0, 20.0, 1.5)[None].double()
    weights = torch.rand(5, 10, 12, dtype=torch.float64)

    def loss(means, scales, rotations, opacities, colors):
        out = render(GaussianSet(means, scales, rotations, opacities, colors), c2w, FOVY, 10, 12, (0.3, 0.3, 0.3))
        return (torch.cat([out["rgb"], out["alpha"], out["depth"]], 1)[0] * weights).sum()

    inputs = [t.clone().requires_grad_(True) for t in (g.means, g.scales, g.rotations, g.opacities, g.colors)]
    assert torch.autograd.gradcheck(loss, inputs, eps=1e-7, atol=1e-5, rtol=1e-4)


def test_render_rejects_bad_input():
    g = random_scene(10)
    c2w = orbit_cameras(1)
    with pytest.raises(ValueError, match=r"c2w.*\(V, 4, 4\)"):
        render(g, c2w[0], FOVY, 8, 8)
    with pytest.raises(ValueError, match="background"):
        render(g, c2w, FOVY, 8, 8, background=(1.0, 1.0))
    with pytest.raises(ValueError, match="backend"):
        render(g, c2w, FOVY, 8, 8, backend="vulkan")
    with pytest.raises(ValueError, match="fovy"):
        render(g, c2w, 0.0, 8, 8)
    with pytest.raises(RuntimeError, match="diff_gaussian_rasterization"):
        render(g, c2w, FOVY, 8, 8, backend="cuda")  # tensors on the CPU


# ---------------------------------------------------------------------------------------------- #
# Fitting
# ---------------------------------------------------------------------------------------------- #


def _psnr(a, b):
    return -10 * math.log10((a - b).square().mean().item())


def test_fit_recovers_held_out_view():
    gen = torch.Generator().manual_seed(3)
    n = 64
    truth = GaussianSet(
        means=(torch.rand(n, 3, generator=gen) - 0.5) * 0.6,
        scales=0.04 + 0.06 * torch.rand(n, 3, generator=gen),
        rotations=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=-1),
        opacities=0.6 + 0.4 * torch.rand(n, 1, generator=gen),
        colors=torch.rand(n, 3, generator=gen),
    )
    train = torch.cat([orbit_cameras(4, 20, 2.0), orbit_cameras(4, -10, 2.0, 45)])
    held_out = orbit_camera(5.0, 30.0, 2.0)[None]
    with torch.no_grad():
        images = render(truth, train, FOVY, 32, 32)["rgb"]
        reference = render(truth, held_out, FOVY, 32, 32)["rgb"]
    kwargs = dict(num_gaussians=200, iters=60, seed=0, progress=False, init_radius=0.5)
    fitted = fit_gaussians(images, train, FOVY, **kwargs)
    with torch.no_grad():
        start = render(fit_gaussians(images, train, FOVY, **{**kwargs, "iters": 0}), held_out, FOVY, 32, 32)["rgb"]
        novel = render(fitted, held_out, FOVY, 32, 32)["rgb"]
    assert _psnr(novel, reference) > 25
    assert _psnr(novel, reference) > _psnr(start, reference) + 8  # far better than the random start
    again = fit_gaussians(images, train, FOVY, **{**kwargs, "iters": 5})
    assert torch.equal(again.means, fit_gaussians(images, train, FOVY, **{**kwargs, "iters": 5}).means)
    with pytest.raises(ValueError, match="c2w"):
        fit_gaussians(images, train[:3], FOVY, iters=1)


def test_cuda_backend_matrices_follow_3dgs_convention(monkeypatch):
    """The CUDA rasteriser is absent here; a stand-in records what it is given, and its matrices
    must map means to the pixels and depths of `project` (3DGS puts pixel centres at integers)."""
    import sys
    import types
    from typing import NamedTuple

    from videomv.gaussians.render_cuda import render_cuda

    calls = []

    class Settings(NamedTuple):
        image_height: int
        image_width: int
        tanfovx: float
        tanfovy: float
        bg: torch.Tensor
        scale_modifier: float
        viewmatrix: torch.Tensor
        projmatrix: torch.Tensor
        sh_degree: int
        campos: torch.Tensor
        prefiltered: bool
        debug: bool

    class Rasterizer:
        def __init__(self, raster_settings):
            self.settings = raster_settings

        def __call__(self, **kwargs):
            calls.append((self.settings, kwargs))
            s = self.settings
            return torch.zeros(3, s.image_height, s.image_width), torch.zeros(len(kwargs["means3D"]), dtype=torch.int32)

    fake = types.ModuleType("diff_gaussian_rasterization")
    fake.GaussianRasterizationSettings, fake.GaussianRasterizer = Settings, Rasterizer
    monkeypatch.setitem(sys.modules, "diff_gaussian_rasterization", fake)

    g = random_scene(50)
    c2w = orbit_cameras(2, elevation=25, radius=1.8)
    height, width = 40, 56
    out = render_cuda(g, c2w, FOVY, height, width, torch.tensor([1.0, 1.0, 1.0]))
    assert out["rgb"].shape == (2, 3, height, width) and out["alpha"].shape == (2, 1, height, width)
    proj = project(g, c2w, FOVY, height, width)
    assert len(calls) == 4  # colour pass and depth/alpha pass per view
    for view in range(2):
        settings, kwargs = calls[2 * view]
        assert settings.sh_degree == 0 and settings.scale_modifier == 1.0 and kwargs["shs"] is None
        assert torch.equal(kwargs["colors_precomp"], g.colors)
        torch.testing.assert_close(settings.campos, c2w[view, :3, 3])
        assert settings.tanfovx == pytest.approx(math.tan(math.radians(FOVY) / 2) * width / height)
        hom = torch.cat([g.means, torch.ones(len(g), 1)], -1)
        view_space = hom @ settings.viewmatrix
        torch.testing.assert_close(view_space[:, 2], proj.depths[view], atol=1e-5, rtol=1e-5)
        clip = hom @ settings.projmatrix
        ndc = clip[:, :2] / clip[:, 3:4]
        pixels = torch.stack([((ndc[:, 0] + 1) * width - 1) / 2, ((ndc[:, 1] + 1) * height - 1) / 2], -1)
        torch.testing.assert_close(pixels + 0.5, proj.means2d[view], atol=1e-3, rtol=1e-5)
        depth_pass = calls[2 * view + 1][1]["colors_precomp"]
        torch.testing.assert_close(depth_pass[:, 0], proj.depths[view], atol=1e-5, rtol=1e-5)
