"""Per-part colour and layout scores: exact part masks, perfect on ground truth, failing on
swapped colours and wrong arrangements, and hand-built cases."""

from dataclasses import replace

import pytest
import torch

from videomv.toy import world
from videomv.toy.bar import composite
from videomv.toy.parts import (
    BACKGROUND,
    PALETTE_NAMES,
    PALETTE_RGB,
    Part,
    classify,
    colour_in_place,
    colour_present,
    layout_right,
    object_parts,
    part_coverage,
    score_parts,
)

RES = 32
GREY = (0.5, 0.5, 0.5)


def first_of(arrangement, skip=0):
    found = [o for o in (world.sample_object(0, i) for i in range(200)) if o.recipe[0] == arrangement]
    return found[skip]


def views_of(obj):
    cams, _, _ = world.orbit_for(obj)
    return composite(world.render_object(obj, cams, RES), GREY), cams


def score(views, obj, cams):
    return score_parts(views, obj, cams, world.FOVY, GREY)


def test_part_masks_rebuild_the_renderers_image():
    obj = first_of("two_tone")  # a two-tone primitive: its halves are parts of their own
    cams, _, _ = world.orbit_for(obj)
    cams = cams[::6]
    parts = object_parts(obj)
    assert [(p.primitive, p.half) for p in parts] == [(0, 1), (0, -1)]
    cov, shade = part_coverage(obj, cams, RES)
    rgba = world.render_object(obj, cams, RES)
    rebuilt = sum(PALETTE_RGB[PALETTE_NAMES.index(p.colour)][None, :, None, None] * s[:, None] for p, s in zip(parts, shade))
    premultiplied = (rgba[..., :3] * rgba[..., 3:]).permute(0, 3, 1, 2)
    assert torch.allclose(rebuilt, premultiplied, atol=1e-5)
    assert torch.allclose(cov.sum(0), rgba[..., 3], atol=1e-6)
    assert all(float(c.sum()) > 0 for c in cov)


@pytest.mark.parametrize("arrangement", list(world.ARRANGEMENTS))
def test_ground_truth_scores_perfectly(arrangement):
    for skip in range(2):
        obj = first_of(arrangement, skip)
        views, cams = views_of(obj)
        s = score(views, obj, cams)
        assert all(s.in_place) and all(s.present), obj.caption
        assert s.layout is (None if arrangement == "single" else True), obj.caption
        twin = world.sample_like(obj, 10_001, 1)  # another object with the caption: same layout and colours
        t = score(views_of(twin)[0], obj, cams)
        assert all(t.present) and t.layout is s.layout, obj.caption


def test_ground_truth_row_with_the_same_colour_at_both_ends():
    obj = world.sample_object(0, 397)
    assert obj.caption == "a red cube, a black cylinder and a red cone in a row"
    views, cams = views_of(obj)
    s = score(views, obj, cams)
    assert all(s.in_place) and all(s.present) and s.layout is True


def test_swapped_part_colours_fail():
    obj = first_of("stacked")
    top, bottom = obj.primitives
    swapped = replace(obj, primitives=[replace(top, color=bottom.color), replace(bottom, color=top.color)])
    cams = views_of(obj)[1]
    s = score(views_of(swapped)[0], obj, cams)
    assert s.in_place == [False, False]  # each part drawn in the other's colour
    assert s.present == [True, True]  # both colours are there ...
    assert s.layout is False  # ... the wrong way up

    two_tone = first_of("two_tone")
    (prim,) = two_tone.primitives
    flipped = replace(two_tone, primitives=[replace(prim, color=prim.color2, color2=prim.color)])
    cams = views_of(two_tone)[1]
    s = score(views_of(flipped)[0], two_tone, cams)
    assert s.in_place == [False, False] and s.layout is True  # still "half this and half that"

    # white: its shades include the grey background, which must not count as white
    single = next(o for o in (world.sample_object(0, i) for i in range(200))
                  if o.recipe[0] == "single" and o.primitives[0].color == "white")
    other = "red"
    cams = views_of(single)[1]
    s = score(views_of(replace(single, primitives=[replace(single.primitives[0], color=other)]))[0], single, cams)
    assert s.in_place == [False] and s.present == [False]


def test_wrong_arrangements_fail():
    stacked = first_of("stacked")
    views, cams = views_of(stacked)
    assert score(views.flip(-2), stacked, cams).layout is False  # upside down: bottom colour on top

    beside = first_of("side_by_side")
    (a, ca, _), (_, cb, _) = beside.recipe[1]
    as_stack = world.realize(("stacked", ((a, ca, None), ("cube", cb, None))), world._rng(5, 0))
    views, cams = views_of(beside)
    assert score(views_of(as_stack)[0], beside, cams).layout is False

    two_tone = first_of("two_tone")
    shape, c1, _ = two_tone.recipe[1][0]
    one_colour = world.realize(("single", ((shape, c1, None),)), world._rng(5, 1))
    views, cams = views_of(two_tone)
    assert score(views_of(one_colour)[0], two_tone, cams).layout is False  # the second half is never drawn

    row = first_of("row")
    views, cams = views_of(row)
    first, middle, last = row.primitives
    reordered = replace(row, primitives=[replace(first, color=middle.color), replace(middle, color=first.color), last])
    assert score(views_of(reordered)[0], row, cams).layout is False


