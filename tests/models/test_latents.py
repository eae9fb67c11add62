"""smooth_noise: std 1, independent noise at cell 1, correlated over its cell otherwise."""

import pytest
import torch

from videomv.models.latents import smooth_noise


def test_cell_one_is_plain_gaussian_noise():
    torch.testing.assert_close(smooth_noise((2, 4, 8, 8), 1, torch.Generator().manual_seed(3)),
                               torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3)))


def neighbour_correlation(x: torch.Tensor) -> float:
    a, b = x[..., :-1].flatten(), x[..., 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_smooth_noise_has_std_one_and_varies_over_its_cell():
    smooth = smooth_noise((8, 4, 3, 16, 16), 4, torch.Generator().manual_seed(0))
    plain = smooth_noise((8, 4, 3, 16, 16), 1, torch.Generator().manual_seed(0))
    assert smooth.shape == (8, 4, 3, 16, 16)
    assert float(smooth.std()) == pytest.approx(1.0, abs=1e-5)
    assert neighbour_correlation(smooth) > 0.8
    assert abs(neighbour_correlation(plain)) < 0.05
    # a size the cell does not divide: drawn on the next coarser grid up, then cut to size
    assert smooth_noise((1, 1, 10, 7), 4).shape == (1, 1, 10, 7)


def test_smooth_noise_refuses_a_cell_below_one():
    with pytest.raises(ValueError, match="cell"):
        smooth_noise((1, 4, 8, 8), 0)
