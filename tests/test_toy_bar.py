"""The toy-model bar: floor and ceiling references behave as defined, on stand-in models."""

from types import SimpleNamespace

import pytest
import torch

from videomv.data import toyworld
from videomv.data.toy_writer import build_dataset
from videomv.eval.geometry_eval import toy_object_for
from videomv.eval.toy_bar import composite, image_bar_psnr, neighbour_difference, text_bar_row

RES = 24
GREY = (0.5, 0.5, 0.5)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    build_dataset(root, 4, RES, seed=3, workers=1, progress=False, split=(0.5, 0.25, 0.25))
    return root


class StandIn:
    """A 'model' returning fixed views: truth, the same-caption twin, or the background."""

    def __init__(self, root, object_id, mode, task="text"):
        self.settings = SimpleNamespace(resolution=RES, fovy=toyworld.FOVY, background=GREY, task=task)
        obj = toy_object_for(root, object_id)
        cams, _, _ = toyworld.orbit_for(obj)
        if mode == "truth":
            self.views = composite(toyworld.render_object(obj, cams, RES), GREY)
        elif mode == "background":
            self.views = torch.full((len(cams), 3, RES, RES), 0.5)
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return SimpleNamespace(images=self.views)


def first_object(root):
    return (root / "train.txt").read_text().split()[0]


def test_generated_truth_beats_the_ceiling_and_background_sits_on_the_floor(toy_root):
    oid = first_object(toy_root)
    truth_model = StandIn(toy_root, oid, "truth")
    row = text_bar_row(truth_model, toy_root, oid)
    assert row.generated == float("inf") and row.gap_closed > 1
    assert row.ceiling > row.floor  # another object with the caption is closer than a blank image
    assert truth_model.calls[0]["prompt"] == toy_object_for(toy_root, oid).caption
    flat = text_bar_row(StandIn(toy_root, oid, "background"), toy_root, oid)
    assert flat.generated == pytest.approx(flat.floor) and flat.gap_closed == pytest.approx(0.0, abs=1e-6)
    assert flat.neighbour_generated == 0.0 < flat.neighbour_truth
    assert image_bar_psnr(StandIn(toy_root, oid, "truth", task="image"), toy_root, oid) == float("inf")


def test_neighbour_difference_closed_form():
    views = torch.zeros(4, 3, 2, 2)
    views[1] = 1.0  # 0 -> 1 -> 0 -> 0 -> (wrap) 0: two jumps of 1 out of four pairs
    assert neighbour_difference(views) == pytest.approx(0.5)


def test_gap_closed_closed_form():
    from videomv.eval.toy_bar import gap_closed

    assert gap_closed(18.0, 16.0, 20.0) == pytest.approx(0.5)
    assert gap_closed(16.0, 16.0, 20.0) == 0.0
    assert gap_closed(15.0, 17.0, 16.0) != gap_closed(15.0, 17.0, 16.0)  # NaN: the twin is no better than blank
