"""QA windows over minilm-l6's real tokenizer: coverage, answer positions, and span decoding round trips."""
from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from tunesmith.errors import TunesmithError
from tunesmith.tasks.qa_windows import (NO_ANSWER, QAAnswer, Span, apply_null_threshold, best_answers, encode_windows,
                                        tune_null_threshold)

WORDS = ("the river town of Ostrava grew quickly after 1889 when a railway reached it and 4,200 workers came "
         "from far away ; its mayor , Zoë Brandt-Keller , opened schools (three of them) in the "
         "Café district").split()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from tunesmith.assets.resolve import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("minilm-l6"))


def random_example(rng: random.Random, words: int, answerable: bool = True):
    """A context of `words` shuffled words and an answer of 1-4 whole words (tokens never cross spaces)."""
    tokens = [rng.choice(WORDS) for _ in range(words)]
    context = " ".join(tokens)
    if not answerable:
        return context, []
    first = rng.randrange(words)
    last = min(words, first + rng.randint(1, 4))
    start = len(" ".join(tokens[:first])) + (1 if first else 0)
    text = " ".join(tokens[first:last])
    assert context[start:start + len(text)] == text
    return context, [{"text": text, "answer_start": start}]


def one_hot_logits(windows):
    """Logits that are 1 at each window's labelled start/end and 0 elsewhere."""
    starts, ends = [], []
    for ids, s, e in zip(windows.input_ids, windows.start_positions, windows.end_positions):
        starts.append(np.eye(len(ids))[s])
        ends.append(np.eye(len(ids))[e])
    return starts, ends


def test_windows_cover_every_context_token_with_the_stated_overlap(tokenizer):
    rng = random.Random(0)
    for words in (5, 80, 400):
        context, _ = random_example(rng, words)
        windows = encode_windows(tokenizer, ["where did the workers come from?"], [context], max_length=64, doc_stride=16)
        assert set(windows.example_index) == {0}
        alone = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        spans = [[o for o in offsets if o is not None] for offsets in windows.offsets]
        covered = sorted({o for span in spans for o in span})
        assert covered == sorted(set(map(tuple, alone)))
        assert all(len(ids) <= 64 for ids in windows.input_ids)
        for left, right in zip(spans, spans[1:]):
            assert left[-16:] == right[:16]  # neighbours share exactly doc_stride context tokens
        assert windows.lengths == [len(ids) for ids in windows.input_ids]
        assert all(windows.input_ids[w][c] == tokenizer.cls_token_id for w, c in enumerate(windows.cls_index))


def test_answer_near_the_end_of_a_long_context_is_labelled_in_exactly_the_windows_holding_it(tokenizer):
    rng = random.Random(1)
    filler = " ".join(rng.choice(WORDS[:20]) for _ in range(500))
    answer = "Professor Maribel Quandt-Ostrowski"
    tail = " ".join(rng.choice(WORDS[:20]) for _ in range(25))
    context = f"{filler} the prize went to {answer} in the end . {tail}"
    start = context.index(answer)
    windows = encode_windows(tokenizer, ["who won the prize?"], [context], [[{"text": answer, "answer_start": start}]],
                             max_length=96, doc_stride=48)
    assert len(windows) > 8
    holding = []
    for w, offsets in enumerate(windows.offsets):
        inside = [o for o in offsets if o is not None]
        contains = inside[0][0] <= start and inside[-1][1] >= start + len(answer)
        s, e = windows.start_positions[w], windows.end_positions[w]
        if contains:
            holding.append(w)
            assert context[offsets[s][0]:offsets[e][1]] == answer
        else:
            assert (s, e) == (0, 0)
    assert len(holding) >= 2 and holding == list(range(holding[0], holding[-1] + 1))
    assert holding[-1] >= len(windows) - 3  # near the end


