"""Does a text encoder bind each colour to its part? A linear probe reads the encoder's state at each
part's shape noun ("cube" in "a red cube on top of a blue cylinder") and predicts that part's colour.
Fitted on the captions a model trained on and scored on captions it never saw, it separates an
encoder that carries "red" into "cube" from one that only knows which words occur: on the token
embeddings alone (no layer has run) the noun says nothing of its colour.

Parts are counted by where their noun stands: the first-mentioned part's colour is the only colour
before its noun, a later part's noun follows two or more colours and must pick its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import world
from .grounding import caption_groundings

COLOURS = tuple(world.PALETTE)


@dataclass(frozen=True)
class PartNoun:
    """One part of a caption: the token index of its shape noun's last token, its colour and
    whether it is the first part the caption names."""

    position: int
    colour: str
    first: bool


def part_nouns(tokenizer, recipe: tuple) -> list[PartNoun]:
    """The shape nouns of a toy recipe's caption (`world.caption_from_recipe`), located in the
    tokenizer's ids (`videomv.toy.grounding.caption_groundings`). Two-tone objects have one noun and
    two colours, so they have no entry."""
    if recipe[0] == "two_tone":
        return []
    nouns = [g for g in caption_groundings(tokenizer, recipe) if g.word not in world.PALETTE]
    return [PartNoun(position=noun.tokens[-1], colour=recipe[1][part][1], first=part == 0)
            for noun in nouns for part in noun.parts]


def noun_states(conditioner, recipes: list[tuple], layer: str = "output", batch_size: int = 256):
    """(N, D) encoder states at every part noun of `recipes`, with (N,) colour indices and (N,)
    first-part flags. `layer`: "output" (what the UNet reads: the last hidden state) or
    "embeddings" (token + position embeddings, before any layer)."""
    if layer not in ("output", "embeddings"):
        raise ValueError(f"layer: expected 'output' or 'embeddings', got {layer!r}")
    tokenizer, encoder = conditioner.tokenizer, conditioner.text_encoder
    states, colours, first = [], [], []
    for i in range(0, len(recipes), batch_size):
        chunk = recipes[i: i + batch_size]
        ids = conditioner.tokenize([world.caption_from_recipe(r) for r in chunk]).to(conditioner.device)
        with torch.no_grad():
            out = encoder(ids, output_hidden_states=True)
        hidden = out.last_hidden_state if layer == "output" else out.hidden_states[0]
        for row, recipe in enumerate(chunk):
            for noun in part_nouns(tokenizer, recipe):
                states.append(hidden[row, noun.position].float().cpu())
                colours.append(COLOURS.index(noun.colour))
                first.append(noun.first)
    if not states:
        raise ValueError("no part nouns in these recipes (two-tone objects have none)")
    return torch.stack(states), torch.tensor(colours), torch.tensor(first)


def fit_probe(x: torch.Tensor, y: torch.Tensor, num_classes: int = len(COLOURS), weight_decay: float = 1e-3,
              steps: int = 200):
    """A multinomial logistic regression on standardised features (L-BFGS, L2 penalty
    `weight_decay`); returns predict(x) -> labels."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)  # a convex problem: starting from zero makes the fit reproducible
    torch.nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(z), y) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return lambda new: linear((new - mean) / std).argmax(-1).detach()


@dataclass
class BindingScore:
    """Probe accuracy: on the fitting captions, and on unseen captions for first and later parts."""

    fit: float
    unseen_first: float
    unseen_later: float
    unseen_first_count: int
    unseen_later_count: int


def binding_score(conditioner, seen: list[tuple], unseen: list[tuple], layer: str = "output") -> BindingScore:
    """Fit the colour probe on the part nouns of the `seen` recipes and score it on the `unseen` ones."""
    x, y, _ = noun_states(conditioner, seen, layer)
    predict = fit_probe(x, y)
    ux, uy, ufirst = noun_states(conditioner, unseen, layer)
    right = predict(ux) == uy
    later = ~ufirst
    share = lambda mask: float(right[mask].float().mean()) if mask.any() else float("nan")  # noqa: E731
    return BindingScore(fit=float((predict(x) == y).float().mean()), unseen_first=share(ufirst),
                        unseen_later=share(later), unseen_first_count=int(ufirst.sum()),
                        unseen_later_count=int(later.sum()))
