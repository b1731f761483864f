"""Multi-label classification (issue 16 point 2): label cells and separators, detection, tensors and
loss, scores against scikit-learn, the tuned threshold, a whole run on the tiny model, loading it in
plain transformers, LoRA, bad input."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import FILLER

import tunesmith
import tunesmith.tasks.multi_label  # noqa: F401  (registers the task until tasks/__init__ imports it)
from tunesmith.cli import main
from tunesmith.config import DataConfig, RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.tasks import choose_task, get_task
from tunesmith.tasks.multi_label import MultiLabel, best_threshold, detect_separator, label_list, multi_label_metrics

CUES = {"praise": "great", "criticism": "awful", "story": "plot"}  # each label has its word


def toy_multi_label(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Reviews with each cue word present at random (p = 0.4), labeled with the labels of their cues."""
    rng = random.Random(seed)
    filler = [w for w in FILLER if w != "plot"]
    rows = []
    for _ in range(n):
        words, labels = rng.sample(filler, rng.randint(2, 6)), []
        for label, cue in CUES.items():
            if rng.random() < 0.4:
                words.insert(rng.randint(0, len(words)), cue)
                labels.append(label)
        rows.append({"review": " ".join(words), "labels": labels})
    return pd.DataFrame(rows)


def joined(frame: pd.DataFrame, separator: str = ";") -> pd.DataFrame:
    return frame.assign(labels=[separator.join(labels) for labels in frame["labels"]])


OPTIONS = {"epochs": 8, "batch_size": 16, "lr": 1e-2, "eval_batch_size": 64, "early_stopping": 0, "checkpoint_every": 0,
           "threads": 2, "refit": "off", "precision": "fp32"}


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("multi-label")
    train, test = folder / "tags.csv", folder / "tags_test.csv"
    joined(toy_multi_label(200)).to_csv(train, index=False)
    joined(toy_multi_label(60, seed=1)).to_csv(test, index=False)
    return tunesmith.finetune(train, out=str(folder / "run"), test=str(test), model=str(tiny_model), **OPTIONS), test


def gold_of(frame: pd.DataFrame, names) -> np.ndarray:
    return np.array([[name in labels for name in names] for labels in frame["labels"]])


def best_constant_micro_f1(train_gold: np.ndarray, gold: np.ndarray) -> float:
    """The baseline: the best micro-F1 of predicting the k most frequent training labels for every example."""
    order = np.argsort(-train_gold.sum(0), kind="stable")
    scores = []
    for k in range(1, len(order) + 1):
        predicted = np.zeros_like(gold)
        predicted[:, order[:k]] = True
        scores.append(multi_label_metrics(gold, predicted, [str(i) for i in range(gold.shape[1])], 0.5)["micro_f1"])
    return max(scores)


# -- label cells and detection -----------------------------------------------------------------

@pytest.mark.parametrize("cell, separator, expected", [
    (["b", "a", "b"], None, ["b", "a"]),
    ('["x", "y"]', ";", ["x", "y"]),         # a JSON list written into a CSV cell
    ("x; y ;", ";", ["x", "y"]),
    ("", ";", []),
    (float("nan"), ";", []),
    ([1, 2.0], None, ["1", "2"]),
    ([{"a": 1}], None, None),
])
def test_label_cells(cell, separator, expected):
    assert label_list(cell, separator) == expected


@pytest.mark.parametrize("separator", [";", "|", ","])
def test_separator_is_detected(separator):
    values = joined(toy_multi_label(100), separator)["labels"]
    found, share = detect_separator(values)
    assert found == separator and 0.2 < share < 0.6


def test_commas_in_prose_are_not_a_separator():
    rng = random.Random(0)
    prose = pd.Series([", ".join(" ".join(rng.sample(FILLER, 4)) for _ in range(rng.randint(1, 3))) for _ in range(100)])
    assert detect_separator(prose) == (None, 0.0)


