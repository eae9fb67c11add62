"""Where a toy caption's words are: token positions against the tokenizer's own ids, masks against
the analytic part coverage."""

from __future__ import annotations

import pytest
import torch

from videomv.models.conditioning import bundled_clip_tokenizer
from videomv.toy import world
from videomv.toy.grounding import Grounding, caption_groundings, grounding_targets, word_tokens
from videomv.toy.parts import object_parts, part_coverage


@pytest.fixture(scope="module")
def tokenizer():
    return bundled_clip_tokenizer()


def test_two_tone_groundings_by_hand(tokenizer):
    recipe = ("two_tone", (("cube", "red", "blue"),))
    # <start> a cube that is half red and half blue <end>: cube at 2, red at 6, blue at 9
    ids = tokenizer(world.caption_from_recipe(recipe)).input_ids
    assert [ids[2], ids[6], ids[9]] == [11353, 736, 1746]
    assert caption_groundings(tokenizer, recipe) == [
        Grounding("cube", (2,), (0, 1)), Grounding("red", (6,), (0,)), Grounding("blue", (9,), (1,))]


@pytest.mark.parametrize("index", range(40))
def test_groundings_point_at_their_words(tokenizer, index):
    obj = world.sample_object(7, index)
    ids = tokenizer(obj.caption).input_ids
    groundings = caption_groundings(tokenizer, obj.recipe)
    parts = object_parts(obj)
    words = sum(2 + (p[2] is not None) for p in obj.recipe[1])  # a noun and one or two colours per primitive
    assert len(groundings) == words
    for g in groundings:
        assert [ids[k] for k in g.tokens] == tokenizer(g.word, add_special_tokens=False).input_ids
        if g.word in world.PALETTE:
            assert [parts[k].colour for k in g.parts] == [g.word]
        else:  # a noun names every part of its primitive
            assert {parts[k].primitive for k in g.parts} == {parts[g.parts[0]].primitive}
            assert len(g.parts) == sum(p.primitive == parts[g.parts[0]].primitive for p in parts)


def test_multi_token_words(tokenizer):
    caption = "a black torus next to a blue cone"
    assert len(word_tokens(tokenizer, caption, 8, 13)) == 2  # torus: two BPE tokens
    assert word_tokens(tokenizer, caption, 8, 13) == (3, 4)
    with pytest.raises(ValueError, match="no tokens"):
        word_tokens(tokenizer, caption, 7, 8)  # a space


def test_targets_are_the_part_coverage(tokenizer):
    objects = [world.sample_object(3, i) for i in range(6)]
    objects = [next(o for o in objects if o.recipe[0] == "single"),
                next(o for o in objects if o.recipe[0] != "single")]
    cams = torch.stack([world.orbit_for(o, num_views=4)[0] for o in objects])
    tokens, masks = grounding_targets(tokenizer, objects, cams, (8, 8), 77)
    counts = [len(caption_groundings(tokenizer, o.recipe)) for o in objects]
    assert tokens.shape == (2, max(counts), 77) and masks.shape == (2, max(counts), 4, 8, 8)
    for b, obj in enumerate(objects):
        coverage, _ = part_coverage(obj, cams[b], 8, supersample=4)
        for g, grounding in enumerate(caption_groundings(tokenizer, obj.recipe)):
            assert tokens[b, g].nonzero().flatten().tolist() == list(grounding.tokens)
            torch.testing.assert_close(masks[b, g], coverage[list(grounding.parts)].sum(0).clamp_max(1))
        assert not tokens[b, counts[b]:].any() and not masks[b, counts[b]:].any()  # padded groundings
    with pytest.raises(ValueError, match="cameras"):
        grounding_targets(tokenizer, objects, cams[0], (8, 8), 77)
    with pytest.raises(ValueError, match="longer than the 4-token context"):
        grounding_targets(tokenizer, objects, cams, (8, 8), 4)
    with pytest.raises(ValueError, match="square"):
        grounding_targets(tokenizer, objects, cams, (8, 4), 77)
