"""The official VideoMV release's checkpoints -> this project's model folders."""

from .checkpoint import ReleaseCheckpoint, load_release_checkpoint
from .frames import camera_vector_permutation, fold_camera_frame, release_c2w, release_camera_vectors
from .keymap import Conversion, check_against, convert_unet_state_dict, module_table, to_release_state_dict

__all__ = [
    "Conversion",
    "ReleaseCheckpoint",
    "camera_vector_permutation",
    "check_against",
    "convert_unet_state_dict",
    "fold_camera_frame",
    "load_release_checkpoint",
    "module_table",
    "release_c2w",
    "release_camera_vectors",
    "to_release_state_dict",
]