def run_qa_positions(tokenizer, questions, contexts, answers, max_length, stride):
    """transformers' examples/pytorch/question-answering/run_qa.py prepare_train_features, as written."""
    enc = tokenizer(questions, contexts, truncation="only_second", max_length=max_length, stride=stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True, padding=False)
    starts, ends = [], []
    for i, offsets in enumerate(enc["offset_mapping"]):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id)
        sequence_ids = enc.sequence_ids(i)
        answer = answers[enc["overflow_to_sample_mapping"][i]]
        if not answer:
            starts.append(cls_index), ends.append(cls_index)
            continue
        start_char = answer[0]["answer_start"]
        end_char = start_char + len(answer[0]["text"])
        token_start_index = 0
        while sequence_ids[token_start_index] != 1:
            token_start_index += 1
        token_end_index = len(input_ids) - 1
        while sequence_ids[token_end_index] != 1:
            token_end_index -= 1
        if not (offsets[token_start_index][0] <= start_char and offsets[token_end_index][1] >= end_char):
            starts.append(cls_index), ends.append(cls_index)
        else:
            while token_start_index < len(offsets) and offsets[token_start_index][0] <= start_char:
                token_start_index += 1
            starts.append(token_start_index - 1)
            while offsets[token_end_index][1] >= end_char:
                token_end_index -= 1
            ends.append(token_end_index + 1)
    return starts, ends


def test_positions_match_run_qa_except_its_closing_separator_slip(tokenizer):
    rng = random.Random(2)
    examples = [random_example(rng, rng.randint(3, 150), answerable=rng.random() > 0.1) for _ in range(200)]
    contexts, answers = [c for c, _ in examples], [a for _, a in examples]
    questions = ["what happened in the town?"] * len(examples)
    windows = encode_windows(tokenizer, questions, contexts, answers, max_length=48, doc_stride=12)
    starts, ends = run_qa_positions(tokenizer, questions, contexts, answers, 48, 12)
    slips = 0
    for w in range(len(windows)):
        last_context = max(t for t, o in enumerate(windows.offsets[w]) if o is not None)
        if starts[w] == last_context + 1:  # run_qa's start walk went onto [SEP]
            slips += 1
            assert windows.start_positions[w] == last_context
        else:
            assert windows.start_positions[w] == starts[w]
        assert windows.end_positions[w] == ends[w]
    assert slips < len(windows) // 10


@pytest.mark.parametrize("side", ["right", "left"])
def test_gold_positions_round_trip_to_the_gold_text(tokenizer, side):
    if side == "left":  # run_qa's rule: a left-padding tokenizer takes the context first
        tokenizer = copy.deepcopy(tokenizer)
        tokenizer.padding_side = "left"
    rng = random.Random(3)
    examples = [random_example(rng, rng.randint(3, 300), answerable=i % 10 != 0) for i in range(300)]
    contexts, answers = [c for c, _ in examples], [a for _, a in examples]
    questions = [f"question number {i} about the town?" for i in range(len(examples))]
    windows = encode_windows(tokenizer, questions, contexts, answers, max_length=80, doc_stride=24)
    if side == "left":
        assert windows.offsets[0][1] is not None  # context right after [CLS]
    assert len(windows) > 1.5 * len(examples)
    starts, ends = one_hot_logits(windows)
    predicted = best_answers(starts, ends, windows, contexts, null_threshold=0.0)
    for answer, gold, context in zip(predicted, answers, contexts):
        if gold:
            assert answer.text == gold[0]["text"]
            assert context[answer.start:answer.end] == answer.text and answer.start == gold[0]["answer_start"]
            assert answer.score == 2.0 and answer.null_score_diff < 0
        else:
            assert (answer.text, answer.start, answer.end) == ("", NO_ANSWER, NO_ANSWER)
    v1 = best_answers(starts, ends, windows, contexts)  # no threshold: always a span
    assert all(a.text for a in v1)
    assert [a.text for a, g in zip(v1, answers) if g] == [g[0]["text"] for g in answers if g]


def test_best_answer_respects_length_order_context_and_padded_logits(tokenizer):
    context = "alpha beta gamma delta epsilon zeta eta theta"
    windows = encode_windows(tokenizer, ["which letter?"], [context], max_length=64, doc_stride=8)
    offsets = windows.offsets[0]
    token = {context[o[0]:o[1]]: t for t, o in enumerate(offsets) if o is not None}
    n = len(offsets)
    starts, ends = np.zeros((1, n + 5)), np.zeros((1, n + 5))  # right-padded rows are cut to the window
    starts[0, n + 2] = ends[0, n + 3] = 100.0  # in the padding: ignored
    starts[0, 1] = ends[0, 1] = 50.0  # a question token: never an answer
    starts[0, token["alpha"]], ends[0, token["theta"]] = 9.0, 9.0  # 8 tokens
    starts[0, token["gamma"]], ends[0, token["epsilon"]] = 3.0, 3.0  # alpha..epsilon is 5 tokens, gamma..theta 6
    answer = best_answers(starts, ends, windows, [context], n_best=3, max_answer_length=4)[0]
    assert answer.text == "gamma delta epsilon" and answer.score == 6.0
    assert best_answers(starts, ends, windows, [context], n_best=3, max_answer_length=30)[0].text == context
    wide = best_answers(starts, ends, windows, [context], n_best=20, max_answer_length=4)[0]
    assert wide.score == 9.0 and wide.text.startswith("alpha") and len(wide.text.split()) <= 4  # alpha + any 0-logit end
    starts, ends = np.zeros((1, n)), np.zeros((1, n))
    starts[0, token["epsilon"]], ends[0, token["beta"]] = 8.0, 8.0  # every pair with these ends before it starts
    starts[0, token["gamma"]], ends[0, token["delta"]] = 3.0, 3.0
    assert best_answers(starts, ends, windows, [context], n_best=2)[0].text == "gamma delta"
    with pytest.raises(ValueError):
        best_answers(starts[:, :3], ends[:, :3], windows, [context])


