"""Grounding losses: each word that names a part of the object puts its cross-attention on the
latent positions where that part is drawn (the token and pixel losses of TokenCompose, Wang et al.
2024).

For a word w with mask m over a layer's query positions x and attention A(x, t) averaged over
heads, a(x) = sum of A(x, t) over w's tokens; the token loss is (1 - sum_x m(x) a(x) / sum_x a(x))^2,
averaged over the words, the views where the word's parts show and the cross-attention layers.
It asks where a word's attention goes, not how much of a location's attention the word gets, so it
can be satisfied while most attention stays on the padding; it teaches the query and key
projections to tell the parts apart, which the diffusion loss alone leaves to chance. The pixel
term (`grounding_losses`) asks how much: each position's share of attention on the word, against
its part's coverage of the position.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from videomv.models.camera_unet import attention_with_weights, cross_attention_processors


class _KeepingProcessor:
    """Plain attention that appends its weights, averaged over heads, (rows, Q, K), with their
    autograd history, to `maps`."""

    def __init__(self, maps: list):
        self.maps = maps

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        out, weights = attention_with_weights(attn, hidden_states, encoder_hidden_states, attention_mask)
        self.maps.append(weights.view(out.shape[0], attn.heads, *weights.shape[1:]).float().mean(1))
        return out


@contextmanager
def keep_cross_attention(unet: torch.nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, every call of a cross-attention layer of `unet` appends its weights
    (rows, queries, keys), differentiable, to the yielded list. Processors are restored on exit."""
    maps: list[torch.Tensor] = []
    keeping = _KeepingProcessor(maps)
    with cross_attention_processors(unet, lambda name: keeping, "keep_cross_attention"):
        yield maps


def _pooled(masks: torch.Tensor, queries: int) -> torch.Tensor:
    """(B, G, F, h, w) masks averaged onto the layer's grid of `queries` positions (the UNet halves
    the latent grid, rounding up, at each level): (B, G, F, queries)."""
    h, w = masks.shape[-2:]
    sh, sw = h, w
    while sh * sw > queries:
        sh, sw = -(-sh // 2), -(-sw // 2)
    if sh * sw != queries:
        raise ValueError(f"an attention layer has {queries} query positions, which is no level of a {h}x{w} grid")
    b, g, f = masks.shape[:3]
    pooled = F.adaptive_avg_pool2d(masks.flatten(0, 2), (sh, sw))
    return pooled.view(b, g, f, sh * sw)


def _word_maps(maps: list[torch.Tensor], tokens: torch.Tensor, masks: torch.Tensor):
    """Per cross-attention map (each (B * F, Q, K), rows frame-minor as the video UNets fold frames
    into the batch): (word, mask), each (B, G, F, Q), the attention on each word's tokens and its
    mask on the layer's grid."""
    if not maps:
        raise ValueError("grounding: no cross-attention maps were kept")
    b, g, f = masks.shape[:3]
    if tokens.shape[:2] != (b, g):
        raise ValueError(f"tokens {tuple(tokens.shape)} do not fit masks {tuple(masks.shape)}")
    for weights in maps:
        rows, queries, keys = weights.shape
        if rows != b * f or keys != tokens.shape[-1]:
            raise ValueError(f"attention weights {tuple(weights.shape)} do not fit {b} samples x {f} views and "
                             f"{tokens.shape[-1]} tokens")
        word = torch.einsum("bfqk,bgk->bgfq", weights.view(b, f, queries, keys), tokens.to(weights))
        yield word, _pooled(masks.to(weights), queries)


def _counts(tokens: torch.Tensor, mask: torch.Tensor, min_cover: float) -> torch.Tensor:
    """(B, G, F): a word counts where its mask covers at least `min_cover` of a query position and
    it has tokens."""
    return (mask.amax(-1) >= min_cover) & (tokens.sum(-1) > 0)[..., None].to(mask.device)


def _share_inside(word: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, G, F): the share of each word's attention (B, G, F, Q) that falls inside its mask."""
    return (word * mask).sum(-1) / word.sum(-1).clamp_min(1e-12)


def word_attention(maps: list[torch.Tensor], tokens: torch.Tensor, masks: torch.Tensor,
                   min_cover: float = 0.25) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per cross-attention map, for words with `tokens` (B, G, K) 0/1 and `masks` (B, G, F, h, w) in
    [0, 1]: (inside, uniform, counts), each (B, G, F): the share of each word's attention inside its
    mask, the share uniform attention would put there (the mask's mean on the layer's grid), and
    whether the word counts there (`_counts`)."""
    return [(_share_inside(word, mask), mask.mean(-1), _counts(tokens, mask, min_cover))
            for word, mask in _word_maps(maps, tokens, masks)]


def grounding_losses(maps: list[torch.Tensor], tokens: torch.Tensor, masks: torch.Tensor,
                     min_cover: float = 0.25) -> dict[str, torch.Tensor]:
    """{"token": the token loss (module docstring), "pixel": the pixel term (TokenCompose's
    L_pixel)}, each averaged over the words that count (`word_attention`), from one pass over the
    maps. The pixel term is, per position, the binary cross-entropy of the share of the position's
    attention on the word against the share of the position its part covers, averaged over
    positions: a word takes the attention of its part's positions (from the padding too) and
    leaves the rest's. Both are a zero that keeps the graph when no word counts (e.g. every prompt
    dropped)."""
    pairs = list(_word_maps(maps, tokens, masks))
    token, pixel, count = 0 * maps[0].sum(), 0 * maps[0].sum(), 0
    for word, mask in pairs:
        counts = _counts(tokens, mask, min_cover)
        token = token + ((1 - _share_inside(word, mask)).square() * counts).sum()
        a = word.float().clamp(1e-6, 1 - 1e-6)  # written out: F.binary_cross_entropy refuses autocast
        pixel = pixel + (-(mask * a.log() + (1 - mask) * (1 - a).log()).mean(-1) * counts).sum()
        count += int(counts.sum())
    return {"token": token / max(count, 1), "pixel": pixel / max(count, 1)}
