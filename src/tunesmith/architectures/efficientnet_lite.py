"""EfficientNet-Lite (tunesmith's own transformers-compatible model, assets/efficientnet_lite.py): a conv
stem, 16 MBConv blocks without squeeze-excitation, a final 1x1 conv, and the classifier.

LoRA adapts the pointwise convolutions (expand, project, top); the depthwise ones are grouped and tiny.
"""
from __future__ import annotations

from . import Architecture, register_architecture
from .conv_stages import CONV_LR, conv_stages_split


def split(model):
    return conv_stages_split(model, "efficientnet_lite", stem="stem", blocks="blocks", top="top")


register_architecture(Architecture(
    "efficientnet_lite", ("efficientnet_lite",),
    embeddings=r"efficientnet_lite\.stem\.",
    layers=(r"efficientnet_lite\.blocks\.(\d+)\.", r"efficientnet_lite\.top\."),
    head=r"classifier\.",
    lora=r"efficientnet_lite\.(blocks\.\d+\.(expand|project)|top)\.convolution",
    split=split,
    lr=CONV_LR,
))
