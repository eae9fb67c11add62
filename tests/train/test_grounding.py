"""The grounding losses: closed forms for uniform and mask-shaped attention, gradient signs, which
words count, and the kept attention weights against the recorder's and the UNet's own output."""

from __future__ import annotations

import math

import pytest
import torch

from videomv.eval.cross_attention import record_cross_attention
from videomv.models import T2MVUNet
from videomv.models.camera_unet import cross_attention_layers
from videomv.train.grounding import grounding_losses, keep_cross_attention, word_attention

from tiny_videomv import TINY_UNET

B, F, K = 2, 3, 6


def _masks():
    """(B, G=2, F, 4, 4): word 0 covers the left half, word 1 one quarter-cell corner."""
    masks = torch.zeros(B, 2, F, 4, 4)
    masks[:, 0, :, :, :2] = 1
    masks[:, 1, :, :2, :2] = 1
    return masks


def _tokens():
    tokens = torch.zeros(B, 2, K)
    tokens[:, 0, 1] = 1
    tokens[:, 1, 2:4] = 1  # a two-token word
    return tokens


def test_uniform_attention_puts_the_mask_area_inside():
    maps = [torch.full((B * F, 16, K), 1 / K), torch.full((B * F, 4, K), 1 / K)]  # 4x4 and 2x2 grids
    shares = word_attention(maps, _tokens(), _masks())
    # at 4x4: left half 0.5, corner 0.25; at 2x2 (pooled): the same areas
    for inside, uniform, counts in shares:
        torch.testing.assert_close(inside[:, 0], torch.full((B, F), 0.5))
        torch.testing.assert_close(inside[:, 1], torch.full((B, F), 0.25))
        torch.testing.assert_close(uniform, inside)
        assert counts.all()
    expected = (0.5 ** 2 + 0.75 ** 2) / 2
    losses = grounding_losses(maps, _tokens(), _masks())
    assert float(losses["token"]) == pytest.approx(expected)
    # pixel term: binary cross-entropy of a = 1/6 (one token) and 2/6 (two) against the masks
    word0 = 0.5 * -math.log(1 / 6) + 0.5 * -math.log(5 / 6)
    word1 = 0.25 * -math.log(2 / 6) + 0.75 * -math.log(4 / 6)
    assert float(losses["pixel"]) == pytest.approx((word0 + word1) / 2, rel=1e-5)


def test_attention_on_the_mask_gives_zero_loss_and_gradients_push_towards_it():
    masks, tokens = _masks(), _tokens()
    logits = torch.zeros(B * F, 16, K, requires_grad=True)
    weights = logits.softmax(-1)
    loss = grounding_losses([weights], tokens, masks)["token"]
    loss.backward()
    # word 0's token: raising its logit inside the mask lowers the loss, outside raises it
    grad = logits.grad.view(B, F, 4, 4, K)[..., 1]
    assert (grad[..., :2] < 0).all() and (grad[..., 2:] > 0).all()
    on_mask = torch.zeros(B, F, 16, K)
    on_mask[..., 0] = 1  # everything else on token 0
    flat = masks.flatten(-2)  # (B, G, F, 16)
    on_mask[..., 1] = flat[:, 0]
    on_mask[..., 2] = flat[:, 1]
    on_mask_losses = grounding_losses([on_mask.view(B * F, 16, K)], tokens, masks)
    assert float(on_mask_losses["token"]) == pytest.approx(0.0, abs=1e-6)
    assert float(on_mask_losses["pixel"]) == pytest.approx(0.0, abs=1e-5)
    # the pixel term raises the word's attention inside its mask, from every other token
    logits.grad = None
    grounding_losses([logits.softmax(-1)], tokens, masks)["pixel"].backward()
    grad = logits.grad.view(B, F, 4, 4, K)
    assert (grad[..., :2, 1] < 0).all() and (grad[..., 2:, 1] > 0).all() and (grad[..., :2, 0] > 0).all()


def test_which_words_count():
    maps = [torch.full((B * F, 16, K), 1 / K)]
    masks, tokens = _masks(), _tokens()
    masks[0, 1, 0] = 0.2  # below min_cover everywhere at sample 0, view 0
    tokens[1, 0] = 0  # sample 1's first word has no tokens (a dropped prompt)
    _, _, counts = word_attention(maps, tokens, masks)[0]
    assert not counts[0, 1, 0] and counts[0, 1, 1:].all() and not counts[1, 0].any() and counts[1, 1].all()
    assert word_attention(maps, tokens, masks, min_cover=0.1)[0][2][0, 1, 0]
    for none in grounding_losses([m.requires_grad_() for m in maps], torch.zeros_like(tokens), masks).values():
        assert float(none.detach()) == 0 and none.requires_grad


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="no level of a 4x4 grid"):
        word_attention([torch.full((B * F, 9, K), 1 / K)], _tokens(), _masks())
    with pytest.raises(ValueError, match="do not fit 2 samples x 3 views"):
        word_attention([torch.full((B * F + 1, 16, K), 1 / K)], _tokens(), _masks())
    with pytest.raises(ValueError, match="do not fit masks"):
        word_attention([torch.full((B * F, 16, K), 1 / K)], _tokens()[:1], _masks())
    with pytest.raises(ValueError, match="no cross-attention maps"):
        grounding_losses([], _tokens(), _masks())


def test_kept_weights_are_the_recorded_ones_and_train_the_queries():
    torch.manual_seed(0)
    unet = T2MVUNet(**TINY_UNET)
    g = torch.Generator().manual_seed(1)
    sample, t = torch.randn(2, 4, F, 8, 8, generator=g), torch.tensor([500])
    context = torch.randn(2, K, TINY_UNET["cross_attention_dim"], generator=g)
    layers = cross_attention_layers(unet)
    processors = {n: type(m.processor) for n, m in layers.items()}
    with torch.no_grad():
        plain = unet(sample, t, context).sample
        with record_cross_attention(unet) as records:
            unet(sample, t, context)
    with keep_cross_attention(unet) as maps:
        kept = unet(sample, t, context).sample
    torch.testing.assert_close(kept, plain, rtol=1e-5, atol=1e-5)
    assert {n: type(m.processor) for n, m in layers.items()} == processors
    assert len(maps) == len(layers)
    recorded = [calls[0][0] for calls in records.values()]  # module order; maps are in call order
    for weights in maps:
        assert sum(torch.allclose(weights.detach().mean(1), r, rtol=1e-5, atol=1e-6) for r in recorded) == 1
    size = 8
    masks = torch.zeros(2, 1, F, size, size)
    masks[..., :4] = 1
    tokens = torch.zeros(2, 1, K)
    tokens[..., 2] = 1
    grounding_losses(maps, tokens, masks)["token"].backward()
    assert all(layer.to_q.weight.grad.abs().sum() > 0 for layer in layers.values())
    with pytest.raises(RuntimeError, match="boom"), keep_cross_attention(unet):
        raise RuntimeError("boom")
    assert {n: type(m.processor) for n, m in layers.items()} == processors
