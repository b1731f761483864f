"""Packing causal-LM examples into rows without attention, positions or loss crossing their boundaries.

Short chat examples padded to the longest in a batch waste most of the work; packed into rows of up to
--max-length tokens they waste almost none. Three things must stay inside each example:

- positions: `position_ids` restart at 0 for every example, so rotary embeddings see what they see alone;
- attention: a block-diagonal causal mask, so no token attends to an earlier example in its row;
- loss: HF causal LMs predict the label at position t from position t-1, so the first token of every
  example gets label -100; otherwise the last token of one example would be trained to predict the
  first token of the next. Alone, that first token is never predicted either (the shift drops it), so
  a packed row has exactly the target tokens of its examples run one by one.

Why an explicit 4-D float mask, not position_ids alone. transformers 5 (masking_utils.py) has two ways in:
(1) with `attention_mask=None` it finds packed rows from position_ids that restart
(`find_packed_sequence_indices`) and builds the block-diagonal mask itself, and (2) a 4-D mask of shape
(batch, 1, q, k) is used as given (`_preprocess_mask_arguments` returns it before any other logic).
Way (1) is skipped whenever a cache exists, and LlamaModel makes a DynamicCache whenever `use_cache` is
on, which is the config default even in train mode: the row then gets a plain causal mask and attention
crosses examples with no error (measured on a tiny Llama: logits off by 0.19, against 5e-8 with the
mask). Way (2) does not depend on use_cache. The mask is additive float (0 keep, the dtype's minimum
elsewhere) because eager attention adds it to the scores: a boolean mask is right for sdpa but eager
adds it as 0/1 (off by 0.15 in the same check). With the float mask each example's logits match its
logits alone for sdpa and eager: to 1e-5 in fp32 (tests/test_packing.py), identical under bf16 autocast
and with bf16 weights (checked by hand on the same tiny Llama).
Its cost is a (batch, L, L) tensor, the size of the mask transformers builds internally for sdpa/eager
anyway. Flash-attention kernels take no 4-D mask: they want one flat row with restarting position_ids
(transformers' DataCollatorWithFlattening), a GPU-only path this module does not build.
"""
from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TunesmithError
from .batching import pad_batch

IGNORE = -100  # the label the loss skips: prompt tokens, example starts, padding


def pack(lengths: Sequence[int], max_length: int, seed: int | None = None) -> list[list[int]]:
    """Group example indices into rows of at most `max_length` tokens: best-fit decreasing.

    Examples go longest first into the row with the least room that still fits them (a new row when
    none does): as good as first-fit decreasing (both within 11/9 of the fewest rows) and O(n log n)
    with a sorted list of free room. An example of `max_length` tokens or more is a row alone (the
    caller truncated it already). Deterministic: without a seed, ties keep index order and rows come
    longest-first; with a seed, ties are broken and the rows ordered by that seed, so each epoch can
    pack differently and still be reproduced.
    """
    if int(max_length) < 1:
        raise TunesmithError(f"Packing needs --max-length of at least 1 token, got {max_length}; set a positive --max-length.")
    lengths = [int(n) for n in lengths]
    empty = [i for i, n in enumerate(lengths) if n < 1]
    if empty:
        raise TunesmithError(f"{len(empty)} example(s) have no tokens (the first is example {empty[0]}); "
                             "drop empty examples before packing.")
    rng = np.random.default_rng(seed) if seed is not None else None
    order = rng.permutation(len(lengths)).tolist() if rng is not None else list(range(len(lengths)))
    order.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep the (seeded) order
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row number), sorted: the first that fits is the tightest
    for index in order:
        size = lengths[index]
        at = bisect.bisect_left(free, (size, -1))
        if size >= max_length or at == len(free):
            rows.append([index])
            room, row = max_length - size, len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(index)
            room -= size
        if room > 0:
            bisect.insort(free, (room, row))
    if rng is not None:
        rows = [rows[r] for r in rng.permutation(len(rows))]
    return rows


