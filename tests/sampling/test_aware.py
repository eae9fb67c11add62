"""The 3D-aware step: schedule, view selection, and its effect inside the DDIM loop."""

import pytest
import torch

from videomv.gaussians import GaussianSet, render
from videomv.geometry import orbit_camera, orbit_cameras
from videomv.sampling import ddim_sample, text_scheduler
from videomv.sampling.aware import (
    ReconstructionHook,
    aware_step_indices,
    find_orthogonal_views,
    orthogonal_cameras_for,
)
from videomv.sampling.ddim import eps_from_z0

H = W = 24
FOVY = 49.1
GREY = (0.5, 0.5, 0.5)


def test_schedule_matches_release_and_scales():
    assert aware_step_indices(50) == [20, 30, 40]  # t = 581, 381, 181 in the release
    assert aware_step_indices(25) == [10, 15, 20]
    assert aware_step_indices(10, start_fraction=0.0, every_fraction=0.5) == [0, 5]
    with pytest.raises(ValueError, match="num_inference_steps"):
        aware_step_indices(0)
    with pytest.raises(ValueError, match="start_fraction"):
        aware_step_indices(50, start_fraction=1.0)


def test_orthogonal_views_found_on_orbits_and_added_otherwise():
    assert find_orthogonal_views(orbit_cameras(24, 15, 2.0)) == [0, 6, 12, 18]
    assert find_orthogonal_views(orbit_cameras(8, 5, 1.7, start_azimuth=30)) == [0, 2, 4, 6]
    assert find_orthogonal_views(orbit_cameras(6, 15, 2.0)) is None  # 60-degree steps miss 90 and 270
    cams = orbit_cameras(6, 20, 2.0, start_azimuth=10)
    extra = orthogonal_cameras_for(cams)
    assert torch.allclose(extra[0], cams[0], atol=1e-5)
    assert torch.allclose(extra[2], orbit_camera(20.0, 190.0, 2.0), atol=1e-5)
    assert find_orthogonal_views(torch.cat([cams, extra])) is not None


def scene(seed=0, n=300) -> GaussianSet:
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(n, 3, generator=g) - 0.5) * 0.8
    return GaussianSet(
        means=means, scales=torch.full((n, 3), 0.06), rotations=torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        opacities=torch.full((n, 1), 0.8), colors=torch.rand(n, 3, generator=g),
    )


class PerfectReconstructor:
    """Returns the true scene whatever it is shown: a reconstructor with no error."""

    def __init__(self, gaussians):
        self.gaussians, self.seen = gaussians, []

    def reconstruct(self, images, c2w, fovy=None):
        self.seen.append((images.shape, c2w.shape))
        return [self.gaussians] * images.shape[0]


def identity_codec(x):
    """'VAE' whose latents are the images themselves, (B, F, 3, H, W) <-> (B, 3, F, H, W)."""
    return x.permute(0, 2, 1, 3, 4)


def consistent_views(cams, gaussians):
    return render(gaussians, cams, FOVY, H, W, GREY)["rgb"]  # (F, 3, H, W)


def make_hook(gaussians, cams, steps, guidance=1.0, branches="both"):
    return ReconstructionHook(PerfectReconstructor(gaussians), identity_codec, identity_codec, cams[None], FOVY, GREY,
                              steps, input_views=[0, 6, 12, 18], guidance_scale=guidance, branches=branches)


def test_perfect_reconstruction_leaves_a_consistent_sample_unchanged():
    cams, g = orbit_cameras(24, 15, 2.0), scene()
    z0 = identity_codec(consistent_views(cams, g)[None])
    hook = make_hook(g, cams, steps=[3])
    assert hook(2, 500, z0, None, z0) is None  # not a scheduled step
    new, _ = hook(3, 500, z0, None, torch.randn_like(z0))
    assert torch.allclose(new, z0, atol=1e-6)
    assert hook.reconstructor.seen == [((1, 4, 3, H, W), (1, 4, 4, 4))]
    assert hook.calls == [3]


def test_reconstruction_replaces_an_inconsistent_view():
    cams, g = orbit_cameras(24, 15, 2.0), scene()
    truth = identity_codec(consistent_views(cams, g)[None])
    corrupted = truth.clone()
    corrupted[:, :, 5] = torch.rand_like(corrupted[:, :, 5])  # view 5 disagrees with the others
    new, _ = make_hook(g, cams, steps=[0])(0, 900, corrupted, None, corrupted)
    assert torch.allclose(new, truth, atol=1e-6)
    assert (corrupted - truth).abs().max() > 0.1


@pytest.mark.parametrize("guidance,branches", [(1.0, "both"), (4.0, "both"), (4.0, "guided")])
def test_loop_with_perfect_reconstruction_matches_plain_loop(guidance, branches):
    """A denoiser whose z0 is always the consistent data: swapping in renders of the true scene
    must not change the trajectory (checks the eps recomputation and the guidance of the branches)."""
    cams, g = orbit_cameras(24, 15, 2.0), scene(1)
    data = identity_codec(consistent_views(cams, g)[None])
    scheduler = text_scheduler()

    def denoiser(x, t):  # eps that points exactly at `data`, for both guidance branches
        return eps_from_z0(scheduler, data.expand_as(x), x, t)

    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(0))
    plain = ddim_sample(denoiser, noise.clone(), scheduler, 10, guidance, progress=False)
    hook = make_hook(g, cams, aware_step_indices(10), guidance, branches)
    aware = ddim_sample(denoiser, noise.clone(), scheduler, 10, guidance, z0_hook=hook, progress=False)
    assert hook.calls == [4, 6, 8]
    assert torch.allclose(aware, plain, atol=1e-4)
    # the last DDIM step ends at alpha_bar[0] = 1 - 0.00085 (set_alpha_to_one=False): 3 % noise left
    assert (aware - data).abs().mean() < 0.05 < (noise - data).abs().mean()


def test_hook_rejects_bad_configuration():
    cams, g = orbit_cameras(24, 15, 2.0), scene()
    with pytest.raises(ValueError, match="branches"):
        make_hook(g, cams, [1], branches="neither")
    with pytest.raises(ValueError, match="input_views"):
        ReconstructionHook(None, identity_codec, identity_codec, cams[None], FOVY, GREY, [1], input_views=[0, 6, 12, 30])
