"""The image peer: the Hugging Face Trainer the way transformers' run_image_classification.py runs it.

    python bench/peer_image.py TRAIN.csv TEST.csv EPOCHS OUT.json --model MODEL_FOLDER [options]

TRAIN/TEST: CSV files with a `path` column (relative to the CSV's folder, or absolute) and a `label`
column, as the bundled fashion-mnist split has them. What run_image_classification.py does and this
does too: `AutoImageProcessor` from the model folder; `size` is the processor's `size["shortest_edge"]`
when it has one (mobilenet-v2: 256), else (height, width), so that the example trains and evaluates at
256 x 256 where the processor's own crop (and tunesmith) is 224 x 224 (`--image-size 224` changes
that); train transforms RandomResizedCrop(size) + RandomHorizontalFlip + ToTensor + Normalize on the
RGB image as decoded, eval transforms Resize(size) + CenterCrop(size) + ToTensor + Normalize (written
out below with PIL, numpy and torch in torchvision's own arithmetic: torchvision must never be
imported here); each image decoded from its file at every access (`pil_loader`, the `set_transform`
way: nothing cached between epochs); `AutoModelForImageClassification` with the dataset's labels
and `ignore_mismatched_sizes=True` (the ImageNet head gives way to a new one); `remove_unused_columns=False`;
the example's `collate_fn` (stack pixel_values, labels as a tensor); the Trainer's defaults (AdamW,
linear decay, no warmup, no weight decay, clipping at 1, dataloader in the main process);
`trainer.save_model()`; then `trainer.predict` on the test file, scored with scikit-learn (accuracy,
macro-F1). Departures from the example: the data come from CSV files instead of `load_dataset`
(the same decode-per-access cost, without Arrow), labels are the sorted label names of train and test
(as a ClassLabel feature lists them), no checkpoints during training (the example: every 500 steps;
tunesmith writes one at each epoch end), no logging or progress bar, eval batch 64 (the example: 8).
--bf16 adds `bf16=True, use_cpu=True` (CPU bf16 autocast). tunesmith is never imported here (its import
time would count against the peer).
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from transformers import (AutoConfig, AutoImageProcessor, AutoModelForImageClassification, Trainer,  # noqa: E402
                          TrainingArguments, set_seed)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("train"), p.add_argument("test"), p.add_argument("epochs", type=float), p.add_argument("out")
    p.add_argument("--model", required=True, help="HF image classification folder (the benchmark passes tunesmith's mobilenet-v2 folder)")
    p.add_argument("--batch-size", type=int, default=8, help="per-device train batch (the TrainingArguments default: 8)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None,
                   help="square side instead of the example's rule (size['shortest_edge'], or height and width)")
    p.add_argument("--bf16", action="store_true", help="bf16=True, use_cpu=True: the Trainer's CPU bf16 autocast")
    p.add_argument("--output-dir", default=None, help="where trainer.save_model() writes (default: OUT.json's name + '.model')")
    return p.parse_args()


# -- torchvision's transforms, in its arithmetic, on PIL images --------------------------------------
def example_size(processor) -> tuple[int, int]:
    """run_image_classification.py: size["shortest_edge"] when there is one, else (height, width)."""
    size = processor.size
    if "shortest_edge" in size and size["shortest_edge"]:
        return size["shortest_edge"], size["shortest_edge"]
    return size["height"], size["width"]


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Resize(int): the short side to `size`, the long side int(size * long / short), bilinear (PIL's, which antialiases)."""
    width, height = image.size
    short, long = min(width, height), max(width, height)
    if short == size:
        return image
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if width <= height else (new_long, size)
    return image.resize((new_w, new_h), Image.BILINEAR)


