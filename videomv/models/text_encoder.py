"""A CLIP text model whose last layers attend both ways.

CLIP's causal mask lets a token see only the words before it: in "a red cube on top of a blue
cylinder" the state at "cube" cannot know the cube is the part on top. With the last
`bidirectional_layers` layers attending to every token, each part's tokens can carry their role.
The weights and their names are CLIP's; only the mask of those layers changes, so a causal model
converts with its state dict.
"""

from __future__ import annotations

from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel
# PreTrainedModel in this module's namespace lets DiffusionPipeline.from_pretrained find the load method.
from transformers import PreTrainedModel  # noqa: F401


def text_transformer(text_encoder: CLIPTextModel) -> nn.Module:
    """The CLIP text transformer (embeddings, encoder layers, final layer norm); transformers < 5
    nests it in `text_encoder.text_model`."""
    return getattr(text_encoder, "text_model", text_encoder)


def bidirectional_layers(text_encoder: CLIPTextModel) -> int:
    """How many of the last layers attend both ways (0: a causal CLIP text model)."""
    return int(getattr(text_encoder.config, "bidirectional_layers", 0) or 0)


def _attend_both_ways(module, args, kwargs):
    """Forward pre-hook on a CLIP attention module: drop the causal mask (the prompts are padded
    to the full length, so there is no padding mask to keep)."""
    kwargs = dict(kwargs)
    kwargs["attention_mask"] = None
    if "causal_attention_mask" in kwargs:  # transformers < 5 passes the causal mask apart
        kwargs["causal_attention_mask"] = None
    if "is_causal" in kwargs:
        kwargs["is_causal"] = False
    return args, kwargs


class BidirectionalCLIPTextModel(CLIPTextModel):
    """`CLIPTextModel` whose last `config.bidirectional_layers` layers attend to every token."""

    def __init__(self, config: CLIPTextConfig):
        super().__init__(config)
        count = bidirectional_layers(self)
        layers = text_transformer(self).encoder.layers
        if not 1 <= count <= len(layers):
            raise ValueError(f"bidirectional_layers: expected 1..{len(layers)} (the encoder's layers), got {count!r}")
        for layer in layers[len(layers) - count:]:
            layer.self_attn.register_forward_pre_hook(_attend_both_ways, with_kwargs=True)

    @classmethod
    def from_causal(cls, text_encoder: CLIPTextModel, count: int) -> "BidirectionalCLIPTextModel":
        """The same weights with the last `count` layers attending both ways."""
        if isinstance(text_encoder, cls):
            raise ValueError("text encoder: already has bidirectional layers")
        if not isinstance(count, int) or isinstance(count, bool):
            raise ValueError(f"bidirectional_layers: expected an integer, got {count!r}")
        config = CLIPTextConfig.from_dict(text_encoder.config.to_dict())
        config.bidirectional_layers = count
        config.architectures = [cls.__name__]
        reference = next(text_encoder.parameters())
        model = cls(config).to(device=reference.device, dtype=reference.dtype)
        model.load_state_dict(text_encoder.state_dict())
        return model.train(text_encoder.training)


def load_text_encoder(path: str, subfolder: str = "text_encoder", **kwargs) -> CLIPTextModel:
    """A CLIP text model from a folder or hub id, bidirectional where its config says so."""
    config = CLIPTextConfig.from_pretrained(path, subfolder=subfolder)
    cls = BidirectionalCLIPTextModel if getattr(config, "bidirectional_layers", 0) else CLIPTextModel
    return cls.from_pretrained(path, subfolder=subfolder, **kwargs)
