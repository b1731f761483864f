"""MobileNetV2 (transformers' MobileNetV2ForImageClassification): a conv stem, 16 inverted-residual
blocks, a final 1x1 conv, and the classifier.

LoRA adapts the pointwise (1x1) convolutions, which are the network's dense maps (PEFT puts a low-rank
pair of 1x1 convs beside each); the depthwise 3x3 convolutions are grouped and tiny, so they are left alone.
"""
from __future__ import annotations

import torch
from torch import nn

from . import Architecture, register_architecture


class MobileNetV2Split:
    """The classifier called block by block, for the frozen-layer cache. Feature maps are cached as rows of
    channels, one per position (batch, height x width, channels); with every block frozen, the pooled
    vector the classifier reads (batch, 1, channels)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.blocks = list(model.mobilenet_v2.layer) + [model.mobilenet_v2.conv_1x1]
        self.shape: tuple[int, int] | None = None  # the cached feature map's height and width

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def per_token(self, depth: int) -> bool:
        return False

    def bottom(self, batch: dict, depth: int) -> torch.Tensor:
        hidden = self.model.mobilenet_v2.conv_stem(batch["pixel_values"])
        for block in self.blocks[:depth]:
            hidden = block(hidden)
        if depth == self.num_layers:
            return self.pool(hidden)[:, None, :]
        self.shape = tuple(hidden.shape[2:])
        return hidden.flatten(2).transpose(1, 2)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model.mobilenet_v2.pooler(hidden), 1)

    def top(self, hidden: torch.Tensor, mask, depth: int) -> torch.Tensor:
        if depth == self.num_layers:
            pooled = hidden[:, 0]
        else:
            hidden = hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], *self.shape)
            for block in self.blocks[depth:]:
                hidden = block(hidden)
            pooled = self.pool(hidden)
        return self.model.classifier(self.model.dropout(pooled))


def split(model: nn.Module) -> MobileNetV2Split | None:
    inner = getattr(model, "mobilenet_v2", None)
    if inner is None or getattr(inner, "pooler", None) is None or not hasattr(model, "classifier"):
        return None
    return MobileNetV2Split(model)


register_architecture(Architecture(
    "mobilenet_v2", ("mobilenet_v2",),
    embeddings=r"mobilenet_v2\.conv_stem\.",
    layers=(r"mobilenet_v2\.layer\.(\d+)\.", r"mobilenet_v2\.conv_1x1\."),
    head=r"classifier\.",
    lora=r"mobilenet_v2\.(layer\.\d+\.(expand_1x1|reduce_1x1)|conv_1x1)\.convolution",  # the blocks, not the stem
    split=split,
))