def test_detection_checks_only_the_label_column():
    frame = joined(toy_multi_label(100))
    task, why = choose_task("auto", frame, DataConfig())
    assert task is MultiLabel and "separated by ';'" in why
    assert choose_task("auto", toy_multi_label(100), DataConfig())[0] is MultiLabel  # lists (JSON, Parquet)
    # a text column full of commas beside a single-label column is text classification
    prose = pd.DataFrame({"comment": ["good, warm, funny, and moving", "dull, flat, and long"] * 50, "label": ["pos", "neg"] * 50})
    assert MultiLabel.detect(prose, DataConfig()) is None
    assert MultiLabel.detect(frame.assign(labels="praise"), DataConfig()) is None
    # token and tag lists of the same length are NER data, not label sets
    ner = pd.DataFrame({"tokens": [["New", "York", "is", "big"]] * 30, "tags": [["B-loc", "I-loc", "O", "O"]] * 30})
    assert MultiLabel.detect(ner, DataConfig()) is None


def test_jsonl_lists_train_and_predict(tmp_path, tiny_model):
    path = tmp_path / "tags.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_multi_label(80).to_dict(orient="records")))
    run = tunesmith.finetune(path, out=str(tmp_path / "run"), model=str(tiny_model), **dict(OPTIONS, epochs=1))
    assert run.task.separator is None and run.task.label_names == ["criticism", "praise", "story"]
    assert set(run.predict(["great"])[0]["scores"]) == {"criticism", "praise", "story"}


# -- tensors, loss, scores, the threshold -------------------------------------------------------

class Output:
    def __init__(self, logits):
        self.logits = logits


def test_encode_collate_and_loss_against_torch(tiny_model):
    from transformers import AutoTokenizer

    task = MultiLabel(["a", "b", "c"])
    table = pd.DataFrame({"text": ["great film", "awful plot", "the"], "label": [["a"], ["b", "c"], []]})
    features = task.encode(AutoTokenizer.from_pretrained(tiny_model), table, 32)
    assert features.labels.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    batch = task.collate(features, [1, 2], pad_id=0)
    assert batch["labels"].tolist() == [[0, 1, 1], [0, 0, 0]]
    logits = torch.tensor([[0.3, -1.0, 2.0], [0.0, 0.5, -0.5]])
    total, count = task.loss(Output(logits), batch["labels"])
    assert count == 2  # examples: the loop's loss is per example, summed over its labels
    assert total.item() == pytest.approx(F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="sum").item())
    assert total.item() / count == pytest.approx(torch.nn.BCEWithLogitsLoss()(logits, batch["labels"]).item() * 3)


def test_scores_match_scikit_learn():
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    gold = rng.random((120, 5)) < 0.3
    gold[:, 4] = False  # a label with no examples in this split
    predicted = gold ^ (rng.random((120, 5)) < 0.2)
    scores = multi_label_metrics(gold, predicted, list("abcde"), 0.5, loss=1.25)
    assert scores["micro_f1"] == pytest.approx(f1_score(gold, predicted, average="micro", zero_division=0))
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, predicted, average="macro", zero_division=0))
    assert scores["subset_accuracy"] == pytest.approx(accuracy_score(gold, predicted))
    precision, recall, f1, support = precision_recall_fscore_support(gold, predicted, zero_division=0)
    for i, name in enumerate("abcde"):
        got = scores["per_class"][name]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx((precision[i], recall[i], f1[i], support[i]))
    assert scores["loss"] == 1.25 and scores["examples"] == 120
    assert [m.name for m in MultiLabel.metrics] == ["micro_f1", "macro_f1", "subset_accuracy", "loss"]


def test_tuned_threshold_is_the_best_on_a_fine_grid():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(1)
    gold = rng.random((200, 4)) < 0.3
    probs = np.clip(0.25 * gold + rng.random((200, 4)) * 0.6, 0, 1)  # positives score higher, but not always: the best cut is not 0.5
    threshold = best_threshold(probs, gold)
    best_on_grid = max(f1_score(gold, probs >= t, average="micro") for t in np.linspace(0.001, 0.999, 999))
    assert f1_score(gold, probs >= threshold, average="micro") >= best_on_grid - 1e-12
    assert threshold != 0.5 and best_threshold(probs, np.zeros_like(gold)) == 0.5


