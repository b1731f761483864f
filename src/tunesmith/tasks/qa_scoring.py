"""SQuAD exact match and F1, as the official v1.1 and v2.0 evaluation scripts compute them.

Written from the official scripts' logic (rajpurkar's evaluate-v2.0.py), not imported: the
`evaluate` package ships the squad metrics only as hub scripts, which are unreachable offline.
- normalize_answer: lower case, drop punctuation, drop the articles a/an/the, squeeze spaces.
- F1 over bags of normalized tokens; the maximum over the gold answers counts.
- v2: a question whose gold answers are all empty (after normalizing) has the gold answer "",
  which only an empty prediction matches (EM 1, F1 1); HasAns_/NoAns_ split the totals.
On SQuAD v1.1 data the v2 rules give the v1.1 numbers (its gold answers are never empty).
Scores are percentages (0-100), as in the official output.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Mapping, Sequence

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def answer_tokens(text: str) -> list[str]:
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(prediction))


def f1_score(prediction: str, gold: str) -> float:
    gold_tokens, predicted_tokens = answer_tokens(gold), answer_tokens(prediction)
    if not gold_tokens or not predicted_tokens:
        # a no-answer on either side: right only when both are no-answers (v2 rule)
        return float(gold_tokens == predicted_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def gold_texts(answers: Sequence[str]) -> list[str]:
    """The gold answers that count: empty ones drop out, and none left means the gold is ''."""
    texts = [a for a in answers if normalize_answer(a)]
    return texts or [""]


def raw_scores(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]]) -> tuple[dict, dict]:
    """Per question id: (exact match 0/1, F1 0-1), each the maximum over its gold answers.

    A question with no prediction scores 0 (v1.1's rule; the v2 script leaves it out of the total,
    which would reward skipping hard questions).
    """
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        texts = gold_texts(answers)
        predicted = predictions.get(qid)
        if predicted is None:
            exact[qid], f1[qid] = 0, 0.0
            continue
        exact[qid] = max(exact_match(predicted, t) for t in texts)
        f1[qid] = max(f1_score(predicted, t) for t in texts)
    return exact, f1


def apply_no_answer_threshold(scores: Mapping[str, float], na_probs: Mapping[str, float], has_answer: Mapping[str, bool],
                              threshold: float) -> dict:
    """Scores after answering "" wherever na_probs > threshold (the official rule)."""
    return {qid: float(not has_answer[qid]) if na_probs[qid] > threshold else s for qid, s in scores.items()}


def summary(exact: Mapping[str, float], f1: Mapping[str, float], qids=None) -> dict:
    qids = list(exact) if qids is None else list(qids)
    if not qids:
        return {"exact": 0.0, "f1": 0.0, "total": 0}
    return {"exact": 100.0 * sum(exact[q] for q in qids) / len(qids), "f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
            "total": len(qids)}


def best_threshold(predictions: Mapping[str, str], scores: Mapping[str, float], na_probs: Mapping[str, float],
                   has_answer: Mapping[str, bool]) -> tuple[float, float]:
    """(best score in percent, the na_prob threshold reaching it): the official find_best_thresh.

    Start from answering nothing (every NoAns question right), then answer questions in order of
    rising na_prob, keeping the best running total. Two repairs, so the returned threshold really
    gives the returned score under "answer when na_prob <= threshold": questions with equal
    na_prob are answered together (the official loop could stop inside a tie), and "answer
    nothing" returns a threshold below every na_prob instead of the official 0.0.
    """
    if not scores:
        return 0.0, 0.0
    order = sorted((q for q in na_probs if q in scores), key=lambda q: na_probs[q])
    running = best = sum(1 for q in scores if not has_answer[q])
    best_thresh = min(na_probs[q] for q in order) - 1.0 if order else 0.0
    for i, qid in enumerate(order):
        if has_answer[qid]:
            running += scores[qid]
        elif predictions.get(qid):
            running -= 1
        tie_continues = i + 1 < len(order) and na_probs[order[i + 1]] == na_probs[qid]
        if running > best and not tie_continues:
            best, best_thresh = running, na_probs[qid]
    return 100.0 * best / len(scores), float(best_thresh)


def squad_scores(predictions: Mapping[str, str], gold: Mapping[str, Sequence[str]], na_probs: Mapping[str, float] | None = None,
                 na_prob_threshold: float = 1.0) -> dict:
    """The official v2.0 result: exact, f1, total, HasAns_*/NoAns_* (where present) and, with
    na_probs (larger = more likely unanswerable), best_exact/best_f1 and their thresholds.

    gold maps question id -> gold answer texts ([] for an unanswerable question).
    """
    has_answer = {qid: bool(list(answers)) for qid, answers in gold.items()}  # the official rule: any gold answer listed
    exact, f1 = raw_scores(predictions, gold)
    if na_probs is not None:
        exact = apply_no_answer_threshold(exact, na_probs, has_answer, na_prob_threshold)
        f1 = apply_no_answer_threshold(f1, na_probs, has_answer, na_prob_threshold)
    result = summary(exact, f1)
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q in gold if has_answer[q] == wanted]
        if qids:
            result.update({f"{prefix}_{k}": v for k, v in summary(exact, f1, qids).items()})
    if na_probs is not None:
        raw_exact, raw_f1 = raw_scores(predictions, gold)
        result["best_exact"], result["best_exact_thresh"] = best_threshold(predictions, raw_exact, na_probs, has_answer)
        result["best_f1"], result["best_f1_thresh"] = best_threshold(predictions, raw_f1, na_probs, has_answer)
    return result
