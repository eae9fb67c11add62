"""Feed-forward reconstruction: LGM's asymmetric multi-view UNet, 4 posed views -> 3D Gaussians."""

from .frames import canonical_cameras, matrix_to_quaternion, quaternion_multiply, transform_gaussians
from .model import Reconstructor, infer_preset
from .presets import PRESETS, ReconstructorConfig, get_preset
from .unet import MultiViewUNet
from .views import select_input_views

__all__ = [
    "PRESETS",
    "MultiViewUNet",
    "Reconstructor",
    "ReconstructorConfig",
    "canonical_cameras",
    "get_preset",
    "infer_preset",
    "matrix_to_quaternion",
    "quaternion_multiply",
    "select_input_views",
    "transform_gaussians",
]
