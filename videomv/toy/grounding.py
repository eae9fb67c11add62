"""Where each word of a toy caption is drawn: the token positions of every colour word and shape
noun, and the analytic masks of the parts they name, at given cameras and a latent resolution.

These are the targets of the token grounding loss (`videomv.train.grounding`): a colour word names
one part (one half of a two-tone body), a shape noun all of its primitive's parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import world
from .parts import object_parts, part_coverage


@dataclass(frozen=True)
class Grounding:
    """Token positions of one word of a caption and the indices, in `object_parts` order, of the
    parts it names."""

    word: str
    tokens: tuple[int, ...]
    parts: tuple[int, ...]


def word_tokens(tokenizer, text: str, start: int, end: int) -> tuple[int, ...]:
    """Positions, in `tokenizer(text)` with its start token, of the tokens of the word at
    characters [start, end). CLIP's BPE splits at spaces and punctuation, so a prefix of the text
    tokenizes to a prefix of its tokens."""
    before = len(tokenizer(text[:start], add_special_tokens=False).input_ids)
    through = len(tokenizer(text[:end], add_special_tokens=False).input_ids)
    if through <= before:
        raise ValueError(f"{text[start:end]!r} in {text!r} has no tokens of its own")
    return tuple(range(1 + before, 1 + through))


def _find(caption: str, word: str, start: int) -> tuple[int, int]:
    at = caption.find(word, start)
    if at < 0:
        raise ValueError(f"caption {caption!r} does not name {word!r} after character {start}")
    return at, at + len(word)


def caption_groundings(tokenizer, recipe: tuple) -> list[Grounding]:
    """The colour words and shape nouns of a recipe's caption (`world.caption_from_recipe`), in
    caption order, with the parts each names."""
    arrangement, recipe_parts = recipe
    caption = world.caption_from_recipe(recipe)
    groundings = []
    if arrangement == "two_tone":
        shape, c1, c2 = recipe_parts[0]
        s, e = _find(caption, shape, 0)
        groundings.append(Grounding(shape, word_tokens(tokenizer, caption, s, e), (0, 1)))
        for part, colour in enumerate((c1, c2)):
            s, e = _find(caption, f"half {colour}", e)
            groundings.append(Grounding(colour, word_tokens(tokenizer, caption, s + len("half "), e), (part,)))
        return groundings
    cursor = 0
    for part, (shape, colour, _) in enumerate(recipe_parts):  # one part per primitive
        s, e = _find(caption, f"{colour} {shape}", cursor)
        groundings.append(Grounding(colour, word_tokens(tokenizer, caption, s, s + len(colour)), (part,)))
        groundings.append(Grounding(shape, word_tokens(tokenizer, caption, e - len(shape), e), (part,)))
        cursor = e
    return groundings


def grounding_targets(tokenizer, objects: list[world.ToyObject], cameras: torch.Tensor, size: tuple[int, int],
                      context_length: int, supersample: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """For B objects seen at `cameras` (B, F, 4, 4): (tokens (B, G, context_length) 0/1, the tokens
    of each object's G groundings, and masks (B, G, F, h, w), the share of each latent position
    (`size` = (h, w), square pixels) that the words' parts cover). An object with fewer groundings
    than the most in the batch is padded with empty ones (no tokens, zero masks)."""
    if cameras.ndim != 4 or cameras.shape[0] != len(objects) or cameras.shape[-2:] != (4, 4):
        raise ValueError(f"cameras: expected ({len(objects)}, F, 4, 4), got {tuple(cameras.shape)}")
    h, w = size
    if h != w:
        raise ValueError(f"size: the toy world's views are square, got {h}x{w}")
    per_object = [caption_groundings(tokenizer, obj.recipe) for obj in objects]
    count = max(len(g) for g in per_object)
    tokens = torch.zeros(len(objects), count, context_length)
    masks = torch.zeros(len(objects), count, cameras.shape[1], h, w)
    for b, (obj, groundings) in enumerate(zip(objects, per_object)):
        coverage, _ = part_coverage(obj, cameras[b].float().cpu(), h, supersample=supersample)
        parts = object_parts(obj)
        for g, grounding in enumerate(groundings):
            if max(grounding.tokens) >= context_length:
                raise ValueError(f"caption {obj.caption!r} is longer than the {context_length}-token context")
            tokens[b, g, list(grounding.tokens)] = 1
            masks[b, g] = coverage[list(grounding.parts)].sum(0).clamp_max(1)
            for k in grounding.parts:
                if grounding.word in world.PALETTE and parts[k].colour != grounding.word:
                    raise ValueError(f"{obj.caption!r}: part {k} is {parts[k].colour}, not {grounding.word}")
    return tokens, masks
