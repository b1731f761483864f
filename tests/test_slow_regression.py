"""Issue 16, point 8: regression on real data. minilm-l6 on the bundled movie-sentences crowd scores
(Pang & Lee sentences, each the mean of 20+ raters' -4..+4 scores), trained from the command line as
a user would (`tunesmith train movie-sentences`), on a random 3,000 of the 8,603 training sentences
for 2 epochs so that it runs in a few minutes on 2 cores; scored on the fixed 1,000-sentence test split.
"""
from __future__ import annotations

import json

import pytest

import tunesmith
import tunesmith.tasks.regression  # noqa: F401  (registers the task until tasks/__init__ imports it)
from tunesmith.cli import main


@pytest.mark.slow
def test_movie_sentence_scores_reach_pearson_070(tmp_path, capsys):
    out = tmp_path / "movie-sentences"
    assert main(["train", "movie-sentences", "--out", str(out), "--max-train-examples", "3000", "--epochs", "2", "--lr", "1e-4",
                 "--max-length", "64"]) == 0
    printed = capsys.readouterr().out
    assert "Task: regression" in printed  # inferred from the score column (--task auto)
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    print(f"\nmovie-sentences test: Pearson {test['pearson']:.4f}, Spearman {test['spearman']:.4f}, RMSE {test['rmse']:.4f} "
          f"(always the training mean: {test['mean_baseline_rmse']:.4f}), MAE {test['mae']:.4f}; {metrics['train']['seconds']:.0f} s training")
    assert test["examples"] == 1000
    assert test["pearson"] >= 0.70, test
    assert test["spearman"] >= 0.65, test
    assert test["rmse"] < 0.75 * test["mean_baseline_rmse"], test
    # predictions in the crowd's units: a clear rave scores well above a clear pan
    run = tunesmith.load(out)
    rave, pan = (p["score"] for p in run.predict(["a warm, funny, beautifully acted film", "a dull, lifeless and tedious mess"]))
    assert rave > 1.0 and pan < -1.0, (rave, pan)
