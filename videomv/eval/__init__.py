"""Evaluation: image metrics, perceptual metrics (local weights only), flow-warping RMSE, and
geometry (mesh extraction, Chamfer distance, volume IoU)."""

from .availability import MetricUnavailable, metric_or_note, unavailable_note
from .fields import gaussian_density, gaussian_density_grid, grid_points, visual_hull
from .flow import FarnebackFlow, FlowWarpResult, RaftFlow, backward_warp, default_flow, flow_warping_rmse
from .mesh import (
    Mesh,
    chamfer_distance,
    check_mesh_file,
    extract_mesh,
    load_mesh,
    load_obj,
    load_ply,
    mesh_metrics,
    normalize_mesh,
    sample_surface,
    save_mesh,
    save_obj,
    save_ply,
    volume_iou,
    voxelize,
)
from .metrics import psnr, ssim
from .references import MeshReferences
from .perceptual import LPIPS, ClipScorer, clip_score, find_lpips_weights, load_clip, load_lpips, lpips
