"""Warnings after training: a model that looks trained but has not learned the task.

A run that predicts one class for everything (MCC 0.00) or never finds the rare class (recall 0
at 0.967 accuracy on a 95/5 file) used to end with a good-looking accuracy and no word. These read
the confusion matrix of a split and say, in one sentence each, what is wrong and what to try.
"""
from __future__ import annotations

import numpy as np

ONE_CLASS_SHARE = 0.95  # predicts this share of examples as one class ...
MCC_NEAR_ZERO = 0.1


def prediction_warnings(scores: dict, split: str) -> list[str]:
    """Sentences about degenerate predictions on `split` (classification scores with a confusion matrix)."""
    if not scores or "confusion_matrix" not in scores:
        return []
    names = scores["confusion_matrix"]["labels"]
    matrix = np.asarray(scores["confusion_matrix"]["matrix"])
    total = int(matrix.sum())
    if total == 0:
        return []
    predicted, actual = matrix.sum(0), matrix.sum(1)
    warnings = []
    top = int(predicted.argmax())
    one_class = predicted[top] >= ONE_CLASS_SHARE * total and actual[top] < ONE_CLASS_SHARE * total
    if one_class:
        warnings.append(f"The model predicts '{names[top]}' for {predicted[top] / total:.0%} of the {split} examples, though only "
                        f"{actual[top] / total:.0%} of them are '{names[top]}': it has not learned to tell the labels apart. Try more epochs "
                        f"(--epochs), another learning rate (--lr), or more examples of the other labels.")
    mcc = scores.get("mcc")
    if mcc is not None and abs(mcc) < MCC_NEAR_ZERO and not one_class:
        warnings.append(f"MCC on the {split} split is {mcc:.2f}, about what guessing gives: the predictions barely agree with the labels "
                        f"beyond chance. Check that the label column is the one you mean, then try more epochs or another --lr.")
    never = [names[i] for i in range(len(names)) if actual[i] > 0 and matrix[i, i] == 0]
    if never and not one_class:
        shown = ", ".join(f"'{n}'" for n in never[:5]) + (f" and {len(never) - 5} more" if len(never) > 5 else "")
        warnings.append(f"The model never finds {shown} on the {split} split (recall 0): try --metric macro_f1, which picks the weights "
                        f"by every label's F1, more epochs, or more training examples of {'it' if len(never) == 1 else 'them'}.")
    return warnings


def per_class_recall(scores: dict) -> str:
    """'fresh 0.91, rotten 0.42': every label's recall on one line, rarest first."""
    per_class = scores.get("per_class") or {}
    ordered = sorted(per_class.items(), key=lambda item: item[1]["support"])
    return ", ".join(f"{name} {m['recall']:.2f} (n={m['support']})" for name, m in ordered)
