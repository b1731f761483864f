"""Classification metrics (scikit-learn does the arithmetic; this names and shapes the results)."""
from __future__ import annotations

import numpy as np


def classification_metrics(labels, predictions, label_names: list[str], loss: float | None = None) -> dict:
    """accuracy, macro-F1, MCC, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, matthews_corrcoef, precision_recall_fscore_support

    labels = np.asarray(labels)
    predictions = np.asarray(predictions)
    ids = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(labels, predictions, labels=ids, zero_division=0)
    result = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "macro_f1": float(f1_score(labels, predictions, labels=ids, average="macro", zero_division=0)),
        "mcc": float(matthews_corrcoef(labels, predictions)) if len(set(labels.tolist()) | set(predictions.tolist())) > 1 else 0.0,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                      for i, name in enumerate(label_names)},
        "confusion_matrix": {"labels": list(label_names), "matrix": confusion_matrix(labels, predictions, labels=ids).tolist()},
        "examples": int(len(labels)),
    }
    if loss is not None:
        result["loss"] = float(loss)
    return result


LOWER_IS_BETTER = {"loss"}


def is_better(metric: str, new: float, best: float | None, new_loss: float | None = None, best_loss: float | None = None) -> bool:
    """A strictly better metric, or the same one at a lower validation loss.

    The tie-break matters on small validation sets, where accuracy moves in steps of one example:
    without it a run stops at the first plateau, and with it the less over-confident weights win."""
    if best is None:
        return True
    if new == best and new_loss is not None and best_loss is not None and metric not in LOWER_IS_BETTER:
        return new_loss < best_loss
    return new < best if metric in LOWER_IS_BETTER else new > best
