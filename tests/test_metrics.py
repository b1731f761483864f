"""Our confusion-matrix metrics give scikit-learn's figures exactly."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, precision_recall_fscore_support

from tunesmith.metrics import classification_metrics


@pytest.mark.parametrize("classes, n, seed", [(2, 50, 0), (3, 200, 1), (7, 40, 2), (5, 5, 3), (4, 300, 4)])
def test_metrics_match_scikit_learn(classes, n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    predictions = np.where(rng.random(n) < 0.6, labels, rng.integers(0, classes, n))
    ours = classification_metrics(labels, predictions, [f"c{i}" for i in range(classes)])
    ids = list(range(classes))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, predictions), abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(f1_score(labels, predictions, labels=ids, average="macro", zero_division=0), abs=1e-12)
    assert ours["mcc"] == pytest.approx(matthews_corrcoef(labels, predictions), abs=1e-12)
    assert ours["confusion_matrix"]["matrix"] == confusion_matrix(labels, predictions, labels=ids).tolist()
    for i in ids:
        m = ours["per_class"][f"c{i}"]
        assert (m["precision"], m["recall"], m["f1"], m["support"]) == pytest.approx((precision[i], recall[i], f1[i], support[i]), abs=1e-12)


def test_degenerate_predictions_score_zero_where_undefined():
    ours = classification_metrics([0, 1, 0, 1], [0, 0, 0, 0], ["a", "b"])
    assert ours["mcc"] == 0.0 and ours["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert ours["macro_f1"] == pytest.approx(f1_score([0, 1, 0, 1], [0, 0, 0, 0], average="macro", zero_division=0))
    assert classification_metrics([1, 1], [1, 1], ["a", "b"])["mcc"] == matthews_corrcoef([1, 1], [1, 1])