def _ids_and_labels(examples, index: int) -> tuple[list[int], list[int]]:
    """One example's token ids and labels, from an object with .input_ids/.labels (data/chat.py's
    EncodedChat), a mapping with those keys, or an (input_ids, labels) pair."""
    example = examples[index]
    if isinstance(example, Mapping):
        ids, labels = example["input_ids"], example["labels"]
    elif hasattr(example, "input_ids"):
        ids, labels = example.input_ids, example.labels
    else:
        ids, labels = example
    ids, labels = [int(t) for t in ids], [int(t) for t in labels]
    if not ids:
        raise TunesmithError(f"Example {index} has no tokens; drop empty examples before batching.")
    if len(ids) != len(labels):
        raise TunesmithError(f"Example {index} has {len(ids)} tokens but {len(labels)} labels; "
                             "encode it again so that every token has one label (-100 for no loss).")
    return ids, labels


def block_causal_mask(segments: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The additive (batch, 1, L, L) mask where a token sees only earlier tokens of its own segment.

    `segments` is (batch, L) with one id per example (padding gets an id of its own). 0 keeps a score,
    the dtype's minimum removes it; every token sees itself, so no softmax row is empty.
    """
    width = segments.shape[-1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    allowed = causal & (segments[:, :, None] == segments[:, None, :])
    mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def collate_packed(examples, rows: Sequence[Sequence[int]], pad_id: int,
                   mask_dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """A batch of packed rows (lists of example indices, from `pack`), right-padded to the longest row.

    Returns input_ids and labels (B, L), position_ids (B, L) restarting at 0 for each example, and
    attention_mask (B, 1, L, L), the block-diagonal causal mask of `block_causal_mask`. Each example's
    first label is -100 (see the module docstring); padding has pad_id, labels -100 and a segment of
    its own. `mask_dtype` may be the model's dtype (bf16 halves the mask); float32 works for all.
    """
    if not rows or any(len(row) == 0 for row in rows):
        raise TunesmithError("A packed batch needs at least one row and every row at least one example; "
                             "build the rows with pack().")
    width = max(sum(len(_ids_and_labels(examples, i)[0]) for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    labels = torch.full(shape, IGNORE, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    segments = torch.zeros(shape, dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for segment, index in enumerate(row):
            ids, example_labels = _ids_and_labels(examples, index)
            end = start + len(ids)
            input_ids[r, start:end] = torch.tensor(ids)
            labels[r, start:end] = torch.tensor(example_labels)
            labels[r, start] = IGNORE  # predicted from the previous example's last token: never a target
            position_ids[r, start:end] = torch.arange(len(ids))
            segments[r, start:end] = segment
            start = end
        position_ids[r, start:] = torch.arange(width - start)
        segments[r, start:] = len(row)  # padding: its own block, which no real token can see
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids,
            "attention_mask": block_causal_mask(segments, mask_dtype)}


def collate_unpacked(examples, indices: Sequence[int], pad_id: int) -> dict[str, torch.Tensor]:
    """One example per row (--packing off): right-padded input_ids, a 2-D attention_mask, labels -100 on padding."""
    if not indices:
        raise TunesmithError("An unpacked batch needs at least one example index.")
    pairs = [_ids_and_labels(examples, i) for i in indices]
    input_ids, attention_mask = pad_batch([ids for ids, _ in pairs], pad_id)
    labels = torch.full(input_ids.shape, IGNORE, dtype=torch.long)
    for row, (_, example_labels) in enumerate(pairs):
        labels[row, :len(example_labels)] = torch.tensor(example_labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def target_tokens(labels) -> int:
    """Tokens a causal-LM loss covers: labels not -100 after the shift (the first of each row is never
    predicted). The loop divides the step's summed loss by this total, so gradient accumulation gives the
    update of one big batch. Takes a (B, L) or (L,) tensor, or a list of label lists."""
    if not isinstance(labels, torch.Tensor):
        rows = [labels] if labels and not isinstance(labels[0], (list, tuple)) else labels
        return sum(sum(1 for t in row[1:] if t != IGNORE) for row in rows)
    labels = labels if labels.dim() > 1 else labels[None]
    return int((labels[:, 1:] != IGNORE).sum())


def shifted_loss_rows(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy summed over each row's target tokens, each row's target count), with the causal shift:
    per example where every row holds one (evaluation batches)."""
    logits, targets = logits[:, :-1].float(), labels[:, 1:].to(logits.device)
    per_token = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    return per_token.sum(1), (targets != IGNORE).sum(1)


def shifted_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(cross-entropy summed over the target tokens, their count), with the causal shift: logits at t
    score the label at t+1. Works on packed and unpacked batches alike."""
    logits = logits[:, :-1].float()
    targets = labels[:, 1:].to(logits.device)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return total, target_tokens(labels)
