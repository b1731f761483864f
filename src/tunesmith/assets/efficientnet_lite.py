"""EfficientNet-Lite as a transformers model (model_type "efficientnet_lite").

transformers' own EfficientNet cannot hold Lite0 exactly: every block there has a squeeze-excitation
layer (Lite has none), its activation is one `hidden_act` for blocks and SE alike (Lite: ReLU6 and no
SE), its padding is fixed at build time rather than TensorFlow's "SAME", and its stem and head widths are
scaled by `width_coefficient` (Lite keeps them fixed). So this file defines the network itself: a
`PreTrainedConfig` and `PreTrainedModel` pair whose outputs are transformers' usual ones.

This file is copied into every saved model folder (with `auto_map` in config.json), so plain transformers
loads the folder with `trust_remote_code=True`; it must therefore import nothing but torch and
transformers. Inside tunesmith the classes are registered with the Auto classes instead, and no remote
code runs.

The layout follows EfficientNet-Lite (github.com/tensorflow/tpu, models/official/efficientnet/lite):
a 3x3 stride-2 stem, 16 MBConv blocks (1x1 expand, kxk depthwise, 1x1 project; residual when shape is
kept), a 1x1 "top" conv to 1280 channels, average pooling, dropout and a linear classifier; ReLU6 everywhere,
BatchNorm eps 1e-3, TensorFlow "SAME" padding (the weights were trained in TensorFlow).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutputWithNoAttention


class EfficientNetLiteConfig(PreTrainedConfig):
    r"""EfficientNet-Lite0 by default; per-stage tuples list the 7 stages from input to output.

    batch_norm_momentum is in PyTorch's convention (weight of the new batch): TensorFlow's decay 0.99.
    drop_connect_rate is the stochastic-depth rate of the last block, scaled linearly from 0 at the first.
    """

    model_type = "efficientnet_lite"

    num_channels: int = 3
    image_size: int = 224
    stem_channels: int = 32
    top_channels: int = 1280
    kernel_sizes: list[int] | tuple[int, ...] = (3, 3, 5, 3, 5, 5, 3)
    strides: list[int] | tuple[int, ...] = (1, 2, 2, 2, 1, 2, 1)
    expand_ratios: list[int] | tuple[int, ...] = (1, 6, 6, 6, 6, 6, 6)
    out_channels: list[int] | tuple[int, ...] = (16, 24, 40, 80, 112, 192, 320)
    num_block_repeats: list[int] | tuple[int, ...] = (1, 2, 2, 3, 3, 4, 1)
    hidden_act: str = "relu6"
    batch_norm_eps: float = 1e-3
    batch_norm_momentum: float = 0.01
    dropout_rate: float = 0.2
    drop_connect_rate: float = 0.2
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        lengths = {len(self.kernel_sizes), len(self.strides), len(self.expand_ratios), len(self.out_channels), len(self.num_block_repeats)}
        if len(lengths) != 1:
            raise ValueError("EfficientNetLiteConfig: kernel_sizes, strides, expand_ratios, out_channels and num_block_repeats "
                             "must have one entry per stage (the same length).")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME": output ceil(size / stride); an odd total puts the extra pixel after (bottom/right)."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class EfficientNetLiteConvLayer(nn.Module):
    """Convolution (TF "SAME" padding, no bias), BatchNorm, and ReLU6 unless activation=False."""

    def __init__(self, config: EfficientNetLiteConfig, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, groups: int = 1, activation: bool = True) -> None:
        super().__init__()
        self.convolution = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, groups=groups, bias=False)
        self.normalization = nn.BatchNorm2d(out_channels, eps=config.batch_norm_eps, momentum=config.batch_norm_momentum)
        self.activation = ACT2FN[config.hidden_act] if activation else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        kernel, stride = self.convolution.kernel_size[0], self.convolution.stride[0]
        if kernel > 1:
            # padding depends on the input size (as in TF), so any resolution pads as the weights were trained
            top, bottom = same_padding(features.shape[-2], kernel, stride)
            left, right = same_padding(features.shape[-1], kernel, stride)
            features = nn.functional.pad(features, (left, right, top, bottom))
        features = self.normalization(self.convolution(features))
        return features if self.activation is None else self.activation(features)


class EfficientNetLiteBlock(nn.Module):
    """MBConv without squeeze-excitation: 1x1 expand (unless ratio 1), kxk depthwise, 1x1 linear project."""

    def __init__(self, config: EfficientNetLiteConfig, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int, expand_ratio: int, drop_connect_rate: float) -> None:
        super().__init__()
        expanded = in_channels * expand_ratio
        self.expand = EfficientNetLiteConvLayer(config, in_channels, expanded, 1) if expand_ratio != 1 else None
        self.depthwise = EfficientNetLiteConvLayer(config, expanded, expanded, kernel_size, stride=stride, groups=expanded)
        self.project = EfficientNetLiteConvLayer(config, expanded, out_channels, 1, activation=False)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.drop_connect_rate = drop_connect_rate

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = features if self.expand is None else self.expand(features)
        hidden = self.project(self.depthwise(hidden))
        if not self.use_residual:
            return hidden
        if self.training and self.drop_connect_rate > 0:
            # stochastic depth: drop the whole residual branch for some examples, rescale the kept ones
            keep = 1.0 - self.drop_connect_rate
            mask = torch.floor(keep + torch.rand(hidden.shape[0], 1, 1, 1, dtype=hidden.dtype, device=hidden.device))
            hidden = hidden / keep * mask
        return hidden + features


class EfficientNetLitePreTrainedModel(PreTrainedModel):
    config: EfficientNetLiteConfig
    config_class = EfficientNetLiteConfig
    base_model_prefix = "efficientnet_lite"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules = []


class EfficientNetLiteModel(EfficientNetLitePreTrainedModel):
    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        self.stem = EfficientNetLiteConvLayer(config, config.num_channels, config.stem_channels, 3, stride=2)
        stages = list(zip(config.kernel_sizes, config.strides, config.expand_ratios, config.out_channels, config.num_block_repeats))
        total = sum(config.num_block_repeats)
        blocks, in_channels = [], config.stem_channels
        for kernel, stride, expand, out_channels, repeats in stages:
            for repeat in range(repeats):
                rate = config.drop_connect_rate * len(blocks) / total
                blocks.append(EfficientNetLiteBlock(config, in_channels, out_channels, kernel, stride if repeat == 0 else 1, expand, rate))
                in_channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.top = EfficientNetLiteConvLayer(config, in_channels, config.top_channels, 1)
        self.pooler = nn.AdaptiveAvgPool2d(1)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> tuple | BaseModelOutputWithPoolingAndNoAttention:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden = self.stem(pixel_values)
        all_hidden = (hidden,) if output_hidden_states else None
        for block in self.blocks:
            hidden = block(hidden)
            if output_hidden_states:
                all_hidden += (hidden,)
        last = self.top(hidden)
        pooled = torch.flatten(self.pooler(last), 1)
        if not return_dict:
            return tuple(v for v in (last, pooled, all_hidden) if v is not None)
        return BaseModelOutputWithPoolingAndNoAttention(last_hidden_state=last, pooler_output=pooled, hidden_states=all_hidden)


class EfficientNetLiteForImageClassification(EfficientNetLitePreTrainedModel):
    def __init__(self, config: EfficientNetLiteConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.efficientnet_lite = EfficientNetLiteModel(config)
        self.dropout = nn.Dropout(config.dropout_rate)
        self.classifier = nn.Linear(config.top_channels, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> tuple | ImageClassifierOutputWithNoAttention:
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.efficientnet_lite(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(self.dropout(outputs.pooler_output))
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            output = (logits,) + ((outputs.hidden_states,) if outputs.hidden_states is not None else ())
            return ((loss,) + output) if loss is not None else output
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


# save_pretrained copies this file into the folder and writes auto_map, so the folder loads without tunesmith
EfficientNetLiteConfig.register_for_auto_class()
EfficientNetLiteForImageClassification.register_for_auto_class("AutoModelForImageClassification")

# Only tunesmith's own import registers the Auto classes: transformers imports the copy in a model folder
# under another module name (trust_remote_code), and that copy must not claim "efficientnet_lite" again.
if __name__.startswith("tunesmith."):
    AutoConfig.register("efficientnet_lite", EfficientNetLiteConfig, exist_ok=True)
    AutoModelForImageClassification.register(EfficientNetLiteConfig, EfficientNetLiteForImageClassification, exist_ok=True)
