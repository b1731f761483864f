"""Extractive QA over long contexts: question + context windows in, answer spans out.

A context longer than the model's input is cut into overlapping windows, each holding the whole
question plus a slice of the context (transformers' run_qa.py prepare_train_features /
prepare_validation_features). Training labels a window with the answer's first and last token,
or with the CLS token when the answer is not wholly inside it. Prediction picks, over all of a
question's windows, the best valid span (run_qa's postprocess_qa_predictions) and, for SQuAD
v2-style data, compares it with the null score: the smallest CLS start+end logit of any window.

Pure functions over a fast tokenizer (its offset mappings tie tokens to characters); windows are
never padded here, so positions index the unpadded ids whichever side the collator pads on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from ..errors import TunesmithError
from .qa_scoring import best_threshold, f1_score, gold_texts

NO_ANSWER = -1  # character start/end of the "" answer


@dataclass
class QAWindows:
    """One row per window; `offsets[w][t]` is token t's (start, end) in its context, None outside it."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    example_index: list[int]
    offsets: list[list[tuple[int, int] | None]]
    cls_index: list[int]
    start_positions: list[int] | None = None  # None when encoded without answers
    end_positions: list[int] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


class Span(NamedTuple):
    text: str
    start: int  # characters in the context, end exclusive
    end: int
    score: float  # start logit + end logit
    window: int = -1  # the window it was read from (-1: none)


@dataclass(frozen=True)
class QAAnswer:
    """A question's answer ("" for no answer) and what the choice was made from."""

    text: str
    start: int
    end: int
    score: float
    best_span: Span  # the best non-empty span, kept so that a threshold can be re-tuned without the model
    null_score: float
    null_window: int = -1  # the window whose CLS score is null_score

    @property
    def null_score_diff(self) -> float:
        """run_qa's score diff: larger means more likely unanswerable."""
        return self.null_score - self.best_span.score


def encode_windows(tokenizer, questions: Sequence[str], contexts: Sequence[str], answers: Sequence[Sequence[dict]] | None = None,
                   max_length: int = 384, doc_stride: int = 128, question_first: bool | None = None) -> QAWindows:
    """Windows of every (question, context); with answers (lists of {"text", "answer_start"}, the
    first one labels, [] = no answer) each window gets its answer's token positions.

    doc_stride is the number of context tokens two neighbouring windows share (the tokenizer's
    `stride`, as in run_qa). question_first defaults to run_qa's rule: a tokenizer that pads on
    the left (as some decoder tokenizers do) takes the context first.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise TunesmithError("Question answering needs a fast tokenizer (one with offset mappings); use a model whose folder has a tokenizer.json.")
    if not 0 <= doc_stride < max_length:
        raise TunesmithError(f"The window overlap (--doc-stride {doc_stride}) must be at least 0 and below the window length (--max-length {max_length}); lower it.")
    if question_first is None:
        question_first = tokenizer.padding_side == "right"
    # run_qa: leading spaces on a question waste window room and can make truncation fail
    questions = [q.lstrip() for q in questions]
    check_room(tokenizer, questions, contexts, max_length, doc_stride)
    first, second = (questions, contexts) if question_first else (contexts, questions)
    encoded = tokenizer(list(first), list(second), truncation="only_second" if question_first else "only_first",
                        max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True, padding=False)
    context_id = 1 if question_first else 0
    windows = QAWindows(input_ids=encoded["input_ids"], token_type_ids=encoded.get("token_type_ids"),
                        example_index=list(encoded["overflow_to_sample_mapping"]), offsets=[], cls_index=[])
    for w, ids in enumerate(windows.input_ids):
        sequence_ids = encoded.sequence_ids(w)
        windows.offsets.append([tuple(o) if s == context_id else None for o, s in zip(encoded["offset_mapping"][w], sequence_ids)])
        windows.cls_index.append(cls_position(tokenizer, ids))
    if answers is not None:
        windows.start_positions, windows.end_positions = [], []
        for w, example in enumerate(windows.example_index):
            start, end = answer_tokens(windows.offsets[w], answers[example][0] if len(answers[example]) else None)
            windows.start_positions.append(windows.cls_index[w] if start is None else start)
            windows.end_positions.append(windows.cls_index[w] if end is None else end)
    return windows


def check_room(tokenizer, questions, contexts, max_length: int, doc_stride: int) -> None:
    """A question that leaves no more context room than the overlap cannot be windowed (the Rust
    tokenizer panics on it), so say which one and what to change before it is tried."""
    special = tokenizer.num_special_tokens_to_add(pair=True)
    question_lengths = [len(ids) for ids in tokenizer(list(questions), add_special_tokens=False)["input_ids"]]
    tight = [i for i, n in enumerate(question_lengths) if max_length - special - n <= doc_stride]
    if not tight:
        return
    context_lengths = [len(ids) for ids in tokenizer([contexts[i] for i in tight], add_special_tokens=False)["input_ids"]]
    for i, context_length in zip(tight, context_lengths):
        room = max_length - special - question_lengths[i]
        if context_length > room:
            shown = repr(questions[i] if len(questions[i]) <= 40 else questions[i][:37] + "...")
            raise TunesmithError(f"The question {shown} is {question_lengths[i]} tokens long, which leaves {max(room, 0)} of the {max_length}-token "
                                 f"window for its context, no more than the overlap of {doc_stride}; shorten the question, raise --max-length, "
                                 f"or lower --doc-stride.")


def cls_position(tokenizer, ids: list[int]) -> int:
    """Where a window's "no answer" label points: the CLS token (BOS for tokenizers without one)."""
    for special in (tokenizer.cls_token_id, tokenizer.bos_token_id):
        if special is not None and special in ids:
            return ids.index(special)
    return 0


