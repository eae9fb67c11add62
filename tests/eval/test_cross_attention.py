"""The cross-attention recorder against the UNet's own processors and attention written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from videomv.eval.cross_attention import (TOKEN_ROLES, attention_shares, cross_attention_layers,
                                          record_cross_attention, token_roles)
from videomv.models import T2MVUNet

from tiny_videomv import TINY_UNET

FRAMES, TOKENS = 3, 6


def _unet_inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, FRAMES, 8, 8, generator=g), torch.tensor([500]),
            torch.randn(2, TOKENS, TINY_UNET["cross_attention_dim"], generator=g))


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return T2MVUNet(**TINY_UNET).eval()


def test_recording_keeps_the_output_and_restores_the_processors(unet):
    sample, t, context = _unet_inputs()
    with torch.no_grad():
        plain = unet(sample, t, context).sample
        processors = {n: type(m.processor) for n, m in cross_attention_layers(unet).items()}
        with record_cross_attention(unet) as records:
            recorded = unet(sample, t, context).sample
        torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-5)
        assert {n: type(m.processor) for n, m in cross_attention_layers(unet).items()} == processors
        assert set(records) == set(processors) and all(len(calls) == 1 for calls in records.values())
        weights, entropy = records[next(iter(records))][0]
        assert weights.shape == (2 * FRAMES, TOKENS) and entropy.shape == (2 * FRAMES,)  # frames as batch
        with pytest.raises(RuntimeError, match="boom"), record_cross_attention(unet):
            raise RuntimeError("boom")
        assert {n: type(m.processor) for n, m in cross_attention_layers(unet).items()} == processors


def test_recorded_weights_are_softmax_of_the_hand_written_logits(unet):
    name, layer = next(iter(cross_attention_layers(unet).items()))
    seen = {}
    handle = layer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(x=args[0], context=kwargs["encoder_hidden_states"]), with_kwargs=True)
    sample, t, context = _unet_inputs()
    try:
        with torch.no_grad(), record_cross_attention(unet) as records:
            unet(sample, t, context)
    finally:
        handle.remove()
    x, ctx = seen["x"], seen["context"]
    with torch.no_grad():
        q = layer.to_q(x).view(x.shape[0], x.shape[1], layer.heads, -1).transpose(1, 2)
        k = layer.to_k(ctx).view(ctx.shape[0], ctx.shape[1], layer.heads, -1).transpose(1, 2)
        p = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)  # (rows, heads, Q, K)
    weights, entropy = records[name][0]
    torch.testing.assert_close(weights, p.mean((1, 2)), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(entropy, -(p * p.log()).sum(-1).mean((1, 2)), rtol=1e-5, atol=1e-6)


def test_token_roles_by_hand():
    end, pad = 9, 0
    ids = torch.tensor([[7, 1, 2, end, pad, pad], [7, end, end, end, end, end]])
    start, words, stop, padding = range(4)
    assert token_roles(ids, end).tolist() == [[start, words, words, stop, padding, padding],
                                              [start, stop, padding, padding, padding, padding]]
    with pytest.raises(ValueError, match="end token"):
        token_roles(torch.tensor([[7, 1, 2]]), end)
    with pytest.raises(ValueError, match="batch, tokens"):
        token_roles(torch.tensor([7, 1, end]), end)


def test_attention_shares_closed_form():
    keys = 5
    roles = token_roles(torch.tensor([[7, 1, 2, 9, 0]]), 9)  # start, words x2, end, padding
    uniform = (torch.full((2, keys), 1 / keys), torch.full((2,), math.log(keys)))  # one prompt, two frames
    on_words = (torch.tensor([[0, 0.5, 0.5, 0, 0]] * 2), torch.full((2,), math.log(2)))
    rows = attention_shares({"a": [uniform], "b": [on_words]}, [roles])
    assert [r.layer for r in rows] == ["a", "b", "all layers"]
    assert rows[0].shares == pytest.approx({"start": 0.2, "words": 0.4, "end": 0.2, "padding": 0.2})
    assert rows[0].entropy == pytest.approx(rows[0].uniform) and rows[0].uniform == pytest.approx(math.log(keys))
    assert rows[1].shares == pytest.approx({"start": 0, "words": 1, "end": 0, "padding": 0})
    assert rows[2].shares == pytest.approx({"start": 0.1, "words": 0.7, "end": 0.1, "padding": 0.1})
    assert rows[2].entropy == pytest.approx((math.log(keys) + math.log(2)) / 2)
    assert set(rows[0].shares) == set(TOKEN_ROLES)
    with pytest.raises(ValueError, match="recorded 1 calls, but roles were given for 2"):
        attention_shares({"a": [uniform]}, [roles, roles])
    with pytest.raises(ValueError, match="do not fit"):
        attention_shares({"a": [(torch.full((2, 4), 0.25), torch.zeros(2))]}, [roles])
