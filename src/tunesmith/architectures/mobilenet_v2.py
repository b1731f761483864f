"""MobileNetV2 (transformers' MobileNetV2ForImageClassification): a conv stem, 16 inverted-residual
blocks, a final 1x1 conv, and the classifier.

LoRA adapts the pointwise (1x1) convolutions, which are the network's dense maps (PEFT puts a low-rank
pair of 1x1 convs beside each); the depthwise 3x3 convolutions are grouped and tiny, so they are left alone.
"""
from __future__ import annotations

from ..errors import TunesmithError
from . import Architecture, register_architecture
from .conv_stages import CONV_LR, conv_stages_split

POINTWISE = r"mobilenet_v2\.(layer\.\d+\.(expand_1x1|reduce_1x1)|conv_1x1)\.convolution"  # the blocks, not the stem


def lora_targets(model):
    if getattr(model.config, "tf_padding", False):  # transformers reads each wrapped conv's stride for the padding
        raise TunesmithError("--method lora cannot adapt this MobileNetV2: it pads the TensorFlow way (config tf_padding), which "
                             "reads each convolution's stride, and PEFT's LoRA convolutions have none; use --method full, freeze, "
                             "head or bitfit, or the embedded mobilenet-v2, which pads plainly.")
    return POINTWISE


def split(model):
    return conv_stages_split(model, "mobilenet_v2", stem="conv_stem", blocks="layer", top="conv_1x1")


register_architecture(Architecture(
    "mobilenet_v2", ("mobilenet_v2",),
    embeddings=r"mobilenet_v2\.conv_stem\.",
    layers=(r"mobilenet_v2\.layer\.(\d+)\.", r"mobilenet_v2\.conv_1x1\."),
    head=r"classifier\.",
    lora=lora_targets,
    split=split,
    lr=CONV_LR,
))