# Hand-built class maps: 4 views of 8 x 8 pixels.
RED, BLUE, GREEN = (PALETTE_NAMES.index(c) for c in ("red", "blue", "green"))


def class_map(rows=(), cols=()):
    """Bands of colours: rows / cols are (start, stop, class) triples."""
    m = torch.full((4, 8, 8), BACKGROUND)
    for start, stop, c in rows:
        m[:, start:stop] = c
    for start, stop, c in cols:
        m[:, :, start:stop] = c
    return m


def parts(*colours):
    return [Part(i, 0, c) for i, c in enumerate(colours)]


def test_layout_on_hand_built_maps():
    red_over_blue = class_map(rows=[(0, 3, RED), (4, 8, BLUE)])
    assert layout_right(red_over_blue, "stacked", parts("red", "blue")) is True
    assert layout_right(red_over_blue, "stacked", parts("blue", "red")) is False
    assert layout_right(red_over_blue, "side_by_side", parts("red", "blue")) is False
    red_left_blue_right = class_map(cols=[(0, 3, RED), (5, 8, BLUE)])
    assert layout_right(red_left_blue_right, "side_by_side", parts("red", "blue")) is True
    assert layout_right(red_left_blue_right, "stacked", parts("red", "blue")) is False
    assert layout_right(red_left_blue_right, "two_tone", parts("red", "blue")) is False  # a gap between the halves
    halves = class_map(cols=[(1, 4, RED), (4, 7, BLUE)])
    assert layout_right(halves, "two_tone", parts("red", "blue")) is True
    assert layout_right(class_map(cols=[(1, 2, RED), (2, 8, BLUE)]), "two_tone", parts("red", "blue")) is False  # 1:6
    row = class_map(cols=[(0, 2, RED), (3, 5, GREEN), (6, 8, BLUE)])
    assert layout_right(row, "row", parts("red", "green", "blue")) is True
    assert layout_right(row, "row", parts("green", "red", "blue")) is False  # red is the middle one
    same_ends = class_map(cols=[(0, 2, RED), (3, 5, GREEN), (6, 8, RED)])
    assert layout_right(same_ends, "row", parts("red", "green", "red")) is True
    assert layout_right(class_map(cols=[(0, 4, RED), (5, 8, GREEN)]), "row", parts("red", "green", "red")) is False
    only_red = class_map(rows=[(0, 8, RED)])
    assert layout_right(only_red, "stacked", parts("red", "blue")) is False  # blue is never drawn
    assert layout_right(only_red, "single", parts("red")) is None
    with pytest.raises(ValueError, match="arrangement"):
        layout_right(only_red, "diagonal", parts("red", "blue"))


def test_classify_colour_present_and_in_place_by_hand():
    shaded = (PALETTE_RGB * 0.6).T[None, :, :, None]  # one view, 8 x 1 pixels: each palette colour, shaded
    views = torch.cat([shaded, torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.53)], 2)  # and background
    assert classify(views, GREY).flatten().tolist() == list(range(len(PALETTE_NAMES))) + [BACKGROUND] * 2
    assert classify(views, GREY, background_tolerance=0.01)[0, -1, 0] == PALETTE_NAMES.index("white")

    classes = torch.tensor([[[RED, RED, RED, BLUE, BACKGROUND]]])
    cov = torch.tensor([[[[1.0, 1.0, 1.0, 0.0, 0.0]]], [[[0.0, 0.0, 0.0, 1.0, 1.0]]]])  # truth: 3 red, 2 blue
    assert colour_present(classes, parts("red", "blue"), cov) == [True, True]  # 1 >= 0.5 * 2
    assert colour_present(classes, parts("red", "blue"), cov, share=0.6) == [True, False]

    # One part covering the left 2 of 4 pixels, shaded 0.5; the right pixels do not count.
    cov = torch.tensor([[[[1.0, 1.0, 0.0, 0.0]]]])
    shade = cov * 0.5
    views = torch.zeros(1, 3, 1, 4)
    views[..., :2] = PALETTE_RGB[RED].view(3, 1, 1) * 0.5
    views[..., 2:] = PALETTE_RGB[BLUE].view(3, 1, 1)
    assert colour_in_place(views, parts("red"), cov, shade) == [True]
    assert colour_in_place(views, parts("orange"), cov, shade) == [False]
    with pytest.raises(ValueError, match="coverage"):
        colour_in_place(views, parts("red", "blue"), cov, shade)
    with pytest.raises(ValueError, match="views"):
        colour_in_place(views[:, :2], parts("red"), cov, shade)
