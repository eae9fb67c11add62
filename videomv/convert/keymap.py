"""Parameter names of the official release's UNets -> this project's camera UNets.

The release (alibaba/VideoMV, `UNetSD_T2VBase`, `UNetSD_I2VGen`) uses the LDM/VGen layout:
`input_blocks.k.m`, `middle_block.m`, `output_blocks.k.m`, where block k holds a residual block
(m=0), a spatial transformer (m=1) and a temporal transformer (m=2) on levels with attention, and a
down/up sampler. Our UNets (`T2MVUNet`, `I2MVUNet`) use diffusers' `UNet3DConditionModel` /
`I2VGenXLUNet` layout. The table of module prefixes is built from the target model's config, so a
tiny config maps the same way as the full-scale one.

Tensor changes on top of the renaming (each checked against the release's own code):
- temporal transformers' `proj_in` / `proj_out` are Conv1d `[o, i, 1]` in the release, Linear here;
- the image model's local temporal encoder has one `to_qkv` Linear, split here into q, k, v;
- the image model adds its image-latent features twice to the conv_in input (`concat += _ximg`
  twice), diffusers once: `conv_in.weight[:, in:2*in]` is doubled;
- the first camera linear takes the release's camera vector (c2w in the G-Objaverse/Blender world);
  the fixed change of basis to ours is folded into its weight (`frames.fold_camera_frame`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .frames import camera_vector_permutation, fold_camera_frame

RESNET_RENAMES = {
    "in_layers.0": "norm1",
    "in_layers.2": "conv1",
    "emb_layers.1": "time_emb_proj",
    "out_layers.0": "norm2",
    "out_layers.3": "conv2",
    "skip_connection": "conv_shortcut",
}
SEQUENTIAL_MLP = {"0": "linear_1", "2": "linear_2"}  # Linear, SiLU, Linear -> diffusers' TimestepEmbedding
LOCAL_TEMPORAL_ENCODER = {
    "layers.0.0.norm": "norm1",
    "layers.0.0.fn.to_out.0": "attn1.to_out.0",
    "layers.0.1.net.0.0": "ff.net.0.proj",
    "layers.0.1.net.2": "ff.net.2",
}
QKV_KEY = "local_temporal_encoder.layers.0.0.fn.to_qkv.weight"


@dataclass(frozen=True)
class Entry:
    """Release module `source` -> our module `target`; `kind` says how the names below it change."""

    source: str
    target: str
    kind: str  # "same" | "resnet" | "temporal" | "mlp" | "encoder"


def _has_attention(block_type: str) -> bool:
    return block_type.startswith("CrossAttn")


def module_table(config, task: str) -> list[Entry]:
    """Every release module prefix and its counterpart, for a UNet with diffusers `config`."""
    if task not in ("text", "image"):
        raise ValueError(f"task must be 'text' or 'image', got {task!r}")
    levels = len(config["block_out_channels"])
    per_level = config["layers_per_block"]
    down_attn = [_has_attention(t) for t in config["down_block_types"]]
    up_attn = [_has_attention(t) for t in config["up_block_types"]]

    table = [
        Entry("time_embed", "time_embedding", "mlp"),
        Entry("camera_embedding", "camera_embedding", "mlp"),
        Entry("input_blocks.0.0", "conv_in", "same"),
        Entry("input_blocks.0.1", "transformer_in", "temporal"),
        Entry("out.0", "conv_norm_out", "same"),
        Entry("out.2", "conv_out", "same"),
    ]

    def layer(source: str, target: str, index: int, attention: bool) -> None:
        table.append(Entry(f"{source}.0", f"{target}.resnets.{index}", "resnet"))
        table.append(Entry(f"{source}.0.temopral_conv", f"{target}.temp_convs.{index}", "same"))
        if attention:
            table.append(Entry(f"{source}.1", f"{target}.attentions.{index}", "same"))
            table.append(Entry(f"{source}.2", f"{target}.temp_attentions.{index}", "temporal"))

    k = 1
    for level in range(levels):
        for j in range(per_level):
            layer(f"input_blocks.{k}", f"down_blocks.{level}", j, down_attn[level])
            k += 1
        if level != levels - 1:
            table.append(Entry(f"input_blocks.{k}.op", f"down_blocks.{level}.downsamplers.0.conv", "same"))
            k += 1

    table.append(Entry("middle_block.0", "mid_block.resnets.0", "resnet"))
    table.append(Entry("middle_block.0.temopral_conv", "mid_block.temp_convs.0", "same"))
    table.append(Entry("middle_block.1", "mid_block.attentions.0", "same"))
    table.append(Entry("middle_block.2", "mid_block.temp_attentions.0", "temporal"))
    table.append(Entry("middle_block.3", "mid_block.resnets.1", "resnet"))
    table.append(Entry("middle_block.3.temopral_conv", "mid_block.temp_convs.1", "same"))

    k = 0
    for level in range(levels):
        for j in range(per_level + 1):
            layer(f"output_blocks.{k}", f"up_blocks.{level}", j, up_attn[level])
            if level != levels - 1 and j == per_level:
                index = 3 if up_attn[level] else 1
                table.append(Entry(f"output_blocks.{k}.{index}", f"up_blocks.{level}.upsamplers.0", "same"))
            k += 1

    if task == "image":
        table += [
            Entry("fps_embedding", "fps_embedding", "same"),
            Entry("context_embedding", "context_embedding", "same"),
            Entry("local_image_concat", "image_latents_proj_in", "same"),
            Entry("local_image_embedding", "image_latents_context_embedding", "same"),
            Entry("local_temporal_encoder", "image_latents_temporal_encoder", "encoder"),
        ]
    return table


@dataclass
class Conversion:
    """Converted weights and what happened to every source key."""

    state_dict: dict[str, torch.Tensor]
    sources: dict[str, str] = field(default_factory=dict)  # our key -> release key(s) it came from
    unmapped: list[str] = field(default_factory=list)  # release keys no rule covers


def _rename(rest: str, kind: str) -> str:
    if kind == "resnet":
        for old, new in RESNET_RENAMES.items():
            if rest.startswith(old + "."):
                return new + rest[len(old):]
        return rest
    if kind == "mlp":
        head, _, tail = rest.partition(".")
        return f"{SEQUENTIAL_MLP.get(head, head)}.{tail}"
    if kind == "encoder":
        for old, new in LOCAL_TEMPORAL_ENCODER.items():
            if rest.startswith(old + "."):
                return new + rest[len(old):]
    return rest


def _lookup(table: list[Entry]) -> dict[str, Entry]:
    return {e.source: e for e in table}


def _find(key: str, by_source: dict[str, Entry]) -> tuple[Entry, str] | None:
    """The entry with the longest source prefix of `key`, and the rest of the key."""
    parts = key.split(".")
    for n in range(len(parts) - 1, 0, -1):
        entry = by_source.get(".".join(parts[:n]))
        if entry is not None:
            return entry, ".".join(parts[n:])
    return None


def convert_unet_state_dict(release: dict[str, torch.Tensor], config, task: str) -> Conversion:
    """Rename and reshape a release UNet state dict (without `lgm_big.*`) for a UNet with `config`.

    Keys no rule covers are listed in `unmapped`; checking the result against the model's own key
    set and shapes is `check_against`'s job.
    """
    by_source = _lookup(module_table(config, task))
    out: dict[str, torch.Tensor] = {}
    sources: dict[str, str] = {}
    unmapped: list[str] = []

    def put(key: str, value: torch.Tensor, source: str) -> None:
        if key in out:
            raise ValueError(f"release keys {sources[key]} and {source} both map to {key}")
        out[key], sources[key] = value, source

    for key, value in release.items():
        if task == "image" and key == QKV_KEY:
            if value.ndim != 2 or value.shape[0] % 3:
                raise ValueError(f"{key}: expected a [3 * inner, dim] Linear weight, got {tuple(value.shape)}")
            for name, part in zip("qkv", value.chunk(3, dim=0)):
                put(f"image_latents_temporal_encoder.attn1.to_{name}.weight", part, key)
            continue
        found = _find(key, by_source)
        if found is None:
            unmapped.append(key)
            continue
        entry, rest = found
        if entry.kind == "encoder" and not any(rest.startswith(p + ".") for p in LOCAL_TEMPORAL_ENCODER):
            unmapped.append(key)
            continue
        if entry.kind == "temporal" and rest in ("proj_in.weight", "proj_out.weight") and value.ndim == 3:
            if value.shape[-1] != 1:
                raise ValueError(f"{key}: expected a Conv1d weight [out, in, 1], got {tuple(value.shape)}")
            value = value[..., 0]
        put(f"{entry.target}.{_rename(rest, entry.kind)}", value, key)

    if task == "image" and "conv_in.weight" in out:
        weight = out["conv_in.weight"]
        latent = config["in_channels"]
        if weight.shape[1] != 2 * latent:
            raise ValueError(
                f"input_blocks.0.0.weight: expected {2 * latent} input channels (latents + image features), "
                f"got {tuple(weight.shape)}"
            )
        out["conv_in.weight"] = torch.cat([weight[:, :latent], 2 * weight[:, latent:]], dim=1)
    if "camera_embedding.linear_1.weight" in out:
        out["camera_embedding.linear_1.weight"] = fold_camera_frame(out["camera_embedding.linear_1.weight"])
    return Conversion(out, sources, unmapped)


def check_against(conversion: Conversion, expected: dict[str, torch.Size], source: str) -> None:
    """Raise ValueError naming every unmapped, missing, unexpected and wrong-shape key."""

    def listing(items):
        items = sorted(items)
        shown = ", ".join(items[:10]) + (f", ... ({len(items) - 10} more)" if len(items) > 10 else "")
        return f"{len(items)}: {shown}"

    state = conversion.state_dict
    problems = []
    if conversion.unmapped:
        problems.append(f"release keys with no counterpart {listing(conversion.unmapped)}")
    missing = set(expected) - set(state)
    if missing:
        problems.append(f"missing keys {listing(missing)}")
    unexpected = set(state) - set(expected)
    if unexpected:
        problems.append(f"unexpected keys {listing(f'{k} (from {conversion.sources[k]})' for k in unexpected)}")
    wrong = [
        f"{k} (from {conversion.sources[k]}): {tuple(state[k].shape)} vs model {tuple(expected[k])}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k])
    ]
    if wrong:
        problems.append(f"wrong shapes {listing(wrong)}")
    if problems:
        raise ValueError(f"{source} does not fit the UNet: " + "; ".join(problems))


def to_release_state_dict(state: dict[str, torch.Tensor], config, task: str) -> dict[str, torch.Tensor]:
    """The inverse of `convert_unet_state_dict`: our UNet's weights under the release's names and
    shapes (used to write release-format checkpoints, e.g. for round-trip tests)."""
    table = module_table(config, task)
    by_target = {e.target: e for e in table}
    inverse_renames = {
        "resnet": {v: k for k, v in RESNET_RENAMES.items()},
        "mlp": {v: k for k, v in SEQUENTIAL_MLP.items()},
        "encoder": {v: k for k, v in LOCAL_TEMPORAL_ENCODER.items()},
    }
    split = {f"image_latents_temporal_encoder.attn1.to_{name}.weight": name for name in "qkv"}
    out: dict[str, torch.Tensor] = {}
    qkv = {}
    for key, value in state.items():
        if task == "image" and key in split:
            qkv[split[key]] = value
            continue
        if key == "camera_embedding.linear_1.weight":
            value = value @ camera_vector_permutation().to(value).T
        if key == "conv_in.weight" and task == "image":
            latent = config["in_channels"]
            value = torch.cat([value[:, :latent], value[:, latent:] / 2], dim=1)
        found = _find(key, by_target)
        if found is None:
            raise ValueError(f"{key}: no release counterpart")
        entry, rest = found
        for old, new in inverse_renames.get(entry.kind, {}).items():
            if rest.startswith(old + "."):
                rest = new + rest[len(old):]
                break
        if entry.kind == "temporal" and rest in ("proj_in.weight", "proj_out.weight"):
            value = value[..., None]
        out[f"{entry.source}.{rest}"] = value
    if qkv:
        out[QKV_KEY] = torch.cat([qkv["q"], qkv["k"], qkv["v"]], dim=0)
    return out
