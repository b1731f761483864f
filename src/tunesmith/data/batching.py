"""Batches without wasted padding: length-grouped order for training, length-sorted for inference.

The order of an epoch depends only on (seed, epoch), so a resumed run can skip exactly the
batches it already did.
"""
from __future__ import annotations

import numpy as np
import torch


def length_grouped_batches(lengths, batch_size: int, seed: int, epoch: int, mega: int = 50) -> list[list[int]]:
    """Shuffle, cut into mega-batches of `mega` batches, sort each by length, shuffle the batches.

    Examples of similar length share a batch (little padding) while the order stays random
    (the same idea as the Hugging Face Trainer's group_by_length sampler).
    """
    lengths = np.asarray(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    size = batch_size * mega
    batches = []
    for start in range(0, len(order), size):
        chunk = order[start:start + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size))
    # the longest batch first: an out-of-memory error shows up at once, not at minute 50
    longest = max(range(len(batches)), key=lambda b: lengths[batches[b]].max() * len(batches[b]))
    first = batches.pop(longest)
    rest = [batches[i] for i in rng.permutation(len(batches))]
    return [first] + rest


# padded tokens in one inference batch: 128 sentences of 128 tokens, or 42 QA windows of 384 (128 of those
# held 5.9 GB at the peak, against 3.8 GB for the Trainer's batches of 64: bench/ner_qa.py qa --quick)
INFERENCE_TOKENS = 16_384


def length_sorted_batches(lengths, batch_size: int, max_tokens: int = INFERENCE_TOKENS) -> list[list[int]]:
    """Inference batches in order of length (least padding), of at most `batch_size` examples and, where
    the inputs are long, `max_tokens` padded tokens; callers restore the original order."""
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)  # sorted longest first: the batch pads to this one
        size = max(1, min(batch_size, max_tokens // longest))
        batches.append(order[start:start + size].tolist())
        start += size
    return batches


def pad_batch(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token id lists to the longest in the batch; returns ids and attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids, mask


def move(batch: dict, device) -> dict:
    """To the device; through pinned memory to a GPU, so the copy overlaps with the work queued before it."""
    device = torch.device(device)
    if device.type == "cuda":
        return {k: move(v, device) if isinstance(v, dict) else v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}
    return {k: move(v, device) if isinstance(v, dict) else v.to(device) for k, v in batch.items()}  # labels may be a dict (DPO)