def test_tune_sets_the_threshold_used_by_scores_and_predictions():
    task = MultiLabel(["a", "b"])
    logits = np.array([[2.0, -3.0], [0.2, -0.5], [-2.0, -0.3], [-3.0, 1.0]])
    features = type("F", (), {"labels": np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)})
    assert task.score(logits, features)["micro_f1"] < 1.0  # at 0.5, row 3's 'b' (p = 0.43) is missed
    assert task.tune(logits, features) == {"threshold": task.threshold}
    assert task.score(logits, features)["micro_f1"] == 1.0 and task.score(logits, features)["threshold"] == task.threshold
    assert [r["labels"] for r in task.predict_records(logits, None)] == [["a"], ["a"], ["b"], ["b"]]


def test_record_round_trip():
    task = MultiLabel(["x", "y"], "|", 0.37, "sentence1", "tags", "sentence2")
    again = get_task("multi-label").from_record(json.loads(json.dumps(task.record())))
    assert again.record() == task.record() and again.threshold == 0.37


# -- a whole run --------------------------------------------------------------------------------

def test_run_learns_the_labels_and_stores_the_threshold(multi_label_run):
    run, test = multi_label_run
    metrics = run.metrics
    gold = gold_of(toy_multi_label(60, seed=1), run.task.label_names)
    baseline = best_constant_micro_f1(gold_of(toy_multi_label(200), run.task.label_names), gold)
    assert metrics["test"]["micro_f1"] >= baseline + 0.1, (metrics["test"], baseline)  # fails if training is broken
    threshold = metrics["tuned"]["threshold"]
    assert 0 < threshold < 1 and metrics["test"]["threshold"] == threshold
    assert json.loads((run.path / "run.json").read_text())["threshold"] == threshold
    assert json.loads((run.path / "config.json").read_text())["tunesmith_threshold"] == threshold
    predictions = pd.read_csv(run.path / "test_predictions.csv", keep_default_na=False)
    assert list(predictions.columns) == ["text", "label", "prediction", "p(criticism)", "p(praise)", "p(story)"]
    above = predictions[[f"p({name})" for name in run.task.label_names]].to_numpy() >= threshold - 1e-5  # rounded to 5 places
    assert [set(filter(None, shown.split(";"))) for shown in predictions["prediction"]] == \
        [{name for name, on in zip(run.task.label_names, row) if on} for row in above]
    assert run.evaluate(test)["micro_f1"] == pytest.approx(metrics["test"]["micro_f1"])


def test_plain_transformers_gives_the_same_probabilities(multi_label_run):
    from transformers import pipeline

    run, _ = multi_label_run
    texts = ["great plot", "awful", "the film"]
    ours = run.predict(texts)
    answers = pipeline("text-classification", model=str(run.path), top_k=None)(texts)
    for mine, theirs in zip(ours, answers):
        assert {a["label"]: a["score"] for a in theirs} == pytest.approx(mine["scores"], abs=1e-5)
    from transformers import AutoConfig

    threshold = AutoConfig.from_pretrained(run.path).tunesmith_threshold
    assert [{a["label"] for a in theirs if a["score"] >= threshold} for theirs in answers] == [set(m["labels"]) for m in ours]