def center_crop(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """CenterCrop: torchvision's rounding (int(round(...))), padding with zeros where the image is smaller."""
    crop_h, crop_w = size
    width, height = image.size
    if crop_w > width or crop_h > height:
        padded = Image.new(image.mode, (max(width, crop_w), max(height, crop_h)))
        padded.paste(image, ((max(width, crop_w) - width) // 2, (max(height, crop_h) - height) // 2))
        image, (width, height) = padded, padded.size
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


def random_resized_crop_box(width: int, height: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop.get_params: (top, left, h, w), from torch's global generator, ten tries then the center."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1]).item())
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,)).item()
            left = torch.randint(0, width - w + 1, size=(1,)).item()
            return top, left, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def to_normalised_tensor(image: Image.Image, mean, std) -> torch.Tensor:
    """ToTensor (uint8 HWC -> float CHW / 255) then Normalize ((x - mean) / std)."""
    array = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1).float().div(255)
    return (array - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


class ExampleTransforms:
    """The example's _train_transforms and _val_transforms for one processor."""

    def __init__(self, processor, image_size: int | None):
        self.size = (image_size, image_size) if image_size else example_size(processor)
        has_norm = hasattr(processor, "image_mean") and hasattr(processor, "image_std")
        self.mean = processor.image_mean if has_norm else [0.0, 0.0, 0.0]  # the example's Lambda(lambda x: x)
        self.std = processor.image_std if has_norm else [1.0, 1.0, 1.0]

    def train(self, image: Image.Image) -> torch.Tensor:
        top, left, h, w = random_resized_crop_box(*image.size)
        view = image.crop((left, top, left + w, top + h)).resize((self.size[1], self.size[0]), Image.BILINEAR)
        if torch.rand(1).item() < 0.5:  # RandomHorizontalFlip(p=0.5)
            view = view.transpose(Image.FLIP_LEFT_RIGHT)
        return to_normalised_tensor(view, self.mean, self.std)

    def eval(self, image: Image.Image) -> torch.Tensor:
        # Resize(size) with size an int resizes the short side; with (h, w) it warps to exactly that
        view = resize_short_side(image, self.size[0]) if self.size[0] == self.size[1] else image.resize((self.size[1], self.size[0]), Image.BILINEAR)
        return to_normalised_tensor(center_crop(view, self.size), self.mean, self.std)


def pil_loader(path: str) -> Image.Image:
    with open(path, "rb") as f:
        return Image.open(f).convert("RGB")


class ImageTable(torch.utils.data.Dataset):
    """A CSV of path,label whose rows decode and transform at each access (the example's set_transform)."""

    def __init__(self, csv: str, label_to_id: dict, transform):
        table = pd.read_csv(csv)
        base = Path(csv).resolve().parent
        self.files = [str(p if Path(p).is_absolute() else base / p) for p in table["path"]]
        self.labels = [label_to_id[str(label)] for label in table["label"]]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.transform(pil_loader(self.files[i])), "labels": self.labels[i]}


def collate_fn(examples):
    """run_image_classification.py's collate_fn."""
    pixel_values = torch.stack([example["pixel_values"] for example in examples])
    labels = torch.tensor([example["labels"] for example in examples])
    return {"pixel_values": pixel_values, "labels": labels}


def main():
    args = parse_args()
    label_list = sorted({str(label) for path in (args.train, args.test) for label in pd.read_csv(path)["label"]})
    label_to_id = {label: i for i, label in enumerate(label_list)}

    set_seed(args.seed)
    config = AutoConfig.from_pretrained(args.model, num_labels=len(label_list), label2id={label: str(i) for label, i in label_to_id.items()},
                                        id2label={str(i): label for label, i in label_to_id.items()}, finetuning_task="image-classification")
    model = AutoModelForImageClassification.from_pretrained(args.model, config=config, ignore_mismatched_sizes=True)
    processor = AutoImageProcessor.from_pretrained(args.model, backend="pil")  # never torchvision's backend
    transforms = ExampleTransforms(processor, args.image_size)
    train_set = ImageTable(args.train, label_to_id, transforms.train)
    test_set = ImageTable(args.test, label_to_id, transforms.eval)

    extra = {"bf16": True, "use_cpu": True} if args.bf16 else {}
    output_dir = args.output_dir or str(Path(args.out).with_suffix(".model"))
    training_args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed, report_to=[], save_strategy="no",
        logging_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, remove_unused_columns=False, **extra)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, processing_class=processor, data_collator=collate_fn)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    trainer.save_model()

    started = time.perf_counter()
    prediction = trainer.predict(test_set)
    predicted = np.argmax(prediction.predictions, axis=1)
    gold = np.asarray(test_set.labels)
    eval_s = time.perf_counter() - started
    images = len(train_set) * args.epochs
    result = {"side": "peer", "task": "image-classification", "bf16": args.bf16, "image_size": list(transforms.size),
              "n_train": len(train_set), "n_test": len(test_set), "labels": len(label_list), "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "steps": trainer.state.global_step,
              "train_s": round(train_s, 2), "eval_s": round(eval_s, 2), "job_s_inside": round(time.perf_counter() - STARTED, 2),
              "accuracy": float(accuracy_score(gold, predicted)), "macro_f1": float(f1_score(gold, predicted, average="macro")),
              "examples": images, "examples_per_second": round(images / train_s, 2), "optimizer": training_args.optim.value,
              "torch_threads": torch.get_num_threads(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
