"""Where a UNet's cross-attention looks in the prompt.

`record_cross_attention(unet)` puts a recording processor into every cross-attention layer for the
length of a `with` block. Each layer computes what it computed before, softmax(QK^T / sqrt(d)) V
written out so that the weights can be read, and records per context row its weights averaged
over heads and query locations, and the mean entropy of one location's weights.
`attention_shares` groups the weights by the tokens' roles: the start token, the prompt's words,
the end token and the padding after it.

A layer whose locations spread their attention evenly over all 77 tokens (entropy near log 77)
hands every location the mean of the prompt, which names every part's colour; only a layer that
attends selectively can put each part's colour where that part is drawn.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from diffusers.models.attention_processor import Attention

from videomv.models.camera_unet import attention_with_weights, cross_attention_layers, cross_attention_processors
from videomv.models.conditioning import padding_mask

TOKEN_ROLES = ("start", "words", "end", "padding")


def token_roles(ids: torch.Tensor, end_id: int) -> torch.Tensor:
    """(B, T) token ids -> (B, T) indices into `TOKEN_ROLES`: position 0 is the start token, the
    first `end_id` after it the end token, the positions between them the words and those after it
    padding (`videomv.models.conditioning.padding_mask`)."""
    padding = padding_mask(ids, end_id)
    end = padding.float().argmax(1, keepdim=True) - 1  # padding starts right after the end token
    end = torch.where(padding.any(1, keepdim=True), end, torch.full_like(end, ids.shape[1] - 1))
    pos = torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids)
    roles = torch.full_like(ids, TOKEN_ROLES.index("words"))
    roles = torch.where(pos == 0, TOKEN_ROLES.index("start"), roles)
    roles = torch.where(pos == end, TOKEN_ROLES.index("end"), roles)
    return torch.where(padding, TOKEN_ROLES.index("padding"), roles)


class _RecordingProcessor:
    """Plain (unfused) attention that appends (weights (rows, K), entropy (rows,)) to `records`."""

    def __init__(self, records: list):
        self.records = records

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        out, weights = attention_with_weights(attn, hidden_states, encoder_hidden_states, attention_mask)
        rows = out.shape[0]
        w = weights.detach().float().view(rows, attn.heads, *weights.shape[1:])
        entropy = -(w * w.clamp_min(1e-12).log()).sum(-1)
        self.records.append((w.mean((1, 2)).cpu(), entropy.mean((1, 2)).cpu()))
        return out


@contextmanager
def record_cross_attention(unet: torch.nn.Module) -> Iterator[dict[str, list]]:
    """Within the block, every cross-attention layer of `unet` records each call: yields {layer
    name: [(weights (rows, K), entropy (rows,)), ...]}. The layers' processors are restored on exit."""
    records: dict[str, list] = {name: [] for name in cross_attention_layers(unet)}
    with cross_attention_processors(unet, lambda name: _RecordingProcessor(records[name]), "record_cross_attention"):
        yield records


@dataclass
class AttentionShares:
    """One layer's (or all layers' mean) attention: the share on each of `TOKEN_ROLES`, and the mean
    entropy of a location's weights against that of uniform weights over every token."""

    layer: str
    shares: dict[str, float]
    entropy: float
    uniform: float


def attention_shares(records: dict[str, list], roles: list[torch.Tensor]) -> list[AttentionShares]:
    """Per layer, then "all layers" (their mean): `records` from `record_cross_attention` over some
    calls, `roles` the (B, K) `token_roles` of each call's prompts in the same order. A call's
    context rows may repeat each prompt (the video UNets run frames as batch)."""
    if not records:
        raise ValueError("records: no cross-attention layer was recorded")
    result = []
    for name, calls in records.items():
        if len(calls) != len(roles):
            raise ValueError(f"{name}: recorded {len(calls)} calls, but roles were given for {len(roles)}")
        totals, entropy, rows = torch.zeros(len(TOKEN_ROLES)), 0.0, 0
        for (weights, ent), call_roles in zip(calls, roles):
            if weights.shape[0] % call_roles.shape[0] or weights.shape[1] != call_roles.shape[1]:
                raise ValueError(f"{name}: weights {tuple(weights.shape)} do not fit roles {tuple(call_roles.shape)}")
            r = call_roles.repeat_interleave(weights.shape[0] // call_roles.shape[0], dim=0)
            totals += torch.zeros(weights.shape[0], len(TOKEN_ROLES)).scatter_add_(1, r.cpu(), weights).sum(0)
            entropy += float(ent.sum())
            rows += weights.shape[0]
        keys = roles[0].shape[1]
        result.append(AttentionShares(name, dict(zip(TOKEN_ROLES, (totals / rows).tolist())), entropy / rows,
                                      math.log(keys)))
    mean = AttentionShares("all layers", {k: sum(r.shares[k] for r in result) / len(result) for k in TOKEN_ROLES},
                           sum(r.entropy for r in result) / len(result), result[0].uniform)
    return result + [mean]
