"""Image classification: one image -> one of N labels, on any transformers image classifier.

The data is a folder of class folders or a table of paths and labels (data/images.py), read as audio
classification reads its clips (tasks/file_classification.py); the labels, the stratified validation
split and the metrics are text classification's (data/prepare.py, metrics.py), and so are the
prediction columns and records, which this task takes from a TextClassification over the same
labels rather than writing them twice. The base model's head (an ImageNet one, usually) is replaced
by a new one for the user's labels, with id2label set, so that `pipeline("image-classification",
model=run_dir)` names the labels.

Preprocessing follows the base model's image processor, read by AutoImageProcessor with Pillow's
backend (never torchvision): `encode` decodes each file once into a cache at the processor's resize
size, and `collate` cuts each batch's views from it: the processor's center crop for evaluation
and prediction, a random resized crop and a flip for training (--augment).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data import images as img
from ..errors import TunesmithError
from ..metrics import classification_metrics
from . import register_task
from .file_classification import predictions_with_paths, prepare_labeled_files, read_file_inputs, records_with_paths
from .protocol import Splits
from .text_classification import TextClassification, set_dropout

@dataclass
class ImageFeatures:
    """Which cached image each example is (`entries` into `images`), its label id, a length of 1 (an image
    is one unit of batching and throughput), and the augmentation its training steps get (--augment)."""

    images: img.DecodedImages
    entries: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    augment: str = "none"
    crop_min_scale: float = 0.08

    def __len__(self) -> int:
        return len(self.entries)

    def without_augmentation(self) -> "ImageFeatures":
        """The same examples as evaluation sees them (the frozen-layer cache computes each image once)."""
        return self if self.augment == "none" else dataclasses.replace(self, augment="none")


def probe_images() -> list:
    """Three small synthetic pictures (a gradient, stripes, a disc) for export checks."""
    from PIL import Image

    y, x = np.mgrid[0:48, 0:64]
    gradient = np.stack([x * 4, y * 5, (x + y) * 2], -1)
    stripes = np.stack([(x // 8 % 2) * 255, (y // 6 % 2) * 200, np.full_like(x, 90)], -1)
    disc = np.where(((x - 32) ** 2 + (y - 24) ** 2 < 300)[..., None], [250, 40, 40], [20, 90, 200])
    return [Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB") for a in (gradient, stripes, disc)]


@register_task("image-classification")
class ImageClassification:
    pipeline_task = "image-classification"
    default_model = "mobilenet-v2"
    model_class = "AutoModelForImageClassification"
    peft_task_type = None  # PEFT has no image task type; its image-classification guide wraps the model in a plain PeftModel
    trains_output_head = True
    tunes_on_validation = False
    metrics = TextClassification.metrics
    predict_example = "photo.jpg"  # what the CLI's summary suggests to `tunesmith predict`
    throughput_unit = "images"  # what metrics["train"]["tokens"] counts here (text tasks: tokens)

    def __init__(self, label_names: list[str], image_column: str = "path", label_column: str = "label", imbalance_ratio: float = 1.0,
                 augment: str = "none", crop_min_scale: float = 0.08, image_size: int | None = None):
        self.label_names = list(label_names)
        self.image_column, self.label_column = image_column, label_column
        self.imbalance_ratio = imbalance_ratio  # of the training labels; known only while training
        self.augment, self.crop_min_scale = augment, crop_min_scale  # training views; a loaded run only predicts
        self.image_size = image_size  # --image-size; None: the base model's own (a run folder's processor has it saved)
        self.classes = TextClassification(self.label_names, imbalance_ratio=imbalance_ratio)  # decoding and prediction columns
        self.cache: img.DecodedImages | None = None  # the training job's decoded images, shared by its encodes (refit too)
        self.keeps_decoded = False  # set by prepare: a prediction-only task decodes per call and keeps nothing

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        if raw.attrs.get("image_folder"):
            return "a folder of class folders holding images"
        if data_cfg.text_column:  # --text-column names a text: not an image table
            return None
        column = img.image_column_of(raw)
        return f"column '{column}' holds image file names" if column is not None else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["ImageClassification", Splits]:
        task_cfg = cfg.task
        data, splits = prepare_labeled_files(raw, sources, cfg, seed, img.IMAGE_FILES, task_cfg.image_column, img.undecodable)
        task = cls(data.label_names, data.text_column, data.label_column, data.imbalance_ratio, task_cfg.augment, task_cfg.crop_min_scale,
                   task_cfg.image_size)
        task.keeps_decoded = True
        if task_cfg.augment != "none":
            splits.notes.append(f"Training images are augmented ({task_cfg.augment}: {augment_words(task_cfg)}); --augment none to turn it off.")
        return task, splits

    @classmethod
    def from_record(cls, record: dict) -> "ImageClassification":
        return cls(record["label_names"], record.get("image_column", "path"), record.get("label_column", "label"),
                   image_size=record.get("image_size"))

    def record(self) -> dict:
        return {"label_names": self.label_names, "image_column": self.image_column, "label_column": self.label_column,
                "image_size": self.image_size}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return self.classes.default_metric(splits)

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        """The model's image processor with Pillow's backend (transformers would pick torchvision's where installed)."""
        from transformers import AutoConfig, AutoImageProcessor

        try:
            processor = AutoImageProcessor.from_pretrained(source, backend="pil", trust_remote_code=bool(getattr(model_cfg, "trust_remote_code", False)))
        except (OSError, ValueError, KeyError) as exc:
            if model_cfg is not None:  # a text model's folder has no image processor either: say what it is
                require_image_model(load_pretrained(AutoConfig, source, model_cfg), model_cfg.model)
            text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise TunesmithError(f"Could not load the image processor of '{source}' ({text}); an image model's folder needs its "
                                 f"preprocessor_config.json (save the processor with save_pretrained beside the model).") from None
        return with_image_size(processor, self.image_size) if self.image_size else processor

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForImageClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=len(self.label_names),
                                 id2label=dict(enumerate(self.label_names)), label2id={n: i for i, n in enumerate(self.label_names)})
        require_image_model(config, model_cfg.model)
        if self.image_size:
            require_any_size(config, model_cfg.model, self.image_size)
            config.image_size = self.image_size  # a conv net's modelling code does not read it: it records the input size
        set_dropout(config, model_cfg.dropout)
        config.problem_type = "single_label_classification"
        # the base model's head (ImageNet's 1,000 classes) gives way to a new one of the user's labels
        return load_pretrained(AutoModelForImageClassification, source, model_cfg, config=config, ignore_mismatched_sizes=True)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, processor, table: pd.DataFrame, max_length: int) -> ImageFeatures:
        """Decode the table's images (each file once per training job) at the processor's resize size."""
        steps = img.steps_from_processor(processor)
        if self.keeps_decoded and self.cache is not None and self.cache.steps == steps:
            cache = self.cache
        else:
            cache = img.DecodedImages(steps)
            check_steps(processor, steps)
            if self.keeps_decoded:
                self.cache = cache
        entries = cache.add_all(table["file"].tolist(), table["path"].tolist() if "path" in table else None)
        labels = table["label"].to_numpy(dtype=np.int64) if "label" in table else None
        return ImageFeatures(cache, entries, np.ones(len(table), dtype=np.int64), labels, self.augment, self.crop_min_scale)

    def collate(self, features: ImageFeatures, indices: list[int], pad_id: int) -> dict:
        """pixel_values of these examples. fit() collates a training step with gradients enabled; validation and
        prediction collate under torch.inference_mode (train/infer.py), so they get the processor's own view."""
        steps = features.images.steps
        arrays = [features.images[int(features.entries[i])] for i in indices]
        if torch.is_grad_enabled() and features.augment != "none":
            views = [img.augmented_view(a, steps, features.augment, features.crop_min_scale) for a in arrays]
        else:
            views = [img.eval_view(a, steps) for a in arrays]
        batch = {"pixel_values": img.pixel_values(views, steps)}
        if features.labels is not None:
            batch["labels"] = torch.as_tensor(features.labels[indices])
        return batch

    def target_count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed (not averaged) cross-entropy: the loop divides by the examples in the optimizer step."""
        return F.cross_entropy(output.logits.float(), labels, reduction="sum"), len(labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        return output.logits.float()

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        return classification_metrics(features.labels, outputs.argmax(-1), self.label_names, loss)

    def tune(self, outputs, features) -> dict:
        return {}

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        return self.classes.warnings(scores, split)

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        return self.classes.summary_lines(scores, split)

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        return predictions_with_paths(self.classes, outputs, table, self.label_names, with_inputs)

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        """As text classification's, with each image's `path` (None for an image given in memory)."""
        return records_with_paths(self.classes, outputs, table)

    def describe_prediction(self, record: dict) -> str:
        return self.classes.describe_prediction(record)

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """Run.predict's inputs: image files, folders of them, tables of paths, PIL images or uint8 arrays."""
        from PIL import Image

        if pairs is not None:
            raise TunesmithError("This run classifies images, one at a time; drop the second inputs (pairs).")
        single = isinstance(inputs, (str, Path, Image.Image, np.ndarray))
        files, shown = [], []
        for item in [inputs] if single else list(inputs):
            if isinstance(item, (Image.Image, np.ndarray)):
                files.append(item)
                shown.append(None)
                continue
            table, _ = self.read_inputs(item, None)
            files += table["file"].tolist()
            shown += table["path"].tolist()
        return pd.DataFrame({"file": files, "path": shown})

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(file, path[, label] table; the raw rows) of an image, a folder of images (class folders give labels) or a table of paths."""
        return read_file_inputs(path, data_cfg, img.IMAGE_FILES, column, self.image_column, self.label_column, self.label_names, with_labels)

    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame({"file": probe_images(), "path": [None] * 3})


def augment_words(task_cfg) -> str:
    if task_cfg.augment == "flip":
        return "a horizontal flip half the time"
    return f"a random resized crop of {task_cfg.crop_min_scale:g}-1 of the area, then a horizontal flip half the time"


def check_steps(processor, steps: img.ImageSteps) -> None:
    """Our reading of the processor must give its own pixel values (on a small odd-sized picture), or the
    fine-tuned model would see other inputs than `pipeline(...)` gives it; a processor whose rules we do
    not reproduce is refused in one sentence instead."""
    from PIL import Image

    y, x = np.mgrid[0:45, 0:70]
    picture = Image.fromarray(np.stack([x * 3, y * 5, (x * y) % 256], -1).astype(np.uint8), "RGB")
    ours = img.pixel_values([img.eval_view(img.resized(picture, steps), steps)], steps)
    theirs = torch.as_tensor(np.asarray(processor(images=picture, return_tensors="np")["pixel_values"]), dtype=torch.float32)
    if ours.shape != theirs.shape or float((ours - theirs).abs().max()) > 1e-3:
        raise TunesmithError(f"tunesmith does not reproduce the preprocessing of this model's {type(processor).__name__} (its pixel values "
                             f"differ from ours on a test picture); use a model with a standard image processor (resize, center crop, normalise).")


def with_image_size(processor, side: int):
    """The processor for a side x side input (--image-size): its crop becomes side x side and its resize
    scales by the same factor (mobilenet-v2's 256 -> 224 crop becomes 110 -> 96 at 96), so the run folder's
    saved processor gives `pipeline(...)` the pixels the model trained on. Applying it twice changes nothing."""
    size, crop = img.size_entries(getattr(processor, "size", None)), img.size_entries(getattr(processor, "crop_size", None))
    height = img.steps_from_processor(processor).size[0]
    if type(processor).__name__.startswith("ConvNext") and "shortest_edge" in size:  # its crop_pct rule scales by itself
        size = {"shortest_edge": side}
    elif "shortest_edge" in size:
        size = {"shortest_edge": max(side, round(size["shortest_edge"] * side / height))}
    else:
        size = {"height": max(side, round(size["height"] * side / height)), "width": max(side, round(size["width"] * side / height))}
    changes = {"size": size}
    if getattr(processor, "do_center_crop", False) and "height" in crop:
        changes["crop_size"] = {"height": side, "width": side}
    elif "height" in size:  # no crop: the resize is the model's input
        changes["size"] = {"height": side, "width": side}
    return type(processor)(**dict(processor.to_dict(), **changes))


def require_any_size(config, name: str, side: int) -> None:
    """A vision transformer's position embeddings fit the size it was trained at; a convolutional network takes any."""
    trained = getattr(config, "image_size", None)
    if getattr(config, "patch_size", None) is not None and isinstance(trained, int) and trained != side:
        raise TunesmithError(f"The base model '{name}' (model type '{config.model_type}') cuts {trained}x{trained} images into fixed patches, so it "
                             f"cannot take --image-size {side}; drop --image-size, or use a convolutional backbone (mobilenet-v2, efficientnet-lite0).")


def require_image_model(config, name: str) -> None:
    """A base model transformers builds an image classifier from (its own classes, or a model's code through
    auto_map with --trust-remote-code), or one sentence saying what it is instead."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES

    if config.model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES or "AutoModelForImageClassification" in (getattr(config, "auto_map", None) or {}):
        return
    raise TunesmithError(f"The base model '{name}' (model type '{config.model_type}') is not one transformers builds an image classifier from; "
                         f"pass --model with an image model (mobilenet-v2, see `tunesmith models`; a local image-classification folder; or a hub "
                         f"name such as google/vit-base-patch16-224).")
