"""Every method with every task (issue 16, point 5), on the tiny random model, as PEFT's test tables
cross models and methods: each cell trains, scores with the task's own metrics, saves a folder
that loads back in tunesmith and in plain transformers (or peft), and predicts.

The tasks' toy data are learnable from word cues the tiny model's vocabulary holds (conftest.py);
per task, `compare` shows the task's metrics, `export --merge` folds a LoRA adapter exactly, and a
run killed inside a step resumes to the same weights bit for bit.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import tunesmith
import tunesmith.tasks.multi_label  # noqa: F401  (registers the tasks)
import tunesmith.tasks.question_answering  # noqa: F401
import tunesmith.tasks.regression  # noqa: F401
import tunesmith.tasks.token_classification  # noqa: F401
from conftest import FILLER, NEGATIVE, POSITIVE, toy_reviews
from test_pairs import pairs

METHODS = [("full", {}), ("freeze", {}), ("head", {}), ("bitfit", {}), ("gradual", {}), ("lora", {}), ("dora", {}),
           ("ia3", {}), ("adapter", {}), ("full", {"layer_lr_decay": 0.8})]
ADAPTER_METHODS = {"lora", "dora", "ia3"}


def words(rng, n):
    return rng.sample(FILLER, n)


def regression_rows(n, rng):
    rows = []
    for i in range(n):
        positive = i % 2
        text = words(rng, 4) + [rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(text)
        rows.append({"review": " ".join(text), "score": round((1.0 if positive else -1.0) + rng.uniform(-0.3, 0.3), 4)})
    return pd.DataFrame(rows)


def multi_label_rows(n, rng):
    rows = []
    for i in range(n):
        kinds = [["pos"], ["neg"], ["pos", "neg"]][i % 3]
        text = words(rng, 4) + [rng.choice(POSITIVE if k == "pos" else NEGATIVE) for k in kinds]
        rng.shuffle(text)
        rows.append({"review": " ".join(text), "labels": ";".join(kinds)})
    return pd.DataFrame(rows)


def ner_rows(n, rng):
    rows = []
    for _ in range(n):
        tokens = words(rng, 5) + [rng.choice(POSITIVE), rng.choice(NEGATIVE)]
        rng.shuffle(tokens)
        tags = ["B-POS" if t in POSITIVE else "B-NEG" if t in NEGATIVE else "O" for t in tokens]
        rows.append({"tokens": tokens, "tags": tags})
    return pd.DataFrame(rows)


def qa_rows(n, rng):
    rows = []
    for i in range(n):
        answer = rng.choice(POSITIVE)
        context = words(rng, 4) + [answer] + words(rng, 3)
        text = " ".join(context)
        rows.append({"id": f"q{i}", "question": "which is good", "context": text, "answer_text": answer,
                     "answer_start": text.index(f" {answer} ") + 1})
    return pd.DataFrame(rows)


# task -> (file suffix, rows(n, rng), two inputs for Run.predict as (inputs, pairs))
TASKS = {
    "text-classification": (".csv", lambda n, rng: toy_reviews(n, seed=rng.randint(0, 99)), (["a great film", "a dull film"], None)),
    "text-pairs": (".csv", lambda n, rng: pairs(n, seed=rng.randint(0, 99)), (["the film", "the film"], ["it is great", "it is awful"])),
    "regression": (".csv", regression_rows, (["a great film", "a dull film"], None)),
    "multi-label": (".csv", multi_label_rows, (["a great film", "a dull but lovely film"], None)),
    "token-classification": (".jsonl", ner_rows, (["the film was great and the plot dull"], None)),
    "question-answering": (".csv", qa_rows, (["which is good"], ["the film was superb and the plot dull"])),
}
TASK_NAME = {"text-pairs": "text-classification"}  # a pair run is text classification of two texts


def write(folder, task: str, n: int = 64, seed: int = 0):
    suffix, rows, _ = TASKS[task]
    path = folder / f"{task}{suffix}"
    frame = rows(n, random.Random(seed))
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False)
    return path


def options(tiny_options, **extra):
    return dict(tiny_options, epochs=1, batch_size=16, **extra)


@pytest.fixture(scope="module")
def data_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task-data")
    return {task: write(folder, task) for task in TASKS}


def plain_loader(task):
    import transformers

    return getattr(transformers, task.model_class)


@pytest.mark.parametrize("method, extra", METHODS, ids=[m + ("-layer-lr" if e else "") for m, e in METHODS])
@pytest.mark.parametrize("task_id", list(TASKS))
def test_every_method_trains_saves_loads_and_predicts_every_task(task_id, method, extra, data_files, tiny_options, tmp_path):
    run = tunesmith.finetune(str(data_files[task_id]), out=str(tmp_path / "run"), method=method, **options(tiny_options, **extra))
    task = run.task
    assert task.name == TASK_NAME.get(task_id, task_id), "--task auto inferred the task from the data"
    first = task.metrics[0].name
    assert run.metrics["validation"][first] is not None and run.metrics["task"] == task.name
    inputs, second = TASKS[task_id][2]
    predicted = run.predict(inputs, pairs=second) if second else run.predict(inputs)
    assert len(predicted) == len(inputs)
    reloaded = tunesmith.load(run.path)
    again = reloaded.predict(inputs, pairs=second) if second else reloaded.predict(inputs)
    assert again == predicted
    if method in ADAPTER_METHODS:
        assert (run.path / "adapter_config.json").is_file() and (run.path / "base" / "config.json").is_file()
    if method != "adapter":  # bottleneck adapters are tunesmith's own format, loaded by tunesmith
        model = plain_loader(task).from_pretrained(str(run.path))
        assert model.config.id2label == task_labels(run) or task.name in ("regression", "question-answering")


def task_labels(run) -> dict:
    return {i: name for i, name in enumerate(run.record.get("label_names") or [])}


@pytest.mark.parametrize("task_id", [t for t in TASKS if t != "text-classification"])  # classification: test_compare.py
def test_compare_shows_the_tasks_own_metrics(task_id, data_files, tiny_options, tmp_path):
    from tunesmith.config import RunConfig
    from tunesmith.compare import compare

    base = RunConfig.from_dict({"data": str(data_files[task_id]), "out": str(tmp_path / "cmp"), **options(tiny_options)})
    result = compare(base, ["full", "lora"], {}, console=None)
    assert not result.failed
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    task = tunesmith.load(tmp_path / "cmp" / "full").task
    assert f"val_{task.metrics[0].name}" in table.columns and table[f"val_{task.metrics[0].name}"].notna().all(), table.columns


@pytest.mark.parametrize("task_id", [t for t in TASKS if t != "text-classification"])
def test_a_lora_run_of_every_task_merges_into_a_plain_model(task_id, data_files, tiny_options, tmp_path):
    run = tunesmith.finetune(str(data_files[task_id]), out=str(tmp_path / "run"), method="lora", **options(tiny_options, lr=1e-2))
    result = run.export(tmp_path / "merged", merge=True)  # export checks the merged outputs against the adapter's
    assert result["form"] == "plain" and (tmp_path / "merged" / "model.safetensors").is_file()
    plain_loader(run.task).from_pretrained(str(tmp_path / "merged"))


RESUME_FLAGS = ["--epochs", "2", "--val-fraction", "0.2", "--refit", "off", "--batch-size", "8", "--lr", "3e-3", "--early-stopping", "0",
                "--checkpoint-every", "3", "--threads", "1", "--seed", "7", "--precision", "fp32"]


@pytest.mark.parametrize("task_id", ["regression", "multi-label", "token-classification", "question-answering"])
def test_a_killed_run_of_every_task_resumes_to_the_same_weights(task_id, data_files, tiny_model, tmp_path):
    def train(out, *extra, fault=None):
        env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_FAULT"}
        env["HF_HUB_OFFLINE"] = "1"
        if fault:
            env["TUNESMITH_FAULT"] = fault
        command = [sys.executable, "-m", "tunesmith.cli", "train", str(data_files[task_id]), "--model", str(tiny_model),
                   "--out", str(out), *RESUME_FLAGS, *extra]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    reference = train(tmp_path / "reference")
    assert reference.returncode == 0, reference.stderr[-2000:]
    killed = train(tmp_path / "killed", fault="kill-at=step:5")
    assert killed.returncode != 0
    resumed = train(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("reference", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((tmp_path / "killed" / "metrics.json").read_text())["validation"] == \
        json.loads((tmp_path / "reference" / "metrics.json").read_text())["validation"]


# -- images and audio: the methods on a conv net and on Whisper's encoder (issue 17, point 5) ---------------

MEDIA_METHODS = {  # bottleneck adapters and IA3 need attention and feed-forward blocks, which a conv net has not
    "image-classification": [m for m in METHODS if m[0] not in ("ia3", "adapter")],
    "audio-classification": METHODS,
}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    import test_audio_classification as audio
    import test_image_classification as image

    root = tmp_path_factory.mktemp("media")
    return {"image-classification": (image.build_tiny_image_model(root / "mobilenet"), image.write_class_folders(root / "photos", 8, seed=0),
                                     [str(next((root / "photos" / "red").iterdir()))]),
            "audio-classification": (audio.build_tiny_whisper(root / "whisper"), audio.write_class_folders(root / "clips", 8, seed=0),
                                     [str(next((root / "clips" / "high").iterdir()))])}


@pytest.mark.parametrize("task_id, method, extra", [(t, m, e) for t, methods in MEDIA_METHODS.items() for m, e in methods],
                         ids=[f"{t.split('-')[0]}-{m}" + ("-layer-lr" if e else "") for t, methods in MEDIA_METHODS.items() for m, e in methods])
def test_every_method_that_fits_trains_saves_loads_and_predicts_images_and_audio(task_id, method, extra, media, tmp_path):
    model, folder, inputs = media[task_id]
    run = tunesmith.finetune(str(folder), out=str(tmp_path / "run"), model=str(model), method=method, epochs=1, batch_size=8, threads=1,
                             refit="off", checkpoint_every=0, precision="fp32", **extra)
    assert run.task.name == task_id and run.metrics["validation"]["accuracy"] is not None
    predicted = run.predict(inputs)
    again = tunesmith.load(run.path).predict(inputs)
    assert [p["label"] for p in again] == [p["label"] for p in predicted]
    assert [p["score"] for p in again] == pytest.approx([p["score"] for p in predicted], abs=1e-5)
    if method != "adapter":  # bottleneck adapters are tunesmith's own format
        from transformers import pipeline

        from tunesmith.data.audio import decode_clip

        given = inputs if task_id == "image-classification" else [{"raw": decode_clip(inputs[0], 16000), "sampling_rate": 16000}]
        assert pipeline(task_id, model=str(run.path))(given, top_k=1)[0][0]["label"] == predicted[0]["label"]


@pytest.mark.parametrize("method", ["ia3", "adapter"])
def test_methods_for_attention_blocks_refuse_a_conv_net_in_one_sentence(method, media, tmp_path):
    model, folder, _ = media["image-classification"]
    with pytest.raises(tunesmith.errors.TunesmithError, match="mobilenet") as refused:
        tunesmith.finetune(str(folder), out=str(tmp_path / "run"), model=str(model), method=method, epochs=1, refit="off", threads=1)
    assert len(str(refused.value).splitlines()) == 1
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("task_id", list(MEDIA_METHODS))
def test_compare_on_a_folder_of_images_or_clips_names_each_methods_own_learning_rate(task_id, media, tmp_path):
    from tunesmith.compare import compare
    from tunesmith.config import RunConfig

    model, folder, _ = media[task_id]
    base = RunConfig.from_dict({"data": str(folder), "model": str(model), "out": str(tmp_path / "cmp"), "epochs": 1, "batch_size": 8,
                                "threads": 1, "refit": "off", "checkpoint_every": 0, "precision": "fp32"})
    assert not compare(base, ["full", "head"], {}, console=None).failed
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv").set_index("method")
    assert table["val_accuracy"].notna().all()
    # no --lr: each run's default for its model, a conv net's own for full (architectures/conv_stages.py)
    assert (table.loc["full", "lr"], table.loc["head", "lr"]) == ((1e-3 if task_id == "image-classification" else 5e-5), 3e-3)
