"""The image-classification task on a tiny random MobileNetV2: detection, the folder / CSV / JSONL layouts,
a whole run through the CLI (run folder, test_predictions.csv with paths, predict on files and folders,
plain transformers' pipeline answering as tunesmith does), every bad input as one sentence, the decode
cache (one decode per file over epochs and refit), augmentation under a seed, and methods on a conv net."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import tunesmith
from tunesmith.cli import main
from tunesmith.config import DataConfig
from tunesmith.data import images as img
from tunesmith.data.sources import read_data_file
from tunesmith.tasks import choose_task

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}  # each class has its colour
FORMATS = (".png", ".jpg", ".bmp", ".webp", ".tiff", ".gif")
OPTIONS = {"epochs": 12, "batch_size": 16, "lr": 5e-3, "eval_batch_size": 64, "early_stopping": 0, "checkpoint_every": 0,
           "threads": 1, "refit": "off", "precision": "fp32", "augment": "flip"}  # one thread: on a shared 2-core machine two are slower
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]


def build_tiny_image_model(folder: Path) -> Path:
    """A MobileNetV2 of a third the width on 32x32 inputs, with a 10-class head (the 'ImageNet' head the task replaces)."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification, MobileNetV2ImageProcessorPil

    config = MobileNetV2Config(image_size=32, depth_multiplier=0.35, finegrained_output=False, classifier_dropout_prob=0.1, tf_padding=False,
                               num_labels=10, id2label={i: f"imagenet-{i}" for i in range(10)})
    torch.manual_seed(0)
    MobileNetV2ForImageClassification(config).save_pretrained(folder, safe_serialization=True)
    MobileNetV2ImageProcessorPil(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def toy_image(label: str, rng) -> Image.Image:
    """A noisy picture of the class's colour, of a random size and aspect, with a grey rectangle somewhere."""
    width, height = int(rng.integers(28, 64)), int(rng.integers(28, 64))
    pixels = np.array(COLOURS[label], dtype=np.float64) + rng.normal(0, 25, (height, width, 3))
    top, left = int(rng.integers(0, height // 2)), int(rng.integers(0, width // 2))
    pixels[top:top + height // 3, left:left + width // 3] = 128
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def write_class_folders(root: Path, per_class: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for label in COLOURS:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            toy_image(label, rng).save(root / label / f"{label}_{i}{FORMATS[i % len(FORMATS)]}")
    return root


@pytest.fixture(scope="module")
def tiny_image_model(tmp_path_factory) -> Path:
    return build_tiny_image_model(tmp_path_factory.mktemp("tiny-mobilenet"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("photos")
    return {"train": write_class_folders(root / "train", 20, seed=0), "test": write_class_folders(root / "test", 6, seed=1)}


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, photos, tiny_image_model) -> Path:
    """`tunesmith train photos/ --test photos_test/` through the CLI."""
    out = tmp_path_factory.mktemp("runs") / "photos"
    code = main(["train", str(photos["train"]), "--test", str(photos["test"]), "--model", str(tiny_image_model), "--out", str(out),
                 "--method", "full", *FLAGS])
    assert code == 0
    return out


def assert_nothing_finished(out: Path) -> None:
    record = out / "run.json"
    assert not (record.is_file() and json.loads(record.read_text()).get("status") == "done")
    assert not any((out / name).exists() for name in ("metrics.json", "model.safetensors", "test_predictions.csv"))


# -- detection and layouts ------------------------------------------------------------------------

def test_auto_detects_a_folder_and_a_table_of_image_paths(photos, tmp_path):
    raw = read_data_file(photos["train"], role="training")
    assert choose_task("auto", raw, DataConfig()) == (tunesmith.tasks.TASKS["image-classification"], "a folder of class folders holding images")
    table = pd.DataFrame({"file": ["a.jpg", "b.png", "c.jpeg"], "class": ["x", "y", "x"]})
    cls, why = choose_task("auto", table, DataConfig())
    assert cls.name == "image-classification" and why == "column 'file' holds image file names"
    reviews = pd.DataFrame({"text": ["a lovely film", "dull and flat", "so good"], "label": ["pos", "neg", "pos"]})
    assert choose_task("auto", reviews, DataConfig())[0].name == "text-classification"
    assert choose_task("auto", table, DataConfig(text_column="file"))[0].name != "image-classification"


def test_csv_and_jsonl_tables_train_with_paths_relative_to_their_folder(tmp_path, tiny_image_model):
    data = write_class_folders(tmp_path / "data" / "pictures", 6, seed=4)
    rows = pd.DataFrame([{"image": f"pictures/{p.relative_to(data).as_posix()}", "kind": p.parent.name} for p in sorted(data.rglob("*.*"))])
    rows.to_csv(tmp_path / "data" / "images.csv", index=False)
    rows.to_json(tmp_path / "data" / "images.jsonl", orient="records", lines=True)
    for name in ("images.csv", "images.jsonl"):
        run = tunesmith.finetune(tmp_path / "data" / name, out=str(tmp_path / f"run-{name}"), model=str(tiny_image_model), **dict(OPTIONS, epochs=1))
        assert run.record["task"] == "image-classification"
        assert (run.record["image_column"], run.record["label_column"], run.label_names) == ("image", "kind", ["blue", "green", "red"])
    (tmp_path / "data" / "tables").mkdir()
    rows.assign(image="../" + rows["image"]).to_csv(tmp_path / "data" / "tables" / "up.csv", index=False)
    with pytest.raises(tunesmith.errors.TunesmithError, match="Line 2 of .*up.csv' lists '../pictures/.*', which is outside the data folder"):
        tunesmith.finetune(tmp_path / "data" / "tables" / "up.csv", out=str(tmp_path / "escaping"), model=str(tiny_image_model), **OPTIONS)


# -- a whole run ----------------------------------------------------------------------------------

def test_cli_run_folder_is_complete_and_learned_the_colours(cli_run, photos):
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "config.yaml", "metrics.json", "curves.png",
                 "test_predictions.csv", "environment.json", "run.json"):
        assert (cli_run / name).is_file(), name
    record = json.loads((cli_run / "run.json").read_text())
    assert record["status"] == "done" and record["task"] == "image-classification" and record["label_names"] == ["blue", "green", "red"]
    metrics = json.loads((cli_run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.8  # chance is 1/3: fails if training, the head or the preprocessing is broken
    assert set(metrics["test"]["per_class"]) == {"blue", "green", "red"} and metrics["test"]["examples"] == 18
    assert metrics["train"]["tokens"] == 12 * metrics["train"]["examples"]  # an image counts 1 in the "tokens" of throughput
    assert metrics["train"]["unit"] == "images"  # and the summary says "images/s"
    config = json.loads((cli_run / "config.json").read_text())
    assert config["id2label"] == {"0": "blue", "1": "green", "2": "red"}  # the 10-class head was replaced
    predictions = pd.read_csv(cli_run / "test_predictions.csv")
    assert len(predictions) == 18 and list(predictions.columns[:4]) == ["path", "label", "prediction", "confidence"]
    assert all(Path(p).is_file() and Path(p).parent.name == label for p, label in zip(predictions["path"], predictions["label"]))
    assert (predictions["label"] == predictions["prediction"]).mean() == pytest.approx(metrics["test"]["accuracy"])


def test_predict_on_files_and_a_folder_through_the_cli(cli_run, photos, capsys):
    files = sorted(str(p) for p in (photos["test"] / "red").iterdir())[:2] + [str(next((photos["test"] / "blue").iterdir()))]
    assert main(["predict", str(cli_run), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[-1] for line in lines] == files
    assert [line.split("\t")[0] for line in lines].count("red") >= 1
    assert main(["predict", str(cli_run), str(photos["test"]), "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(answers) == 18 and all(Path(a["path"]).is_file() for a in answers)
    assert np.mean([Path(a["path"]).parent.name == a["label"] for a in answers]) >= 0.8
    scored = cli_run.parent / "scored.csv"
    assert main(["predict", str(cli_run), "--file", str(photos["test"]), "--out", str(scored)]) == 0
    assert {"path", "label", "prediction", "confidence", "p(red)"} <= set(pd.read_csv(scored).columns)
    assert capsys.readouterr().out.strip() == f"Wrote 18 predictions to {scored}."
    assert main(["eval", str(cli_run), str(photos["test"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.8


def test_pipeline_on_the_run_folder_answers_like_tunesmith(cli_run, photos):
    from transformers import pipeline

    files = sorted(str(p) for p in photos["test"].rglob("*.png")) + sorted(str(p) for p in photos["test"].rglob("*.jpg"))
    ours = tunesmith.load(cli_run, precision="fp32").predict(files)
    theirs = pipeline("image-classification", model=str(cli_run))(files, top_k=3)
    for mine, answer in zip(ours, theirs):
        assert answer[0]["label"] == mine["label"]
        for entry in answer:
            assert entry["score"] == pytest.approx(mine["scores"][entry["label"]], abs=1e-4)


def test_python_predict_takes_paths_pil_images_and_arrays(cli_run, photos):
    run = tunesmith.load(cli_run, precision="fp32")
    path = sorted((photos["test"] / "green").iterdir())[0]
    with Image.open(path) as opened:
        picture = opened.convert("RGB")
    records = run.predict([str(path), picture, np.asarray(picture)])
    assert records[0]["path"] == str(path) and records[1]["path"] is None
    assert records[0]["label"] == records[1]["label"] == records[2]["label"]
    assert records[0]["scores"] == pytest.approx(records[1]["scores"], abs=1e-6)
    with pytest.raises(tunesmith.errors.TunesmithError, match="does not exist"):
        run.predict(["nowhere.jpg"])



# -- --image-size and the conv net's learning rate ---------------------------------------------------

def test_image_size_trains_at_that_side_and_the_saved_processor_gives_pipeline_the_same(tmp_path, photos, tiny_image_model):
    from transformers import AutoConfig, AutoImageProcessor, pipeline

    options = {k: v for k, v in OPTIONS.items() if k != "lr"}  # the conv net's own default for full
    run = tunesmith.finetune(photos["train"], out=str(tmp_path / "small"), model=str(tiny_image_model), method="full", image_size=24,
                             **dict(options, epochs=2))
    assert run.record["image_size"] == 24 and run.record["lr"] == 1e-3  # conv_stages.CONV_LR, not a transformer's 5e-5
    processor = AutoImageProcessor.from_pretrained(run.path)
    assert processor.crop_size == {"height": 24, "width": 24} and processor.size == {"shortest_edge": 27}  # 36 -> 32 scaled to 24
    assert AutoConfig.from_pretrained(run.path).image_size == 24
    picture = Image.open(sorted((photos["test"] / "blue").iterdir())[0])
    assert processor(picture, return_tensors="pt")["pixel_values"].shape == (1, 3, 24, 24)
    files = sorted(str(p) for p in photos["test"].rglob("*.png"))
    ours = tunesmith.load(run.path, precision="fp32").predict(files)
    theirs = pipeline("image-classification", model=str(run.path))(files, top_k=1)
    assert [a[0]["label"] for a in theirs] == [o["label"] for o in ours]
    assert [a[0]["score"] for a in theirs] == pytest.approx([o["score"] for o in ours], abs=1e-4)


def test_image_size_is_refused_for_a_vision_transformer_in_one_sentence(tmp_path, photos, capsys):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    vit = tmp_path / "tiny-vit"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ViTForImageClassification(config).save_pretrained(vit)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit)
    out = tmp_path / "run"
    code = main(["train", str(photos["train"]), "--model", str(vit), "--out", str(out), "--image-size", "64", *FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and "cuts 32x32 images into fixed patches, so it cannot take --image-size 64; drop --image-size" in err
    assert "Traceback" not in err
    assert_nothing_finished(out)


def test_the_learning_rate_default_follows_the_model_family(tiny_image_model, tiny_model):
    from transformers import AutoModelForImageClassification, AutoModelForSequenceClassification

    from tunesmith.config import RunConfig
    from tunesmith.methods import resolve_learning_rate

    conv = AutoModelForImageClassification.from_pretrained(tiny_image_model)
    text = AutoModelForSequenceClassification.from_pretrained(tiny_model)
    chosen = lambda method, model, **given: resolve_learning_rate(RunConfig.from_dict(dict(given, data="x.csv", method=method)), model).train.lr  # noqa: E731
    assert (chosen("full", conv), chosen("freeze", conv), chosen("head", conv), chosen("lora", conv)) == (1e-3, 1e-3, 3e-3, 1e-3)
    assert (chosen("full", text), chosen("freeze", text), chosen("head", text)) == (5e-5, 5e-5, 3e-3)
    assert chosen("full", conv, lr=2e-4) == 2e-4  # --lr wins

# -- bad inputs -----------------------------------------------------------------------------------

def bad_folder(root: Path, case: str) -> list[str]:
    """The training arguments of one bad input."""
    good = write_class_folders(root / "good", 4, seed=2)
    if case == "empty-class":
        (good / "purple").mkdir()
        return [str(good)]
    if case == "one-class":
        write_class_folders(root / "one", 4, seed=3)
        for label in ("green", "blue"):
            for f in (root / "one" / label).iterdir():
                f.unlink()
            (root / "one" / label).rmdir()
        return [str(root / "one")]
    if case == "no-images":
        (root / "none" / "docs").mkdir(parents=True)
        (root / "none" / "docs" / "readme.txt").write_text("hello")
        return [str(root / "none")]
    rows = pd.DataFrame({"path": [p.relative_to(good).as_posix() for p in sorted(good.rglob("*.*"))],
                         "label": [p.parent.name for p in sorted(good.rglob("*.*"))]})
    if case == "missing-path":
        rows.loc[3, "path"] = "red/gone.png"
    elif case == "escaping-path":
        rows.loc[5, "path"] = "../../etc/passwd.png"
    elif case == "absolute-outside":
        (root / "outside.png").write_bytes((good / rows["path"][0]).read_bytes())
        rows.loc[2, "path"] = str(root / "outside.png")
    elif case == "undecodable":
        (good / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        return [str(good)]
    rows.to_csv(good / "images.csv", index=False)
    return [str(good / "images.csv")]


@pytest.mark.parametrize("case, expected", [
    ("empty-class", "The class folder '.*purple' of '.*good' holds no JPEG, PNG, WebP, BMP, GIF or TIFF images; add images or remove that folder."),
    ("one-class", "has a single class folder \\('red'\\); a classifier needs at least two"),
    ("no-images", "is a folder with no images in class sub-folders; for image classification put each class's images"),
    ("missing-path", "1 of 12 image paths in '.*images.csv' name no file: line 5 \\('red/gone.png'\\)"),
    ("escaping-path", "Line 7 of '.*images.csv' lists '../../etc/passwd.png', which is outside the data folder"),
    ("absolute-outside", "Line 4 of '.*images.csv' lists '.*outside.png', which is outside the data folder"),
    ("undecodable", "1 of 13 training images cannot be decoded: '.*red/broken.jpg' \\(.*\\); fix or remove them, or pass --skip-bad-files"),
])
def test_bad_image_input_is_one_sentence_and_nothing_finished(case, expected, tmp_path, tiny_image_model, capsys):
    import re

    out = tmp_path / "run"
    code = main(["train", *bad_folder(tmp_path, case), "--model", str(tiny_image_model), "--out", str(out), *FLAGS])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and re.search(expected, errors[0]), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert_nothing_finished(out)



def test_a_class_folder_linked_in_from_elsewhere_is_followed(tmp_path, photos, tiny_image_model):
    """The user's own folder may gather classes by symbolic links; only a data file's cells are held to its folder."""
    folder = tmp_path / "gathered"
    folder.mkdir()
    for label in COLOURS:
        (folder / label).symlink_to(photos["train"] / label, target_is_directory=True)
    run = tunesmith.finetune(folder, out=str(tmp_path / "linked"), model=str(tiny_image_model), **dict(OPTIONS, epochs=1))
    assert run.label_names == ["blue", "green", "red"] and run.metrics["train"]["examples"] + run.metrics["validation"]["examples"] == 60

def test_skip_bad_files_trains_without_them_and_says_how_many(tmp_path, tiny_image_model, capsys):
    args = bad_folder(tmp_path, "undecodable")
    (Path(args[0]) / "blue" / "empty.png").write_bytes(b"")
    out = tmp_path / "run"
    assert main(["train", *args, "--model", str(tiny_image_model), "--out", str(out), "--skip-bad-files", *FLAGS, "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Skipped 2 of 14 training images that cannot be decoded (--skip-bad-files)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["examples"] + metrics["validation"]["examples"] == 12


def test_a_text_model_is_refused_for_images(tmp_path, photos, tiny_model, capsys):
    assert main(["train", str(photos["train"]), "--model", str(tiny_model), "--out", str(tmp_path / "run"), *FLAGS]) == 2
    assert "(model type 'bert') is not one transformers builds an image classifier from" in capsys.readouterr().err


# -- the decode cache and augmentation --------------------------------------------------------------

def test_each_file_decodes_once_over_epochs_and_refit(tmp_path, photos, tiny_image_model, monkeypatch):
    calls = Counter()
    real = img.decode_image
    monkeypatch.setattr(img, "decode_image", lambda source: calls.update([source]) or real(source))
    run = tunesmith.finetune(photos["train"], out=str(tmp_path / "run"), test=str(photos["test"]), model=str(tiny_image_model),
                             **dict(OPTIONS, epochs=3, refit="on", augment="crop-flip"))
    assert run.metrics["refit"] is not None and run.metrics["train"]["epochs"] >= 2  # two phases, several epochs each
    files = {str(p.resolve()) for p in photos["train"].rglob("*.*")} | {str(p.resolve()) for p in photos["test"].rglob("*.*")}
    assert set(calls) == files and set(calls.values()) == {1}  # 78 files, each decoded exactly once


def test_augmentation_follows_the_seed(tmp_path, photos, tiny_image_model):
    common = dict(OPTIONS, epochs=2, augment="crop-flip")
    first = tunesmith.finetune(photos["train"], out=str(tmp_path / "a"), model=str(tiny_image_model), **common).metrics
    again = tunesmith.finetune(photos["train"], out=str(tmp_path / "b"), model=str(tiny_image_model), **common).metrics
    other = tunesmith.finetune(photos["train"], out=str(tmp_path / "c"), model=str(tiny_image_model), **dict(common, augment="none")).metrics
    assert np.array(first["curves"]["losses"]) == pytest.approx(np.array(again["curves"]["losses"]), abs=1e-6)
    assert first["curves"]["losses"] != other["curves"]["losses"]


def test_collate_augments_training_steps_only(tmp_path, photos, tiny_image_model):
    from tunesmith.tasks.image_classification import ImageClassification

    task = ImageClassification(["blue", "green", "red"], augment="crop-flip")
    processor = task.load_preprocessor(str(tiny_image_model), None)
    files = sorted(str(p) for p in photos["test"].rglob("*.png"))
    features = task.encode(processor, pd.DataFrame({"file": files, "path": files}), 0)
    with torch.inference_mode():
        evaluated = [task.collate(features, [0, 1, 2], 0)["pixel_values"] for _ in range(2)]
    assert torch.equal(*evaluated) and evaluated[0].shape == (3, 3, 32, 32)
    torch.manual_seed(7)
    trained = task.collate(features, [0, 1, 2], 0)["pixel_values"]
    torch.manual_seed(7)
    assert torch.equal(trained, task.collate(features, [0, 1, 2], 0)["pixel_values"])
    assert not torch.equal(trained, evaluated[0])


# -- methods on a conv net ------------------------------------------------------------------------

def test_full_fine_tuning_trains_every_weight(tmp_path, photos, tiny_image_model):
    run = tunesmith.finetune(photos["train"], out=str(tmp_path / "full"), test=str(photos["test"]), model=str(tiny_image_model),
                             method="full", **OPTIONS)
    assert run.metrics["test"]["accuracy"] >= 0.8
    assert run.metrics["parameters"]["trainable"] == run.metrics["parameters"]["total"]


def test_bitfit_trains_the_biases_and_the_new_head_only(tmp_path, photos, tiny_image_model):
    from safetensors.torch import load_file

    run = tunesmith.finetune(photos["train"], out=str(tmp_path / "bitfit"), model=str(tiny_image_model), method="bitfit",
                             **dict(OPTIONS, epochs=2))
    base, tuned = load_file(tiny_image_model / "model.safetensors"), load_file(tmp_path / "bitfit" / "model.safetensors")
    weights = [k for k in base if k.endswith(".weight") and not k.startswith("classifier.")]
    biases = [k for k in base if k.endswith(".bias") and not k.startswith("classifier.")]
    assert weights and all(torch.equal(base[k], tuned[k]) for k in weights)  # frozen
    assert sum(not torch.equal(base[k], tuned[k]) for k in biases) > len(biases) // 2  # trained
    assert tuned["classifier.weight"].shape == (3, base["classifier.weight"].shape[1])  # the new 3-label head
    assert run.metrics["parameters"]["trainable"] < 0.1 * run.metrics["parameters"]["total"]


def test_lora_on_a_conv_net_reloads_and_loads_in_pipeline_as_it_predicted(tmp_path, photos, cli_run):
    """LoRA on the pointwise convs of a trained backbone (the full run, 3 labels) for 2 of its classes: the
    frozen BatchNorm layers keep the backbone's running statistics (the adapter does not save them), so the
    reloaded run predicts as the run itself did; base/ leaves out the backbone's own 3-label head, so
    pipeline(...) loads the adapter folder with the new 2-label one."""
    import pandas as pd
    from transformers import pipeline

    import shutil

    split = {}
    for role in ("train", "test"):
        split[role] = tmp_path / role
        for label in ("red", "blue"):
            shutil.copytree(photos[role] / label, split[role] / label)
    run = tunesmith.finetune(split["train"], out=str(tmp_path / "lora"), test=str(split["test"]), model=str(cli_run),
                             method="lora", **dict(OPTIONS, epochs=4))
    assert run.metrics["test"]["accuracy"] >= 0.9
    in_run = pd.read_csv(tmp_path / "lora" / "test_predictions.csv")
    assert set(in_run["prediction"]) == {"red", "blue"}
    reloaded = tunesmith.load(tmp_path / "lora", precision="fp32").predict(list(in_run["path"]))
    assert [p["label"] for p in reloaded] == list(in_run["prediction"])
    answers = pipeline("image-classification", model=str(tmp_path / "lora"))(list(in_run["path"]), top_k=1)
    assert [a[0]["label"] for a in answers] == list(in_run["prediction"])


def test_an_interrupted_augmented_run_resumes_to_the_same_weights(tmp_path, photos, tiny_image_model):
    """The crops and flips draw from torch's generator, which checkpoints restore: killed inside step 7 (3 steps
    an epoch; checkpoints at steps 3, 4 and 6) and resumed, a run ends bitwise where an unbroken one does."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    def train(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_FAULT"}
        env.update({"HF_HUB_OFFLINE": "1", **({"TUNESMITH_FAULT": fault} if fault else {})})
        flags = [f for f in FLAGS if not f.startswith(("--epochs", "--checkpoint-every", "--augment"))]
        command = [sys.executable, "-m", "tunesmith.cli", "train", str(photos["train"]), "--model", str(tiny_image_model), "--out", str(out),
                   *flags, "--epochs=3", "--checkpoint-every=4", "--augment=crop-flip", *extra]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert train(tmp_path / "whole").returncode == 0
    assert train(tmp_path / "broken", fault="kill-at=step:7").returncode == -9
    resumed = train(tmp_path / "broken", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    whole, broken = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "broken" / "model.safetensors")
    assert whole.keys() == broken.keys()
    statistics = {k for k in whole if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert len(statistics) > 100 and all(torch.equal(whole[k], broken[k]) for k in whole.keys() - statistics)  # every weight
    # and BatchNorm's running statistics, which checkpoints carry beside the parameters
    assert all(torch.equal(whole[k], broken[k]) for k in statistics)