def test_cli_predicts_labels(multi_label_run, capsys):
    run, _ = multi_label_run
    assert main(["predict", str(run.path), "great plot", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = run.predict("great plot")[0]
    assert printed["labels"] == expected["labels"]
    assert main(["predict", str(run.path), "great plot"]) == 0
    labels, scores, text = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert labels == (";".join(expected["labels"]) or "(none)") and text == "great plot"
    assert scores.split(" ")[1].rstrip(",") == f"{expected['scores'][scores.split(' ')[0]]:.3f}"


def test_frozen_layer_cache_trains_and_tunes(tmp_path, tiny_model, capsys):
    path = tmp_path / "tags.csv"
    joined(toy_multi_label(100)).to_csv(path, index=False)
    run = tunesmith.finetune(path, out=str(tmp_path / "run"), model=str(tiny_model), method="freeze", **dict(OPTIONS, epochs=2))
    assert "Frozen layers: embeddings + 1 layer computed once" in capsys.readouterr().out
    assert 0 < run.metrics["tuned"]["threshold"] < 1 and run.metrics["validation"]["threshold"] == run.metrics["tuned"]["threshold"]


def test_no_validation_keeps_threshold_one_half(tmp_path, tiny_model):
    path = tmp_path / "tags.csv"
    joined(toy_multi_label(60)).to_csv(path, index=False)
    run = tunesmith.finetune(path, out=str(tmp_path / "run"), model=str(tiny_model), val_fraction=0, **dict(OPTIONS, epochs=1))
    assert run.task.threshold == 0.5 and run.metrics["tuned"] == {}


def test_refit_run_tunes_then_keeps_the_threshold(tmp_path, tiny_model):
    path = tmp_path / "tags.csv"
    joined(toy_multi_label(100)).to_csv(path, index=False)
    run = tunesmith.finetune(path, out=str(tmp_path / "run"), model=str(tiny_model), **dict(OPTIONS, epochs=2, refit="on"))
    threshold = run.metrics["tuned"]["threshold"]
    assert json.loads((run.path / "config.json").read_text())["tunesmith_threshold"] == threshold == run.task.threshold


def test_lora_run_trains_stores_the_threshold_and_reloads(tmp_path, tiny_model):
    train, test = tmp_path / "tags.csv", tmp_path / "tags_test.csv"
    joined(toy_multi_label(200)).to_csv(train, index=False)
    joined(toy_multi_label(60, seed=1)).to_csv(test, index=False)
    run = tunesmith.finetune(train, out=str(tmp_path / "lora"), test=str(test), model=str(tiny_model), method="lora", **OPTIONS)
    assert (run.path / "adapter_config.json").is_file()
    assert run.metrics["test"]["micro_f1"] > 0.6, run.metrics["test"]
    again = tunesmith.load(run.path)
    assert again.task.threshold == run.metrics["tuned"]["threshold"]
    assert again.predict(["great plot"])[0]["scores"] == pytest.approx(run.predict(["great plot"])[0]["scores"], abs=1e-5)


# -- bad input: one clear sentence each ---------------------------------------------------------

def run_cfg(tiny_model, **options) -> RunConfig:
    return RunConfig.from_dict(dict(OPTIONS, model=str(tiny_model), task="multi-label", **options))


def test_no_labels_on_any_row_is_refused(tmp_path, tiny_model, capsys):
    path = tmp_path / "empty.jsonl"
    path.write_text("".join(json.dumps({"text": f"review {i}", "labels": []}) + "\n" for i in range(40)))
    assert main(["train", str(path), "--task", "multi-label", "--model", str(tiny_model), "--out", str(tmp_path / "run")]) != 0
    assert "has no labels on any training row" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.json").exists()


def test_rows_without_labels_are_counted():
    frame = joined(toy_multi_label(100))
    cfg = run_cfg("x", data="f.csv")
    task, splits = MultiLabel.prepare(frame, {"train": "f.csv", "validation": None, "test": None}, cfg, 0)
    empty = sum(1 for labels in splits.train["label"] if not labels)
    assert empty > 0 and f"{empty:,} of {len(splits.train):,} training rows have no labels" in " ".join(splits.notes)


def test_an_unseen_test_label_and_a_cell_of_objects_are_refused(tmp_path, tiny_model):
    train, test = tmp_path / "tags.jsonl", tmp_path / "test.jsonl"
    rows = toy_multi_label(60).to_dict(orient="records")
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    test.write_text("".join(json.dumps(dict(r, labels=["praise", "sequel"])) + "\n" for r in rows[:5]))
    with pytest.raises(TunesmithError, match="labels never seen in training \\('sequel'\\)"):
        tunesmith.finetune(train, out=str(tmp_path / "a"), test=str(test), model=str(tiny_model), **OPTIONS)
    test.write_text("".join(json.dumps(dict(r, labels=[{"name": "praise"}])) + "\n" for r in rows[:5]))
    with pytest.raises(TunesmithError, match="cells that are not labels on lines 2, 3, 4, 5, 6"):
        tunesmith.finetune(train, out=str(tmp_path / "b"), test=str(test), model=str(tiny_model), **OPTIONS)


def test_label_separator_option(tmp_path, tiny_model):
    frame = joined(toy_multi_label(60), "/")
    cfg = run_cfg(tiny_model, data="f.csv", label_separator="/")
    task, _ = MultiLabel.prepare(frame, {"train": "f.csv", "validation": None, "test": None}, cfg, 0)
    assert task.separator == "/" and task.label_names == ["criticism", "praise", "story"]
