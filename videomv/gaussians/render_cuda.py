"""Backend on the CUDA rasteriser `diff_gaussian_rasterization` (graphdeco-inria or its forks).

Optional: the package is imported lazily and only used for CUDA tensors. Colours are passed as
precomputed colours (SH degree 0), as LGM does. The rasteriser takes 3DGS's transposed (row-vector)
matrices: world_view_transform = w2c^T and full_proj_transform = w2c^T @ P^T, with OpenCV axes.
"""

from __future__ import annotations

import math

import torch

from .gaussian_set import GaussianSet
from .render_torch import opencv_world_to_camera


def is_available() -> bool:
    try:
        import diff_gaussian_rasterization  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _projection_transposed(tan_half_fovx, tan_half_fovy, znear, zfar, like):
    """3DGS's perspective matrix (z mapped to [0, 1], w = z), already transposed."""
    proj = torch.zeros(4, 4, dtype=like.dtype, device=like.device)
    proj[0, 0] = 1.0 / tan_half_fovx
    proj[1, 1] = 1.0 / tan_half_fovy
    proj[2, 2] = zfar / (zfar - znear)
    proj[3, 2] = -(zfar * znear) / (zfar - znear)
    proj[2, 3] = 1.0
    return proj


def render_cuda(
    gaussians: GaussianSet,
    c2w: torch.Tensor,
    fovy_deg: float,
    height: int,
    width: int,
    background: torch.Tensor,
    znear: float = 0.01,
    zfar: float = 100.0,
) -> dict:
    from diff_gaussian_rasterization import GaussianRasterizationSettings, GaussianRasterizer

    g = gaussians.to(dtype=torch.float32)._map(lambda t: t.contiguous())
    c2w = c2w.to(g.means)
    background = background.to(g.means).contiguous()
    tan_y = math.tan(math.radians(fovy_deg) / 2)
    tan_x = tan_y * width / height
    proj_t = _projection_transposed(tan_x, tan_y, znear, zfar, g.means)
    w2c = opencv_world_to_camera(c2w)

    # Depth and alpha come from a second pass with (depth, 1, 0) as colours on a black background,
    # which works with rasterisers that return only the image.
    rgbs, alphas, depths = [], [], []
    for i in range(c2w.shape[0]):
        view_t = w2c[i].transpose(0, 1).contiguous()
        settings = GaussianRasterizationSettings(
            image_height=height,
            image_width=width,
            tanfovx=tan_x,
            tanfovy=tan_y,
            bg=background,
            scale_modifier=1.0,
            viewmatrix=view_t,
            projmatrix=(view_t @ proj_t).contiguous(),
            sh_degree=0,
            campos=c2w[i, :3, 3].contiguous(),
            prefiltered=False,
            debug=False,
        )
        z = (g.means @ w2c[i, :3, :3].T + w2c[i, :3, 3])[:, 2:3]
        passes = []
        for colors, bg in ((g.colors, background), (torch.cat([z, torch.ones_like(z), torch.zeros_like(z)], -1), None)):
            if bg is None:
                settings = settings._replace(bg=torch.zeros_like(background))
            out = GaussianRasterizer(raster_settings=settings)(
                means3D=g.means,
                means2D=torch.zeros_like(g.means, requires_grad=g.means.requires_grad),
                shs=None,
                colors_precomp=colors.contiguous(),
                opacities=g.opacities,
                scales=g.scales,
                rotations=g.rotations,
                cov3D_precomp=None,
            )
            passes.append(out[0] if isinstance(out, (tuple, list)) else out)
        rgbs.append(passes[0])
        depths.append(passes[1][0:1])
        alphas.append(passes[1][1:2])
    return {"rgb": torch.stack(rgbs), "alpha": torch.stack(alphas), "depth": torch.stack(depths)}
