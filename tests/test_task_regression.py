"""Text regression (issue 16 point 2): detection, the random split, tensors and loss, scores against
scipy/scikit-learn, a whole run on the tiny model, loading it in plain transformers, LoRA, bad input."""
from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import FILLER, NEGATIVE, POSITIVE

import tunesmith
import tunesmith.tasks.regression  # noqa: F401  (registers the task until tasks/__init__ imports it)
from tunesmith.cli import main
from tunesmith.config import DataConfig, RunConfig
from tunesmith.data.text_tables import split_off_random_validation
from tunesmith.errors import TunesmithError
from tunesmith.tasks import choose_task, get_task
from tunesmith.tasks.regression import Regression


def toy_scores(n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Reviews scored (positive words - negative words) plus a little noise: learnable by the tiny model."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.sample(FILLER, rng.randint(2, 6))
        pos, neg = rng.randint(0, 3), rng.randint(0, 3)
        for word in rng.sample(POSITIVE, pos) + rng.sample(NEGATIVE, neg):
            words.insert(rng.randint(0, len(words)), word)
        rows.append({"review": " ".join(words), "rating": round(pos - neg + rng.uniform(-0.3, 0.3), 3)})
    return pd.DataFrame(rows)


@pytest.fixture
def scores_files(tmp_path):
    train, test = tmp_path / "scores.csv", tmp_path / "scores_test.csv"
    toy_scores(200).to_csv(train, index=False)
    toy_scores(60, seed=1).to_csv(test, index=False)
    return train, test


@pytest.fixture(scope="module")
def regression_run(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("regression")
    train, test = folder / "scores.csv", folder / "scores_test.csv"
    toy_scores(200).to_csv(train, index=False)
    toy_scores(60, seed=1).to_csv(test, index=False)
    options = {"model": str(tiny_model), "epochs": 8, "batch_size": 16, "lr": 1e-2, "eval_batch_size": 64, "early_stopping": 0,
               "checkpoint_every": 0, "threads": 2, "refit": "off", "precision": "fp32"}
    return tunesmith.finetune(train, out=str(folder / "run"), test=str(test), **options), test


def cfg_for(**data) -> RunConfig:
    return RunConfig.from_dict(dict(data, data="x.csv"))


# -- detection --------------------------------------------------------------------------------

def test_many_distinct_non_integer_numbers_are_a_regression_target():
    frame = toy_scores(100)
    task, why = choose_task("auto", frame, DataConfig())
    assert task is Regression and "'rating'" in why and "distinct values" in why
    assert choose_task("auto", pd.DataFrame({"text": ["a film"] * 100, "score": [f"{i / 7:.3f}" for i in range(100)]}), DataConfig())[0] is Regression


@pytest.mark.parametrize("labels", [
    [str(1 + i % 5) for i in range(100)],           # integer ratings 1-5 stay classes
    [str(i) for i in range(100)],                   # many integers (an id, a year) are not scores
    [f"{(i % 5) / 2:.1f}" for i in range(100)],     # non-integers, but only 5 distinct values
    ["pos", "neg"] * 50,
])
def test_classes_and_integers_are_not_regression(labels):
    frame = pd.DataFrame({"text": [f"review number {i}" for i in range(100)], "label": labels})
    assert Regression.detect(frame, DataConfig()) is None


def test_only_the_label_column_is_checked():
    frame = toy_scores(100).assign(sentiment=["pos", "neg"] * 50)
    assert Regression.detect(frame, DataConfig()) is None  # 'sentiment' is the label by name, and holds classes
    assert Regression.detect(frame, DataConfig(label_column="Rating")) is not None


# -- the random split ---------------------------------------------------------------------------

@pytest.mark.parametrize("rows, fraction, expected", [(200, None, 40), (1000, None, 100), (30_000, None, 2000), (200, 0.25, 50)])
def test_random_validation_split_is_sized_like_the_stratified_one(rows, fraction, expected):
    table = pd.DataFrame({"text": [str(i) for i in range(rows)], "label": np.arange(rows, dtype=float)})
    rest, held, _ = split_off_random_validation(table, fraction, seed=3)
    assert len(held) == expected and len(rest) == rows - expected
    assert set(rest["text"]).isdisjoint(held["text"])
    again = split_off_random_validation(table, fraction, seed=3)[1]
    assert held.equals(again)  # seeded
    assert not held.equals(split_off_random_validation(table, fraction, seed=4)[1])


# -- tensors, loss and scores ------------------------------------------------------------------

class Output:
    def __init__(self, logits):
        self.logits = logits


def test_loss_is_torch_mse_on_standardised_targets_and_outputs_are_in_original_units():
    task = Regression(label_mean=2.0, label_std=4.0)
    logits = torch.tensor([[0.5], [-1.0], [0.0]])
    labels = torch.tensor([3.0, -6.0, 2.0], dtype=torch.float64)
    total, count = task.loss(Output(logits), labels)
    assert count == 3
    assert total.item() == pytest.approx(F.mse_loss(logits.view(-1), (labels.float() - 2.0) / 4.0, reduction="sum").item())
    assert task.outputs(Output(logits), {}).tolist() == pytest.approx([4.0, -2.0, 2.0])


def test_encode_and_collate_keep_float_labels_and_text_pairs(tiny_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    task = Regression(0.0, 1.0, text_pair_column="second")
    table = pd.DataFrame({"text": ["a good film", "bad"], "text_pair": ["the plot", "dull and weak"], "label": [0.25, -1.5]})
    features = task.encode(tokenizer, table, 32)
    batch = task.collate(features, [1, 0], pad_id=0)
    assert batch["labels"].dtype == torch.float64 and batch["labels"].tolist() == [-1.5, 0.25]
    assert batch["token_type_ids"].max() == 1 and batch["input_ids"].shape[0] == 2


def test_scores_match_scipy_and_scikit_learn():
    from scipy import stats
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    rng = np.random.default_rng(0)
    labels = rng.normal(size=200) * 3 + 1
    predicted = labels + rng.normal(size=200)
    features = type("F", (), {"labels": labels})
    scores = Regression(1.0, 3.0).score(predicted, features, loss=0.3)
    assert scores["pearson"] == pytest.approx(stats.pearsonr(predicted, labels)[0])
    assert scores["spearman"] == pytest.approx(stats.spearmanr(predicted, labels)[0])
    assert scores["rmse"] == pytest.approx(np.sqrt(mean_squared_error(labels, predicted)))
    assert scores["mae"] == pytest.approx(mean_absolute_error(labels, predicted))
    assert scores["mean_baseline_rmse"] == pytest.approx(np.sqrt(mean_squared_error(labels, np.full(200, 1.0))))
    assert scores["loss"] == 0.3 and scores["examples"] == 200
    assert [m.name for m in Regression.metrics] == ["pearson", "spearman", "rmse", "mae", "loss"]
    assert [m.higher_is_better for m in Regression.metrics] == [True, True, False, False, False]


def test_constant_predictions_score_zero_correlation_and_warn():
    task = Regression(0.0, 1.0)
    scores = task.score(np.full(50, 0.2), type("F", (), {"labels": np.linspace(-2, 2, 50)}))
    assert scores["pearson"] == 0.0 and scores["spearman"] == 0.0
    assert json.dumps(scores)  # no NaN in metrics.json
    (warning,) = task.warnings(scores, "test")
    assert "nearly the same score" in warning


def test_record_round_trip():
    task = Regression(1.5, 0.75, "sentence1", "similarity", "sentence2")
    again = get_task("regression").from_record(json.loads(json.dumps(task.record())))
    assert again.record() == task.record()


# -- a whole run --------------------------------------------------------------------------------

def test_run_learns_scores_and_writes_original_units(regression_run):
    run, test = regression_run
    metrics = run.metrics
    assert metrics["task"] == "regression"
    assert metrics["test"]["pearson"] >= 0.8, metrics["test"]  # the toy scores are learnable: fails if training is broken
    assert metrics["test"]["rmse"] < 0.8 * metrics["test"]["mean_baseline_rmse"]  # the scale is learned too, not only the order
    assert metrics["warnings"] == []
    record = json.loads((run.path / "run.json").read_text())
    assert record["label_column"] == "rating" and record["text_column"] == "review"
    gold = pd.read_csv(test)["rating"]
    assert record["label_mean"] == pytest.approx(pd.read_csv(run.config.data.data)["rating"].mean(), abs=0.5)
    predictions = pd.read_csv(run.path / "test_predictions.csv")
    assert list(predictions.columns) == ["text", "label", "prediction"]
    assert predictions["label"].tolist() == pytest.approx(gold.tolist())
    assert np.corrcoef(predictions["prediction"], gold)[0, 1] == pytest.approx(metrics["test"]["pearson"], abs=1e-4)
    assert run.evaluate(test)["pearson"] == pytest.approx(metrics["test"]["pearson"], abs=1e-5)


def test_plain_transformers_gives_the_same_scores(regression_run):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run, _ = regression_run
    texts = ["good great lovely", "bad awful dull boring", "the film"]
    ours = [p["score"] for p in run.predict(texts)]
    model = AutoModelForSequenceClassification.from_pretrained(run.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(run.path)
    assert model.config.problem_type == "regression" and model.config.num_labels == 1
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits[:, 0]
    plain = (logits * model.config.label_std + model.config.label_mean).tolist()
    assert plain == pytest.approx(ours, abs=1e-4)
    raw = [r["score"] for r in pipeline("text-classification", model=str(run.path), function_to_apply="none")(texts)]
    assert [r * model.config.label_std + model.config.label_mean for r in raw] == pytest.approx(ours, abs=1e-4)
    assert ours[0] > ours[2] > ours[1]


def test_cli_predicts_a_number_and_predict_file_adds_the_prediction(regression_run, tmp_path, capsys):
    run, test = regression_run
    assert main(["predict", str(run.path), "good great lovely"]) == 0
    value, text = capsys.readouterr().out.strip().splitlines()[-1].split("\t")
    assert float(value) == pytest.approx(run.predict("good great lovely")[0]["score"], abs=1e-3) and text == "good great lovely"
    scored = run.predict_file(test, tmp_path / "scored.csv")
    assert {"review", "rating", "prediction"} <= set(pd.read_csv(tmp_path / "scored.csv").columns) and len(scored) == 60


def test_lora_run_trains_and_reloads(scores_files, tiny_options, tmp_path):
    train, test = scores_files
    run = tunesmith.finetune(train, out=str(tmp_path / "lora"), test=str(test), method="lora", **dict(tiny_options, lr=1e-2))
    assert (run.path / "adapter_config.json").is_file()
    assert run.metrics["test"]["pearson"] > 0.3, run.metrics["test"]
    again = tunesmith.load(run.path)
    texts = ["good great lovely", "bad awful"]
    assert [p["score"] for p in again.predict(texts)] == pytest.approx([p["score"] for p in run.predict(texts)], abs=1e-5)


def test_frozen_layer_cache_trains_regression(scores_files, tiny_options, tmp_path, capsys):
    train, _ = scores_files
    run = tunesmith.finetune(train, out=str(tmp_path / "freeze"), method="freeze", **dict(tiny_options, epochs=2))
    assert "Frozen layers: embeddings + 1 layer computed once" in capsys.readouterr().out
    assert np.isfinite(run.metrics["validation"]["rmse"]) and run.metrics["validation"]["examples"] == 40


# -- bad input: one clear sentence each ---------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    ("high", r"not numbers on lines 5 \(line 5: 'high'\)"),
    ("nan", "finite number"),
    ("inf", "finite number"),
    ("", "no number on lines 5"),
])
def test_bad_scores_are_refused_naming_the_row(tmp_path, tiny_options, value, message):
    frame = toy_scores(60)
    frame["rating"] = frame["rating"].astype(str)
    frame.loc[3, "rating"] = value
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(TunesmithError, match=message):
        tunesmith.finetune(path, out=str(tmp_path / "run"), task="regression", label_column="rating", **tiny_options)
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_constant_score_column_is_refused(tmp_path, tiny_options, capsys):
    path = tmp_path / "constant.csv"
    toy_scores(60).assign(rating=2.5).to_csv(path, index=False)
    assert main(["train", str(path), "--task", "regression", "--label-column", "rating", "--model", tiny_options["model"],
                 "--out", str(tmp_path / "run")]) != 0
    assert "same value (2.5) on every training row" in capsys.readouterr().err


def test_several_score_columns_ask_for_the_label_column(tmp_path):
    frame = toy_scores(60).rename(columns={"rating": "x"})
    frame["y2"] = frame["x"] * 2
    with pytest.raises(TunesmithError, match="Several columns .* hold scores .*--label-column"):
        Regression.prepare(frame, {"train": "f.csv", "validation": None, "test": None}, cfg_for(task="regression"), 0)
