"""Inference over features: length-sorted batches, no gradients, outputs back in input order."""
from __future__ import annotations

import numpy as np
import torch

from ..data.batching import length_sorted_batches


def move(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def predict_logits(model, task, features, batch_size: int, pad_id: int, device, autocast=None) -> tuple[np.ndarray, float | None]:
    """Logits for every example in input order, and the mean loss when labels are present."""
    was_training = model.training
    model.eval()
    outputs, order, loss_sum = [], [], 0.0
    with torch.inference_mode():
        for indices in length_sorted_batches(features.lengths, batch_size):
            batch = move(task.collate(features, indices, pad_id), device)
            labels = batch.pop("labels", None)
            with autocast() if autocast else torch.autocast("cpu", enabled=False):
                logits = model(**batch).logits
            if labels is not None:
                loss_sum += float(task.loss_sum(logits, labels))
            outputs.append(logits.float().cpu())
            order.extend(indices)
    model.train(was_training)
    logits = torch.cat(outputs).numpy()
    result = np.empty_like(logits)
    result[np.asarray(order)] = logits
    loss = loss_sum / len(order) if features.labels is not None else None
    return result, loss