def answer_tokens(offsets: list, answer: dict | None) -> tuple[int | None, int | None]:
    """(first, last) token of the answer in this window, or (None, None) when it is not wholly inside.

    run_qa's walk, kept inside the context tokens: its start loop steps onto the closing separator
    (offsets (0, 0)) when the answer begins in the window's last context token.
    """
    if answer is None:
        return None, None
    start_char = answer["answer_start"]
    end_char = start_char + len(answer["text"])
    context = [t for t, o in enumerate(offsets) if o is not None]
    if not context or not (offsets[context[0]][0] <= start_char and offsets[context[-1]][1] >= end_char):
        return None, None
    start = max(t for t in context if offsets[t][0] <= start_char)
    end = min(t for t in context if offsets[t][1] >= end_char)
    return start, end


def best_answers(start_logits, end_logits, windows: QAWindows, contexts: Sequence[str], n_best: int = 20, max_answer_length: int = 30,
                 null_threshold: float | None = None) -> list[QAAnswer]:
    """One QAAnswer per context (question), best over its windows.

    start_logits/end_logits: one row per window, at least as long as the window (longer rows,
    padded on the right, are cut). A span is valid when both ends are context tokens, it is at most
    max_answer_length tokens, and it is among the window's n_best starts and n_best ends.
    null_threshold None: always answer the best span (SQuAD v1.1); a number: answer "" when
    null score - best span score > null_threshold (SQuAD v2.0; run_qa's default is 0.0).
    """
    best = [Span("", NO_ANSWER, NO_ANSWER, -math.inf) for _ in contexts]
    null = [math.inf for _ in contexts]
    null_window = [-1 for _ in contexts]
    for w, example in enumerate(windows.example_index):
        offsets = windows.offsets[w]
        n = len(offsets)
        starts, ends = np.asarray(start_logits[w], dtype=np.float64), np.asarray(end_logits[w], dtype=np.float64)
        if len(starts) < n or len(ends) < n:
            raise ValueError(f"window {w} has {n} tokens but {min(len(starts), len(ends))} logits")
        starts, ends = starts[:n], ends[:n]
        cls = windows.cls_index[w]
        if starts[cls] + ends[cls] < null[example]:
            null[example], null_window[example] = float(starts[cls] + ends[cls]), w
        span = best_span_in_window(starts, ends, offsets, n_best, max_answer_length)
        if span is not None and span[2] > best[example].score:  # strictly: the first window wins a tie, as in run_qa
            char_start, char_end = offsets[span[0]][0], offsets[span[1]][1]
            best[example] = Span(contexts[example][char_start:char_end], char_start, char_end, span[2], w)
    return [decide(span, null_score, null_threshold, window) for span, null_score, window in zip(best, null, null_window)]


def best_span_in_window(starts: np.ndarray, ends: np.ndarray, offsets: list, n_best: int, max_answer_length: int):
    """(start token, end token, score) of the window's best valid span, or None.

    Scoring all n_best x n_best pairs at once replaces run_qa's double loop; its order (starts by
    falling logit, then ends by falling logit) decides ties the same way via argmax's first hit.
    """
    top_starts = np.argsort(starts)[-1:-n_best - 1:-1]
    top_ends = np.argsort(ends)[-1:-n_best - 1:-1]
    in_context = np.array([o is not None for o in offsets])
    char_start = np.array([o[0] if o is not None else 0 for o in offsets])
    char_end = np.array([o[1] if o is not None else 0 for o in offsets])
    s, e = top_starts[:, None], top_ends[None, :]
    valid = (in_context[s] & in_context[e] & (e >= s) & (e - s + 1 <= max_answer_length)
             & (char_end[e] > char_start[s]))  # run_qa skips spans whose text is empty
    if not valid.any():
        return None
    scores = np.where(valid, starts[s] + ends[e], -np.inf)
    i, j = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(top_starts[i]), int(top_ends[j]), float(scores[i, j])


def decide(span: Span, null_score: float, null_threshold: float | None, null_window: int = -1) -> QAAnswer:
    if null_threshold is not None and null_score - span.score > null_threshold:
        return QAAnswer("", NO_ANSWER, NO_ANSWER, null_score, span, null_score, null_window)
    return QAAnswer(span.text, span.start, span.end, span.score, span, null_score, null_window)


def apply_null_threshold(answers: Sequence[QAAnswer], null_threshold: float | None) -> list[QAAnswer]:
    """The same answers decided again under another threshold (no model needed)."""
    return [decide(a.best_span, a.null_score, null_threshold, a.null_window) for a in answers]


def tune_null_threshold(answers: Sequence[QAAnswer], gold_answers: Sequence[Sequence[str]]) -> tuple[float, float]:
    """(threshold, F1 in percent): the null_threshold for best_answers that maximises validation F1,
    by the official SQuAD v2 search (best_f1_thresh) over the answers' null score diffs.

    gold_answers: each question's gold answer texts, [] when it has no answer.
    """
    if len(answers) != len(gold_answers):
        raise ValueError(f"{len(answers)} answers for {len(gold_answers)} questions")
    qids = [str(i) for i in range(len(answers))]
    predictions = {q: a.best_span.text for q, a in zip(qids, answers)}
    f1 = {q: max(f1_score(predictions[q], g) for g in gold_texts(gold)) for q, gold in zip(qids, gold_answers)}
    na_probs = {q: a.null_score_diff for q, a in zip(qids, answers)}
    has_answer = {q: bool(list(gold)) for q, gold in zip(qids, gold_answers)}
    best_f1, threshold = best_threshold(predictions, f1, na_probs, has_answer)
    return threshold, best_f1
