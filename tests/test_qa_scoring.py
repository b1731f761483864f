"""SQuAD EM/F1: hand-computed cases, and agreement with the official v2.0 script's logic."""
from __future__ import annotations

import collections
import random
import re
import string

import pytest

from tunesmith.tasks.qa_scoring import (best_threshold, exact_match, f1_score, normalize_answer, raw_scores,
                                        squad_scores)


def test_normalize_answer():
    assert normalize_answer("The  Eiffel-Tower!") == "eiffeltower"
    assert normalize_answer("a cat, an owl and THE dog.") == "cat owl and dog"
    assert normalize_answer("theatre anthem") == "theatre anthem"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_hand_computed_f1_and_exact_match():
    assert exact_match("the Eiffel Tower", "Eiffel tower.") == 1
    assert f1_score("Eiffel Tower in Paris", "the Eiffel Tower") == pytest.approx(2 * (2 / 4) * (2 / 2) / (2 / 4 + 1))  # 0.667
    assert f1_score("in 1889", "1889") == pytest.approx(2 / 3)
    assert f1_score("paris paris", "paris") == pytest.approx(2 * 0.5 * 1 / 1.5)  # bags: the second 'paris' is unmatched
    assert f1_score("", "") == 1.0 and f1_score("", "paris") == 0.0 and f1_score("paris", "") == 0.0
    assert f1_score("the", "a") == 1.0  # both normalize to nothing: both "no answer"


def test_v2_scores_with_has_and_no_answer_splits():
    gold = {"q1": ["Paris", "in Paris"], "q2": ["1889"], "q3": [], "q4": []}
    predictions = {"q1": "in Paris", "q2": "1888 or 1889", "q3": "", "q4": "London"}
    result = squad_scores(predictions, gold)
    # EM: q1 1, q2 0, q3 1, q4 0; F1: q1 1, q2 2*(1/3)*1/(4/3)=0.5, q3 1, q4 0
    assert result["exact"] == pytest.approx(50.0) and result["f1"] == pytest.approx(62.5) and result["total"] == 4
    assert result["HasAns_exact"] == pytest.approx(50.0) and result["HasAns_f1"] == pytest.approx(75.0) and result["HasAns_total"] == 2
    assert result["NoAns_exact"] == pytest.approx(50.0) and result["NoAns_total"] == 2
    v1 = squad_scores({"q1": "Paris", "q2": "x"}, {"q1": ["Paris"], "q2": ["1889"]})
    assert "NoAns_total" not in v1 and v1["exact"] == 50.0
    assert raw_scores({}, {"q1": ["Paris"]}) == ({"q1": 0}, {"q1": 0.0})  # a missing prediction scores 0


# -- the official evaluate-v2.0.py logic, transcribed as the reference ------------------------------

def official_normalize(s):
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_tokens(s):
    return official_normalize(s).split() if s else []


def official_f1(a_gold, a_pred):
    gold_toks, pred_toks = official_tokens(a_gold), official_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def official_evaluate(gold, preds, na_probs, thresh):
    qid_to_has_ans = {k: bool(v) for k, v in gold.items()}
    exact_raw, f1_raw = {}, {}
    for qid, answers in gold.items():
        gold_answers = [a for a in answers if official_normalize(a)] or [""]
        exact_raw[qid] = max(int(official_normalize(a) == official_normalize(preds[qid])) for a in gold_answers)
        f1_raw[qid] = max(official_f1(a, preds[qid]) for a in gold_answers)

    def apply(scores):
        return {q: float(not qid_to_has_ans[q]) if na_probs[q] > thresh else s for q, s in scores.items()}

    def find_best_thresh(scores):
        num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
        cur_score = best_score = num_no_ans
        best_thresh = 0.0
        for qid in sorted(na_probs, key=lambda k: na_probs[k]):
            if qid_to_has_ans[qid]:
                diff = scores[qid]
            else:
                diff = -1 if preds[qid] else 0
            cur_score += diff
            if cur_score > best_score:
                best_score, best_thresh = cur_score, na_probs[qid]
        return 100.0 * best_score / len(scores), best_thresh

    exact, f1 = apply(exact_raw), apply(f1_raw)
    out = {"exact": 100.0 * sum(exact.values()) / len(exact), "f1": 100.0 * sum(f1.values()) / len(f1), "total": len(exact)}
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [k for k, v in qid_to_has_ans.items() if v == wanted]
        if qids:
            out[f"{prefix}_exact"] = 100.0 * sum(exact[k] for k in qids) / len(qids)
            out[f"{prefix}_f1"] = 100.0 * sum(f1[k] for k in qids) / len(qids)
            out[f"{prefix}_total"] = len(qids)
    out["best_exact"], out["best_exact_thresh"] = find_best_thresh(exact_raw)
    out["best_f1"], out["best_f1_thresh"] = find_best_thresh(f1_raw)
    return out


VOCAB = ["the", "a", "Paris", "paris.", "Tower", "tower", "1889", "in", "of", "Eiffel", "an", "France", "(1889)", "—", "Zoë"]


def random_text(rng):
    return " ".join(rng.choice(VOCAB) for _ in range(rng.randint(0, 4)))


def test_agrees_with_the_official_script_on_random_cases():
    rng = random.Random(0)
    for trial in range(200):
        gold, preds, na_probs = {}, {}, {}
        for i in range(rng.randint(1, 12)):
            qid = f"q{i}"
            gold[qid] = [] if rng.random() < 0.3 else [random_text(rng) or "Paris" for _ in range(rng.randint(1, 3))]
            preds[qid] = random_text(rng)
            na_probs[qid] = rng.random() + i * 1e-9  # distinct: the official loop's ties are undefined
        thresh = rng.choice([0.3, 0.5, 1.0])
        expected = official_evaluate(gold, preds, na_probs, thresh)
        got = squad_scores(preds, gold, na_probs, thresh)
        assert set(got) == set(expected)
        for key in expected:
            if key.endswith("_thresh") and got[key] < min(na_probs.values()):
                # "answer nothing" is best: we return a threshold below every na_prob, the script 0.0
                assert expected[key] == 0.0
                continue
            assert got[key] == pytest.approx(expected[key]), (trial, key)


def test_best_threshold_handles_ties_and_answer_nothing():
    has = {"a": True, "b": False, "c": True}
    preds = {"a": "x", "b": "y", "c": "z"}
    # a is right, b must stay unanswered, c is wrong; a and b share na_prob 0.4 so they go together
    score, thresh = best_threshold(preds, {"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.4, "b": 0.4, "c": 0.9}, has)
    assert score == 100.0 / 3 and thresh == pytest.approx(-0.6)  # answering a and b together is no gain over nothing
    score, thresh = best_threshold(preds, {"a": 1.0, "b": 0.0, "c": 0.0}, {"a": 0.2, "b": 0.4, "c": 0.9}, has)
    assert (score, thresh) == (200.0 / 3, 0.2)
