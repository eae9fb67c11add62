"""LGM's asymmetric multi-view UNet (Tang et al. 2024), parameter-compatible with its release.

Images of all views of one object travel through the network as a batch of B*V frames; the
attention blocks regroup them so that the tokens of all V views attend to each other jointly.
Every residual sum is multiplied by `skip_scale` = sqrt(0.5). The decoder may have fewer blocks
than the encoder ("asymmetric"), so the output is coarser than the input: 256 -> 128 for `big`.

Attribute names (conv_in, down_blocks.i.nets.j / attns.j / downsample, mid_block, up_blocks.i ...
upsample, norm_out, conv_out; attention qkv without bias, proj with bias) follow the released
checkpoint so that its state dict loads as is.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SKIP_SCALE = math.sqrt(0.5)


class ResnetBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> GroupNorm -> SiLU -> conv3x3, plus a (1x1 conv) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int, eps: float, skip_scale: float):
        super().__init__()
        self.skip_scale = skip_scale
        self.norm1 = nn.GroupNorm(num_groups, in_channels, eps=eps)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(num_groups, out_channels, eps=eps)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (h + self.shortcut(x)) * self.skip_scale


class SelfAttention(nn.Module):
    """Multi-head self-attention over a token sequence (B, N, C): fused qkv projection (no bias),
    scaled dot-product attention (scale 1/sqrt(head_dim)), output projection (with bias)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # qkv channels are laid out as (q|k|v, head, head_dim)
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, head_dim)
        # torch dispatches to flash / memory-efficient kernels on GPU when they apply.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class MultiViewAttention(nn.Module):
    """Residual self-attention in which the pixels of all `num_views` views of an object form one
    token sequence, so every view sees every other view."""

    def __init__(self, dim: int, num_heads: int, num_views: int, num_groups: int, eps: float, skip_scale: float):
        super().__init__()
        self.num_views = num_views
        self.skip_scale = skip_scale
        self.norm = nn.GroupNorm(num_groups, dim, eps=eps)
        self.attn = SelfAttention(dim, num_heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames, channels, height, width = x.shape
        if frames % self.num_views:
            raise ValueError(f"MultiViewAttention: batch of {frames} frames is not a multiple of {self.num_views} views")
        batch = frames // self.num_views
        h = self.norm(x)
        tokens = h.reshape(batch, self.num_views, channels, height * width).permute(0, 1, 3, 2)
        tokens = self.attn(tokens.reshape(batch, self.num_views * height * width, channels))
        h = tokens.reshape(batch, self.num_views, height * width, channels).permute(0, 1, 3, 2)
        return (h.reshape(frames, channels, height, width) + x) * self.skip_scale


class _Block(nn.Module):
    """Resnets `nets` (one per entry of channels_in) and `num_attns` multi-view attentions `attns`."""

    def __init__(self, channels_in: Sequence[int], channels: int, num_attns: int, opts: dict):
        super().__init__()
        norm = dict(num_groups=opts["num_groups"], eps=opts["eps"], skip_scale=opts["skip_scale"])
        self.nets = nn.ModuleList([ResnetBlock(c, channels, **norm) for c in channels_in])
        self.attns = nn.ModuleList(
            [MultiViewAttention(channels, opts["heads"], opts["num_views"], **norm) for _ in range(num_attns)]
        )


class DownBlock(_Block):
    """`num_layers` x (resnet [+ attention]), then an optional stride-2 conv. Every intermediate
    output is kept as a skip connection."""

    def __init__(self, in_channels, out_channels, num_layers, downsample, attention, opts):
        channels_in = [in_channels] + [out_channels] * (num_layers - 1)
        super().__init__(channels_in, out_channels, num_layers if attention else 0, opts)
        self.downsample = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if downsample else None

    def forward(self, x):
        skips = []
        for i, net in enumerate(self.nets):
            x = net(x)
            if self.attns:
                x = self.attns[i](x)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(_Block):
    """resnet, then `num_layers` x ([attention] + resnet)."""

    def __init__(self, channels, num_layers, attention, opts):
        super().__init__([channels] * (num_layers + 1), channels, num_layers if attention else 0, opts)

    def forward(self, x):
        x = self.nets[0](x)
        for i, net in enumerate(self.nets[1:]):
            if self.attns:
                x = self.attns[i](x)
            x = net(x)
        return x


class UpBlock(_Block):
    """Per layer: concatenate the latest skip, resnet [+ attention]; then optionally nearest x2
    upsampling followed by a 3x3 conv."""

    def __init__(self, in_channels, skip_channels: Sequence[int], out_channels, upsample, attention, opts):
        channels_in = [(in_channels if i == 0 else out_channels) + s for i, s in enumerate(skip_channels)]
        super().__init__(channels_in, out_channels, len(channels_in) if attention else 0, opts)
        self.upsample = nn.Conv2d(out_channels, out_channels, 3, padding=1) if upsample else None

    def forward(self, x, skips: list[torch.Tensor]):
        for i, net in enumerate(self.nets):
            x = net(torch.cat([x, skips.pop()], dim=1))
            if self.attns:
                x = self.attns[i](x)
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class MultiViewUNet(nn.Module):
    """(B*V, in_channels, H, W) -> (B*V, out_channels, H', W') with H' = H / 2^(len(down)-1) *
    2^(len(up)-1). The decoder consumes skips from the end of the encoder's skip stack, so a
    shorter decoder simply leaves the finest skips unused."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        down_channels: Sequence[int],
        down_attention: Sequence[bool],
        mid_attention: bool,
        up_channels: Sequence[int],
        up_attention: Sequence[bool],
        layers_per_block: int = 2,
        attention_heads: int = 16,
        num_views: int = 4,
        num_groups: int = 32,
        eps: float = 1e-5,
        skip_scale: float = SKIP_SCALE,
    ):
        super().__init__()
        opts = dict(heads=attention_heads, num_views=num_views, num_groups=num_groups, eps=eps, skip_scale=skip_scale)
        self.conv_in = nn.Conv2d(in_channels, down_channels[0], 3, padding=1)

        skip_stack = [down_channels[0]]  # channel count of every skip, in push order
        blocks, cin = [], down_channels[0]
        for i, cout in enumerate(down_channels):
            last = i == len(down_channels) - 1
            blocks.append(DownBlock(cin, cout, layers_per_block, not last, down_attention[i], opts))
            skip_stack += [cout] * (layers_per_block + (0 if last else 1))
            cin = cout
        self.down_blocks = nn.ModuleList(blocks)

        self.mid_block = MidBlock(down_channels[-1], 1, mid_attention, opts)

        blocks, cin = [], down_channels[-1]
        for i, cout in enumerate(up_channels):
            skips = [skip_stack.pop() for _ in range(layers_per_block + 1)]
            blocks.append(UpBlock(cin, skips, cout, i != len(up_channels) - 1, up_attention[i], opts))
            cin = cout
        self.up_blocks = nn.ModuleList(blocks)

        self.norm_out = nn.GroupNorm(num_groups, up_channels[-1], eps=eps)
        self.conv_out = nn.Conv2d(up_channels[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x)
            skips += block_skips
        x = self.mid_block(x)
        for block in self.up_blocks:
            x = block(x, skips)  # pops what it uses
        return self.conv_out(F.silu(self.norm_out(x)))
