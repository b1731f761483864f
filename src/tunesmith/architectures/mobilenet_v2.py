"""MobileNetV2 (transformers' MobileNetV2ForImageClassification): a conv stem, 16 inverted-residual
blocks, a final 1x1 conv, and the classifier.

LoRA adapts the pointwise (1x1) convolutions, which are the network's dense maps (PEFT puts a low-rank
pair of 1x1 convs beside each); the depthwise 3x3 convolutions are grouped and tiny, so they are left alone.
"""
from __future__ import annotations

from . import Architecture, register_architecture
from .conv_stages import conv_stages_split


def split(model):
    return conv_stages_split(model, "mobilenet_v2", stem="conv_stem", blocks="layer", top="conv_1x1")


register_architecture(Architecture(
    "mobilenet_v2", ("mobilenet_v2",),
    embeddings=r"mobilenet_v2\.conv_stem\.",
    layers=(r"mobilenet_v2\.layer\.(\d+)\.", r"mobilenet_v2\.conv_1x1\."),
    head=r"classifier\.",
    lora=r"mobilenet_v2\.(layer\.\d+\.(expand_1x1|reduce_1x1)|conv_1x1)\.convolution",  # the blocks, not the stem
    split=split,
))
