"""Issue 2, point 7: the default fine-tune of the embedded model on the bundled real data."""
from __future__ import annotations

import json

import pytest

from tunesmith.cli import main


@pytest.mark.slow
def test_default_settings_reach_080_test_accuracy_on_rotten_tomatoes(tmp_path, capsys):
    out = tmp_path / "default"
    assert main(["train", "rotten-tomatoes", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out
    assert "test" in printed and f"{metrics['test']['accuracy']:.4f}" in printed
    assert metrics["test"]["examples"] == 2000 and metrics["validation"]["examples"] == 1000
    assert metrics["test"]["accuracy"] >= 0.80, metrics["test"]
    assert metrics["test"]["macro_f1"] >= 0.78, metrics["test"]
    # the saved model answers with the real label names through plain transformers
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(out))
    answers = classify(["a warm, funny, beautifully acted film", "a dull, lifeless and tedious mess"])
    assert [a["label"] for a in answers] == ["fresh", "rotten"]
