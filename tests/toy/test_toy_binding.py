"""The colour-binding probe (videomv/toy/binding.py) on hand-built encoders whose answer is known."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from videomv.models.conditioning import TextConditioner, bundled_clip_tokenizer
from videomv.toy import world
from videomv.toy.binding import binding_score, part_nouns
from repo_scripts import load_script


@pytest.fixture(scope="module")
def tokenizer():
    return bundled_clip_tokenizer()


def test_part_nouns_point_at_each_shape_noun(tokenizer):
    stacked = ("stacked", (("cube", "red", None), ("cylinder", "blue", None)))
    row = ("row", (("torus", "orange", None), ("cone", "white", None), ("sphere", "orange", None)))
    for recipe, expected in ((stacked, [("cube", "red"), ("cylinder", "blue")]),
                             (row, [("us", "orange"), ("cone", "white"), ("sphere", "orange")])):  # tor|us
        ids = tokenizer(world.caption_from_recipe(recipe)).input_ids
        nouns = part_nouns(tokenizer, recipe)
        assert [(tokenizer.decode([ids[n.position]]), n.colour) for n in nouns] == expected
        assert [n.first for n in nouns] == [True] + [False] * (len(expected) - 1)
    assert part_nouns(tokenizer, ("two_tone", (("cube", "red", "blue"),))) == []  # one noun, two colours


class LastColourEncoder(torch.nn.Module):
    """Each token's output is a fixed random embedding of the last colour word up to it, so a
    noun's output is its own colour's (perfect binding); hidden_states[0] is the token's own embedding."""

    def __init__(self, tokenizer, dim=32):
        super().__init__()
        self.table = torch.nn.Embedding(49408, dim)
        torch.nn.init.normal_(self.table.weight, generator=torch.Generator().manual_seed(0))
        self.colour_ids = {tokenizer(c, add_special_tokens=False).input_ids[0] for c in world.PALETTE}

    @property
    def device(self):
        return self.table.weight.device

    def forward(self, ids, output_hidden_states=False):
        own = self.table(ids)
        carried = torch.zeros_like(own)
        for b in range(ids.shape[0]):
            last = torch.zeros(own.shape[-1])
            for i, token in enumerate(ids[b].tolist()):
                last = own[b, i] if token in self.colour_ids else last
                carried[b, i] = last
        return SimpleNamespace(last_hidden_state=carried, hidden_states=(own,))


def _recipes(count, seed):
    rng = np.random.default_rng(seed)
    drawn = {}
    for _ in range(count):
        r = world.sample_recipe(rng)
        drawn[world.caption_from_recipe(r)] = r
    return list(drawn.values())


def test_probe_reads_colour_where_the_encoder_binds_it(tokenizer):
    recipes = _recipes(1500, seed=3)
    seen, unseen = recipes[:300], recipes[300:]
    conditioner = TextConditioner(tokenizer, LastColourEncoder(tokenizer))
    bound = binding_score(conditioner, seen, unseen, "output")
    assert bound.fit == 1.0 and bound.unseen_first == 1.0 and bound.unseen_later == 1.0
    assert bound.unseen_first_count > 50 and bound.unseen_later_count > 50
    # the noun's own embedding says nothing of its colour: near chance (1 in 8) on unseen captions
    own = binding_score(conditioner, seen, unseen, "embeddings")
    assert own.unseen_first < 0.35 and own.unseen_later < 0.35
    with pytest.raises(ValueError, match="layer"):
        binding_score(conditioner, seen, unseen, "penultimate")


def test_tool_prints_both_layers_for_each_model(tmp_path, capsys):
    import re

    from tiny_videomv import tiny_text_videomv
    from videomv.toy.writer import build_dataset

    root = tmp_path / "toy"
    build_dataset(root, 24, 16, seed=3, workers=1, progress=False, split=(0.5, 0.25, 0.25))
    tiny_text_videomv(with_reconstructor=False).save_pretrained(tmp_path / "t2mv")
    tool = load_script("tools/probe_text_binding.py")
    tool.main(["--data-root", str(root), "--models", str(tmp_path / "t2mv"), "--samples", "300", "--threads", "1"])
    out = capsys.readouterr().out
    fitted = int(re.search(r"fitted on the (\d+) captions of train", out).group(1))
    assert fitted == len({tool.toy_object_for(root, o).caption for o in (root / "train.txt").read_text().split()})
    rows = [line for line in out.splitlines() if line.startswith(f"| {tmp_path / 't2mv'} |")]
    assert [row.split("|")[3].strip() for row in rows] == ["embeddings", "output"]
    with pytest.raises(SystemExit) as e:
        tool.main(["--data-root", str(root), "--models", str(tmp_path)])
    assert e.value.code == 2 and "has no text_encoder/config.json" in capsys.readouterr().err
