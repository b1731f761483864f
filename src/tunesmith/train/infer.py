"""Inference over features: length-sorted batches, no gradients, outputs back in input order."""
from __future__ import annotations

import numpy as np
import torch

from ..data.batching import INFERENCE_TOKENS, length_sorted_batches, move
from .first_token import first_token_forward


def predict_outputs(model, task, features, batch_size: int, pad_id: int, device, autocast=None) -> tuple[np.ndarray | list, float | None]:
    """The task's outputs for every example in input order, and the mean loss when labels are present.

    Outputs are one array (N, ...) when the task's are dense (logits of a classifier), or a list of
    per-example arrays when they are ragged (a tag per token, start/end scores per window)."""
    was_training = model.training
    model.eval()
    forward = first_token_forward(model) or model  # classifiers read one position of the last layer: compute only it
    dense, ragged, order = [], [], []
    loss_sum, count = torch.zeros((), dtype=torch.float64, device=device), 0
    with torch.inference_mode():
        # a task with wide outputs per token (a language model's vocabulary) batches fewer tokens
        for indices in length_sorted_batches(features.lengths, batch_size, getattr(task, "inference_tokens", INFERENCE_TOKENS)):
            batch = move(task.collate(features, indices, pad_id), device)
            labels = batch.pop("labels", None)
            with autocast() if autocast else torch.autocast("cpu", enabled=False):
                output = forward(**batch)
            if labels is not None:
                total, targets = task.loss(output, labels)
                loss_sum += total.double()
                count += targets
            out = task.outputs(output, batch if labels is None else {**batch, "labels": labels})  # a per-example loss needs them
            (dense if isinstance(out, torch.Tensor) else ragged).append(out)
            order.extend(indices)
    model.train(was_training)
    loss = float(loss_sum) / max(count, 1) if features.labels is not None else None
    positions = np.asarray(order)
    if ragged:
        result = [None] * len(order)
        for i, item in zip(order, (item for part in ragged for item in part)):
            result[i] = item
        return result, loss
    outputs = torch.cat(dense).cpu().numpy()  # one copy back, after the last batch
    result = np.empty_like(outputs)
    result[positions] = outputs
    return result, loss

