"""A whole run on the tiny model: train, run folder contents, pipeline, predict, eval, CLI."""
from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

import tunesmith
from tunesmith.cli import main


def test_finetune_writes_a_complete_run_folder(tmp_path, reviews_csv, tiny_options):
    out = tmp_path / "run"
    test_csv = tmp_path / "test.csv"
    from conftest import toy_reviews

    toy_reviews(40, seed=1).to_csv(test_csv, index=False)
    run = tunesmith.finetune(reviews_csv, out=str(out), test=str(test_csv), **tiny_options)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "config.yaml", "metrics.json",
                 "curves.png", "test_predictions.csv", "environment.json", "run.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    metrics = run.metrics
    for split in ("validation", "test"):
        m = metrics[split]
        assert {"accuracy", "macro_f1", "mcc", "per_class", "confusion_matrix"} <= set(m)
        assert set(m["per_class"]) == {"neg", "pos"}
        assert sum(map(sum, m["confusion_matrix"]["matrix"])) == m["examples"]
    assert metrics["test"]["accuracy"] >= 0.8  # the toy task is learnable (chance is 0.5): this fails if training is broken
    preds = pd.read_csv(out / "test_predictions.csv")
    assert len(preds) == 40 and set(preds["prediction"]) <= {"neg", "pos"}
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["train"]["epochs"] == tiny_options["epochs"] and saved["data"]["text_column"] is None

    from transformers import pipeline

    answer = pipeline("text-classification", model=str(out))(["the film was great and moving"])[0]
    assert answer["label"] == "pos"
    assert run.predict(["the plot was dull and tedious"])[0]["label"] == "neg"


def test_cli_train_predict_eval(tmp_path, reviews_csv, tiny_model, capsys):
    out = tmp_path / "cli-run"
    args = ["train", str(reviews_csv), "--model", str(tiny_model), "--epochs", "8", "--batch-size", "16", "--lr", "3e-3",
            "--early-stopping", "0", "--out", str(out), "--text-column", "review", "--label-column", "sentiment"]
    assert main(args) == 0
    assert main(["predict", str(out), "a great and lovely film"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("pos\t")
    assert main(["eval", str(out), str(reviews_csv), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.9
    scored = tmp_path / "scored.csv"
    assert main(["predict", str(out), "--file", str(reviews_csv), "--out", str(scored)]) == 0
    assert {"review", "sentiment", "prediction", "confidence"} <= set(pd.read_csv(scored).columns)
    # re-running onto the same folder refuses instead of overwriting
    assert main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err


def test_config_yaml_reruns_the_same_run(tmp_path, reviews_csv, tiny_options, capsys):
    out = tmp_path / "a"
    tunesmith.finetune(reviews_csv, out=str(out), **tiny_options)
    assert main(["train", "--config", str(out / "config.yaml"), "--out", str(tmp_path / "b")]) == 0
    first = json.loads((out / "metrics.json").read_text())["validation"]
    second = json.loads((tmp_path / "b" / "metrics.json").read_text())["validation"]
    assert first["loss"] == pytest.approx(second["loss"], abs=1e-6)  # seeded: the same run again
