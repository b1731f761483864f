"""Classification metrics from the confusion matrix.

The formulas are scikit-learn's (accuracy, macro-F1 with zero_division=0, multi-class MCC), done
here in a few lines of numpy because importing sklearn.metrics costs 1.5 s of every job and every
`tunesmith eval`; tests/test_metrics.py checks every figure against scikit-learn itself.
"""
from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """matrix[true, predicted] counts."""
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(classes, classes)


def safe_divide(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b != 0)


def matthews(matrix: np.ndarray) -> float:
    """Multi-class MCC (Gorodkin's R_K), 0 where it is undefined."""
    correct, total = np.trace(matrix), matrix.sum()
    true, predicted = matrix.sum(1).astype(np.float64), matrix.sum(0).astype(np.float64)
    covariance = correct * total - true @ predicted
    denominator = np.sqrt((total ** 2 - predicted @ predicted) * (total ** 2 - true @ true))
    return float(covariance / denominator) if denominator else 0.0


def classification_metrics(labels, predictions, label_names: list[str], loss: float | None = None) -> dict:
    """accuracy, macro-F1, MCC, per-class precision/recall/F1/support and the confusion matrix."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    matrix = confusion(labels, predictions, len(label_names))
    hits, support, predicted = np.diag(matrix).astype(np.float64), matrix.sum(1), matrix.sum(0)
    precision, recall = safe_divide(hits, predicted), safe_divide(hits, support)
    f1 = safe_divide(2 * hits, support + predicted)
    result = {
        "accuracy": float(hits.sum() / max(len(labels), 1)),
        "macro_f1": float(f1.mean()),
        "mcc": matthews(matrix),
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": {"labels": list(label_names), "matrix": matrix.tolist()},
        "examples": int(len(labels)),
    }
    if loss is not None:
        result["loss"] = float(loss)
    return result


def is_better(new: float, best: float | None, higher_is_better: bool = True, new_loss: float | None = None,
              best_loss: float | None = None) -> bool:
    """A strictly better metric, or the same one at a lower validation loss.

    The tie-break matters on small validation sets, where accuracy moves in steps of one example:
    without it a run stops at the first plateau, and with it the less over-confident weights win."""
    if best is None:
        return True
    if new == best and new_loss is not None and best_loss is not None:
        return new_loss < best_loss
    return new > best if higher_is_better else new < best
