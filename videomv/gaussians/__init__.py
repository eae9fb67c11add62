"""3D Gaussians: the set, .ply I/O, renderers (tiled PyTorch, CUDA, dense reference) and fitting."""

from .fit import fit_gaussians, random_init
from .gaussian_set import LGM_CHANNELS, GaussianSet, quaternion_to_matrix
from .ply import PLY_PROPERTIES, SH_C0, load_ply, save_ply
from .render import BACKENDS, render
from .render_cuda import is_available as cuda_backend_available
from .render_torch import opencv_world_to_camera, project, render_dense, render_tiled

__all__ = [
    "BACKENDS",
    "GaussianSet",
    "LGM_CHANNELS",
    "PLY_PROPERTIES",
    "SH_C0",
    "cuda_backend_available",
    "fit_gaussians",
    "load_ply",
    "opencv_world_to_camera",
    "project",
    "quaternion_to_matrix",
    "random_init",
    "render",
    "render_dense",
    "render_tiled",
    "save_ply",
]
