"""The frozen-layer split of an image classifier built as stem -> blocks -> final conv -> pool -> dropout ->
classifier (MobileNetV2, EfficientNet-Lite): called block by block for the cache (train/frozen_cache.py).

Feature maps are cached as rows of channels, one per position (batch, height x width, channels); with
every block frozen, the pooled vector the classifier reads (batch, 1, channels).
"""
from __future__ import annotations

import torch
from torch import nn

# A conv net's own weights under full or freeze want a learning rate near the head's, not a transformer's
# 5e-5 (fastai's fine_tune of an ImageNet ResNet uses 2e-3): on 1,000 Fashion-MNIST images, one epoch of
# full at 5e-5 reached 0.35 test accuracy, at 1e-3 0.66 (mobilenet-v2, 64 px).
CONV_LR = {"full": 1e-3, "freeze": 1e-3}


class ConvStagesSplit:
    def __init__(self, model: nn.Module, backbone: nn.Module, stem: nn.Module, blocks: list[nn.Module]):
        self.model, self.backbone, self.stem, self.blocks = model, backbone, stem, blocks
        self.shape: tuple[int, int] | None = None  # the cached feature map's height and width

    @property
    def num_layers(self) -> int:
        return len(self.blocks)

    def per_token(self, depth: int) -> bool:
        return False

    def bottom(self, batch: dict, depth: int) -> torch.Tensor:
        hidden = self.stem(batch["pixel_values"])
        for block in self.blocks[:depth]:
            hidden = block(hidden)
        if depth == self.num_layers:
            return self.pool(hidden)[:, None, :]
        self.shape = tuple(hidden.shape[2:])
        return hidden.flatten(2).transpose(1, 2)

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.backbone.pooler(hidden), 1)

    def top(self, hidden: torch.Tensor, mask, depth: int) -> torch.Tensor:
        if depth == self.num_layers:
            pooled = hidden[:, 0]
        else:
            hidden = hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], *self.shape)
            for block in self.blocks[depth:]:
                hidden = block(hidden)
            pooled = self.pool(hidden)
        return self.model.classifier(self.model.dropout(pooled))


def conv_stages_split(model: nn.Module, backbone_name: str, stem: str, blocks: str, top: str) -> ConvStagesSplit | None:
    """The split of `model` whose backbone attribute holds the named stem, block list and final conv, or None."""
    backbone = getattr(model, backbone_name, None)
    if backbone is None or getattr(backbone, "pooler", None) is None or not hasattr(model, "classifier") or not hasattr(model, "dropout"):
        return None
    return ConvStagesSplit(model, backbone, getattr(backbone, stem), list(getattr(backbone, blocks)) + [getattr(backbone, top)])
