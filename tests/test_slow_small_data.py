"""Issue 15, point 5: on a few hundred real examples, the data-sized defaults beat round 1's fixed ones.

Real model (minilm-l6), real data: a seeded 400-row per-label sample of the bundled tweet-sentiment
training split (3 labels) as a user's file, scored on a fixed 1,000-row sample of its test split.
The old defaults were 3 epochs, a 10% validation split and no refit: 36 optimizer steps.
"""
from __future__ import annotations

import pandas as pd
import pytest

import tunesmith
from tunesmith.assets.registry import dataset_files

OLD_DEFAULTS = {"epochs": 3, "val_fraction": 0.1, "refit": "off", "metric": "accuracy"}


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small-data")
    files = dataset_files("tweet-sentiment")
    train = pd.read_csv(files["train"])
    from sklearn.model_selection import train_test_split

    sample, _ = train_test_split(train, train_size=400, stratify=train["label"], random_state=0)
    test = pd.read_csv(files["test"]).sample(n=1000, random_state=0)
    sample.to_csv(folder / "tweets.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    return folder / "tweets.csv", folder / "test.csv"


@pytest.mark.slow
def test_small_data_defaults_beat_the_old_fixed_ones(small_files, tmp_path):
    train, test = small_files
    old = tunesmith.finetune(train, test=str(test), out=str(tmp_path / "old"), **OLD_DEFAULTS)
    new = tunesmith.finetune(train, test=str(test), out=str(tmp_path / "new"))
    old_acc, new_acc = old.metrics["test"]["accuracy"], new.metrics["test"]["accuracy"]
    print(f"\nold defaults {old_acc:.4f} ({old.metrics['train']['steps']} steps), new defaults {new_acc:.4f} "
          f"({new.metrics['train']['steps']} steps, refit {new.metrics['refit']})")
    assert new.metrics["refit"] is not None and new.metrics["refit"]["examples"] == 400
    assert new.config.train.epochs > 3
    assert new_acc >= old_acc + 0.03, (old_acc, new_acc)
    assert new.metrics["test"]["macro_f1"] >= old.metrics["test"]["macro_f1"] + 0.03
