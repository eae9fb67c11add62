"""Palette latents and nearest colours: by hand, and through a stand-in VAE that keeps the pixels."""

from types import SimpleNamespace

import pytest
import torch

from videomv.toy import world
from videomv.toy.latent_space import nearest_colours, palette_latents


def test_nearest_colours_by_hand():
    latents = {"a": torch.tensor([0.0, 0.0]), "b": torch.tensor([3.0, 4.0]), "c": torch.tensor([0.0, 1.0])}
    nearest = nearest_colours(latents)
    assert nearest["a"] == ("c", pytest.approx(1.0))
    assert nearest["b"] == ("c", pytest.approx(18 ** 0.5))  # (3, 3) away, nearer than a at 5
    assert nearest["c"] == ("a", pytest.approx(1.0))
    with pytest.raises(ValueError, match="at least two"):
        nearest_colours({"a": torch.zeros(2)})


def test_palette_latents_are_each_colour_through_the_encoder():
    # The stand-in's latents are the pixels themselves, so each centre latent is the colour's rgb.
    model = SimpleNamespace(settings=SimpleNamespace(resolution=16, background=(0.5, 0.5, 0.5)),
                            pipeline=SimpleNamespace(unet=SimpleNamespace(dtype=torch.float32)),
                            encode=lambda images: images.permute(0, 2, 1, 3, 4))
    latents = palette_latents(model)
    assert list(latents) == list(world.PALETTE)
    for name, rgb in world.PALETTE.items():
        torch.testing.assert_close(latents[name], torch.tensor(rgb))
    assert nearest_colours(latents)["yellow"][0] == "orange"  # (0.05, 0.35, 0.1) apart in rgb
