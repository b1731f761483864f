"""Inference over features: length-sorted batches, no gradients, outputs back in input order."""
from __future__ import annotations

import numpy as np
import torch

from ..data.batching import length_sorted_batches, move
from .first_token import first_token_forward


def predict_logits(model, task, features, batch_size: int, pad_id: int, device, autocast=None) -> tuple[np.ndarray, float | None]:
    """Logits for every example in input order, and the mean loss when labels are present."""
    was_training = model.training
    model.eval()
    forward = first_token_forward(model) or model  # classifiers read one position of the last layer: compute only it
    outputs, order, loss_sum = [], [], torch.zeros((), dtype=torch.float64, device=device)
    with torch.inference_mode():
        for indices in length_sorted_batches(features.lengths, batch_size):
            batch = move(task.collate(features, indices, pad_id), device)
            labels = batch.pop("labels", None)
            with autocast() if autocast else torch.autocast("cpu", enabled=False):
                logits = forward(**batch).logits
            if labels is not None:
                loss_sum += task.loss_sum(logits, labels).double()
            outputs.append(logits.float())
            order.extend(indices)
    model.train(was_training)
    logits = torch.cat(outputs).cpu().numpy()  # one copy back, after the last batch
    result = np.empty_like(logits)
    result[np.asarray(order)] = logits
    loss = float(loss_sum) / len(order) if features.labels is not None else None
    return result, loss
