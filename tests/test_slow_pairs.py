"""A sentence-pair task made from real data, on the real embedded model (issue 16, point 8).

From the bundled movie-sentences (Pang & Lee sentences, each with the mean score of 20+ crowd
raters), pairs of two sentences whose scores differ by at least 1.5 points: which of the two did
the raters find more positive? Pairs of the training task come from the bundled train split only
and test pairs from its test split, so no sentence is seen in both. The columns are named
sentence1/sentence2 so that the pair is inferred, as a user's GLUE-style file would be.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tunesmith
from tunesmith.assets.registry import dataset_files

GAP = 1.5  # crowd-score points between the two sentences of a pair


def comparison_pairs(split: str, n: int, seed: int) -> pd.DataFrame:
    sentences = pd.read_csv(dataset_files("movie-sentences")[split])
    rng = np.random.default_rng(seed)
    rows = []
    while len(rows) < n:
        a, b = rng.integers(len(sentences), size=2)
        gap = sentences.score[a] - sentences.score[b]
        if abs(gap) >= GAP:
            rows.append({"sentence1": sentences.text[a], "sentence2": sentences.text[b], "label": "first" if gap > 0 else "second"})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_which_sentence_is_more_positive_is_learned_as_a_pair(tmp_path):
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    comparison_pairs("train", 4000, seed=0).to_csv(train, index=False)
    comparison_pairs("test", 1000, seed=1).to_csv(test, index=False)
    run = tunesmith.finetune(str(train), test=str(test), out=str(tmp_path / "run"), epochs=3, max_length=96)
    assert run.record["text_pair_column"] == "sentence2"
    accuracy = run.metrics["test"]["accuracy"]
    print(f"\nmore-positive-of-two pairs: test accuracy {accuracy:.4f} (chance 0.5)")
    assert accuracy >= 0.80, accuracy
    # the order matters: swapping the two sentences flips most answers
    swapped = pd.read_csv(test).head(200)
    flipped = run.predict(swapped.sentence2.tolist(), pairs=swapped.sentence1.tolist())
    gold = swapped.label.map({"first": "second", "second": "first"})
    assert np.mean([p["label"] == g for p, g in zip(flipped, gold)]) >= 0.75
