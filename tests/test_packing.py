"""Packing for causal-LM training: examples in a packed row behave exactly as they do alone."""
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tunesmith.data.packing import (IGNORE, block_causal_mask, collate_packed, collate_unpacked, pack,
                                    shifted_loss_rows, shifted_loss_sum, target_tokens)
from tunesmith.errors import TunesmithError

PAD = 0


def tiny_llama(attention: str) -> LlamaForCausalLM:
    """A random 2-layer Llama; use_cache stays at its default (on), the setting that breaks packing by
    position_ids alone, so these tests also show the 4-D mask does not depend on it."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         attn_implementation=attention)
    return LlamaForCausalLM(config).eval()


def make_examples(lengths, seed=1):
    """(input_ids, labels) pairs: a prompt of -100 labels then targets; some are all targets, so the
    first token of an example is a label the packed collate has to drop."""
    rng = random.Random(seed)
    examples = []
    for k, n in enumerate(lengths):
        ids = [rng.randrange(1, 64) for _ in range(n)]
        prompt = 0 if k % 2 == 0 else rng.randrange(1, n)
        examples.append((ids, [IGNORE] * prompt + ids[prompt:]))
    return examples


LENGTHS = [7, 3, 5, 9, 2, 6, 4]


def alone(model, example):
    ids, labels = (torch.tensor([x]) for x in example)
    with torch.no_grad():
        return model(input_ids=ids).logits[0], labels


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logits_equal_each_example_alone(attention):
    model, examples = tiny_llama(attention), make_examples(LENGTHS)
    rows = pack([len(ids) for ids, _ in examples], max_length=11)
    assert len(rows) < len(examples) and any(len(row) > 1 for row in rows)
    batch = collate_packed(examples, rows, PAD)
    batch.pop("labels")
    assert (batch["input_ids"] == PAD).any()  # a padded row too (example ids are never PAD)
    with torch.no_grad():
        logits = model(**batch).logits
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            expected, _ = alone(model, examples[index])
            got = logits[r, start:start + len(expected)]
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
            start += len(expected)
    # the check can fail: the same rows with a plain causal mask differ from the examples alone
    with torch.no_grad():
        leaky = model(input_ids=batch["input_ids"]).logits
    second = rows[0][1]
    start = len(examples[rows[0][0]][0])
    expected, _ = alone(model, examples[second])
    assert (leaky[0, start:start + len(expected)] - expected).abs().max() > 1e-3


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_loss_sum_and_target_count_equal_the_examples_alone(attention):
    model, examples = tiny_llama(attention), make_examples(LENGTHS)
    rows = pack([len(ids) for ids, _ in examples], max_length=11)
    batch = collate_packed(examples, rows, PAD)
    labels = batch.pop("labels")
    with torch.no_grad():
        packed_sum, packed_count = shifted_loss_sum(model(**batch).logits, labels)
    expected_sum, expected_count = 0.0, 0
    for example in examples:
        ids, example_labels = (torch.tensor([x]) for x in example)
        with torch.no_grad():
            mean = model(input_ids=ids, labels=example_labels).loss  # transformers' own shifted mean
        count = int((example_labels[0, 1:] != IGNORE).sum())
        expected_sum += mean.item() * count
        expected_count += count
    assert packed_count == expected_count == target_tokens(labels)
    assert packed_sum.item() == pytest.approx(expected_sum, rel=1e-5)


def test_no_label_is_predicted_across_a_boundary():
    examples = make_examples(LENGTHS)
    rows = pack([len(ids) for ids, _ in examples], max_length=11)
    batch = collate_packed(examples, rows, PAD)
    labels, positions = batch["labels"], batch["position_ids"]
    # a target at t is predicted from t-1: t must not start an example (position 0) nor be padding
    targets = labels != IGNORE
    assert targets.any()
    assert not (targets & (positions == 0)).any()
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            ids, example_labels = examples[index]
            end = start + len(ids)
            assert batch["input_ids"][r, start:end].tolist() == ids
            assert positions[r, start:end].tolist() == list(range(len(ids)))
            assert labels[r, start:end].tolist() == [IGNORE] + example_labels[1:]
            start = end
        assert labels[r, start:].eq(IGNORE).all() and batch["input_ids"][r, start:].eq(PAD).all()


def test_block_causal_mask_keeps_each_segment_to_itself():
    mask = block_causal_mask(torch.tensor([[0, 0, 1, 1, 1, 2]]))
    allowed = (mask[0, 0] == 0).int().tolist()
    assert allowed == [[1, 0, 0, 0, 0, 0],
                       [1, 1, 0, 0, 0, 0],
                       [0, 0, 1, 0, 0, 0],
                       [0, 0, 1, 1, 0, 0],
                       [0, 0, 1, 1, 1, 0],
                       [0, 0, 0, 0, 0, 1]]
    assert mask.shape == (1, 1, 6, 6) and mask.min() == torch.finfo(torch.float32).min


@pytest.mark.parametrize("max_length", [1, 5, 16, 64])
@pytest.mark.parametrize("seed", [None, 0, 3])
def test_pack_respects_max_length_and_keeps_every_index_once(max_length, seed):
    lengths = [random.Random(k).randint(1, 40) for k in range(200)]
    rows = pack(lengths, max_length, seed=seed)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    for row in rows:
        assert len(row) == 1 or sum(lengths[i] for i in row) <= max_length
    assert pack(lengths, max_length, seed=seed) == rows  # deterministic


def test_pack_fills_rows_and_puts_overlong_examples_alone():
    assert sorted(map(sorted, pack([6, 4, 5, 5, 3, 7], 10))) == [[0, 1], [2, 3], [4, 5]]
    rows = pack([12, 3, 10, 2], 10)
    assert [0] in rows and [2] in rows and sorted(map(sorted, rows)) == [[0], [1, 3], [2]]
    assert pack([], 8) == []
    many = [3] * 40
    assert len(pack(many, 12)) == 10
    groups = {seed: sorted(map(sorted, pack(many, 12, seed=seed))) for seed in (1, 2)}
    assert groups[1] != groups[2]  # a seed changes which examples share a row, not only the row order


@pytest.mark.parametrize("lengths, max_length, match", [([3, 0], 8, "no tokens"), ([3], 0, "max-length")])
def test_pack_bad_input(lengths, max_length, match):
    with pytest.raises(TunesmithError, match=match):
        pack(lengths, max_length)


def test_collate_bad_input():
    with pytest.raises(TunesmithError, match="3 tokens but 2 labels"):
        collate_packed([([1, 2, 3], [1, 2])], [[0]], PAD)
    with pytest.raises(TunesmithError, match="no tokens"):
        collate_unpacked([([], [])], [0], PAD)
    with pytest.raises(TunesmithError, match="at least one example"):
        collate_packed([([1], [1])], [[]], PAD)


def test_unpacked_collate_gives_the_same_losses_and_logits():
    model, examples = tiny_llama("sdpa"), make_examples(LENGTHS)
    indices = [3, 1, 4, 0]
    batch = collate_unpacked(examples, indices, PAD)
    labels = batch.pop("labels")
    assert batch["attention_mask"].sum(1).tolist() == [len(examples[i][0]) for i in indices]
    assert labels[batch["attention_mask"] == 0].eq(IGNORE).all()
    with torch.no_grad():
        logits = model(**batch).logits
    for row, index in enumerate(indices):
        expected, example_labels = alone(model, examples[index])
        torch.testing.assert_close(logits[row, :len(expected)], expected, atol=1e-5, rtol=0)
        got_sum, got_count = shifted_loss_sum(logits[row:row + 1], labels[row:row + 1])
        want_sum, want_count = shifted_loss_sum(expected[None], example_labels)
        assert got_count == want_count and got_sum.item() == pytest.approx(want_sum.item(), rel=1e-5)


def test_target_tokens_counts_after_the_shift():
    labels = [[IGNORE, 5, 6, IGNORE], [7, 8, IGNORE, IGNORE]]
    assert target_tokens(labels) == 3  # 7 starts its row: nothing predicts it
    assert target_tokens(torch.tensor(labels)) == 3
    assert target_tokens([7, 8, 9]) == 2 and target_tokens(torch.tensor([7, 8, 9])) == 2
    assert target_tokens([]) == 0


def test_loss_over_micro_batches_divided_by_step_targets_equals_one_batch():
    """What the loop relies on for gradient accumulation: sums and counts add across micro-batches."""
    model, examples = tiny_llama("sdpa"), make_examples(LENGTHS)
    rows = pack([len(ids) for ids, _ in examples], max_length=11)
    whole = collate_packed(examples, rows, PAD)
    parts = [collate_packed(examples, rows[:1], PAD), collate_packed(examples, rows[1:], PAD)]
    with torch.no_grad():
        def summed(batch):
            labels = batch.pop("labels")
            return shifted_loss_sum(model(**batch).logits, labels)
        big_sum, big_count = summed(whole)
        sums, counts = zip(*(summed(p) for p in parts))
    assert sum(counts) == big_count
    assert (sum(sums) / sum(counts)).item() == pytest.approx((big_sum / big_count).item(), rel=1e-5)


def test_per_row_losses_add_up_to_the_batch_loss():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 64)
    labels = torch.randint(0, 64, (3, 6))
    labels[0, :3] = IGNORE
    labels[2, 4:] = IGNORE
    sums, counts = shifted_loss_rows(logits, labels)
    total, count = shifted_loss_sum(logits, labels)
    assert counts.tolist() == [3, 5, 3] and int(counts.sum()) == count
    assert float(sums.sum()) == pytest.approx(float(total), rel=1e-6)