def test_null_score_is_the_smallest_cls_score_over_windows():
    span = Span("x", 0, 1, 1.0)
    assert QAAnswer("x", 0, 1, 1.0, span, 3.5).null_score_diff == 2.5
    answers = [QAAnswer("x", 0, 1, 1.0, span, 3.5), QAAnswer("x", 0, 1, 1.0, span, 0.5)]
    decided = apply_null_threshold(answers, 2.0)
    assert [a.text for a in decided] == ["", "x"] and decided[0].score == 3.5
    assert [a.text for a in apply_null_threshold(answers, None)] == ["x", "x"]


def test_tuned_threshold_separates_answerable_from_unanswerable():
    def answer(text, diff):
        return QAAnswer(text, 0, len(text), 1.0, Span(text, 0, len(text), 1.0), 1.0 + diff)

    answers = [answer("paris", -3.0), answer("1889", -1.0), answer("blue", 0.5), answer("london", 2.0), answer("red", 4.0)]
    gold = [["Paris"], ["1889"], [], ["Rome"], []]
    threshold, f1 = tune_null_threshold(answers, gold)
    assert threshold == -1.0 and f1 == 100.0 * 4 / 5  # answer the first two; London (wrong) and the no-answers get ""
    decided = apply_null_threshold(answers, threshold)
    assert [a.text for a in decided] == ["paris", "1889", "", "", ""]
    threshold, f1 = tune_null_threshold([answer("x", 1.0), answer("y", 2.0)], [[], []])
    assert f1 == 100.0 and all(a.text == "" for a in apply_null_threshold([answer("x", 1.0), answer("y", 2.0)], threshold))


def test_a_question_that_fills_the_window_is_a_clear_error(tokenizer):
    question = "what " * 60
    with pytest.raises(TunesmithError, match=r"The question 'what what what .*' is 60 tokens long, which leaves 1 of the 64-token window"):
        encode_windows(tokenizer, ["short?", question], ["a b c", "word " * 100], max_length=64, doc_stride=16)
    encode_windows(tokenizer, [question], ["tiny"], max_length=64, doc_stride=16)  # fits whole: no window needed
    with pytest.raises(TunesmithError, match="doc-stride 64"):
        encode_windows(tokenizer, ["q"], ["c"], max_length=64, doc_stride=64)

    class SlowTokenizer:
        is_fast = False

    with pytest.raises(TunesmithError, match="fast tokenizer"):
        encode_windows(SlowTokenizer(), ["q"], ["c"])


def test_real_and_generated_answers_round_trip(tokenizer):
    """SQuAD text (quotes, parentheses, a cut-off word as an answer) and facts-qa's test split."""
    from pathlib import Path

    from tunesmith.assets.generated_qa import generate_split
    from tunesmith.data.squad import read_squad

    sample = read_squad(Path(__file__).parent / "data" / "squad_sample.json").frame
    facts = generate_split("test")
    for questions, contexts, answers in [(list(sample["question"]), list(sample["context"]), list(sample["answers"])),
                                         ([r["question"] for r in facts], [r["context"] for r in facts], [r["answers"] for r in facts])]:
        windows = encode_windows(tokenizer, questions, contexts, answers, max_length=128, doc_stride=32)
        starts, ends = one_hot_logits(windows)
        predicted = best_answers(starts, ends, windows, contexts, null_threshold=0.0)
        assert [p.text for p in predicted] == [a[0]["text"] if a else "" for a in answers]
