"""Entity tags and entity-level scores, checked number for number against seqeval 1.2.2."""
from __future__ import annotations

import math
import random
import warnings

import pytest
import seqeval.metrics as seqeval_metrics  # a dev dependency (seqeval==1.2.2): the reference every score is checked against
import seqeval.scheme as seqeval_scheme

from tunesmith.errors import TunesmithError
from tunesmith.tasks.entities import (detect_scheme, entity_scores, entity_spans, entity_types, repair_note, repair_tag_lists,
                                      repair_tags, spans_to_tags, spans_with_offsets)

TYPES = ("PER", "LOC", "geo-loc")  # a type with a hyphen in it, as WNUT has
SEQEVAL_SCHEMES = {"BIO": "IOB2", "IOBES": "IOBES"}


def random_tags(rng: random.Random, length: int, prefixes: str) -> list[str]:
    return [f"{rng.choice(prefixes)}-{rng.choice(TYPES)}" if rng.random() < 0.6 else "O" for _ in range(length)]


def random_corpus(rng: random.Random, prefixes: str) -> tuple[list[list[str]], list[list[str]]]:
    """True and predicted tags: predictions copy the truth or not, then some tags are redrawn."""
    true = [random_tags(rng, rng.randint(0, 10), prefixes) for _ in range(rng.randint(1, 5))]
    pred = [list(tags) if rng.random() < 0.5 else random_tags(rng, len(tags), prefixes) for tags in true]
    for tags in pred:
        for i in range(len(tags)):
            if rng.random() < 0.2:
                tags[i] = random_tags(rng, 1, prefixes)[0]
    return true, pred


def seqeval_report(true, pred, mode="default", scheme=None) -> dict:
    options = {}
    if mode == "strict":
        options = {"mode": "strict", "scheme": getattr(seqeval_scheme, SEQEVAL_SCHEMES[scheme])}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns on every type it never saw predicted
        return seqeval_metrics.classification_report(true, pred, output_dict=True, zero_division=0, **options)


def assert_same_as_seqeval(true, pred, mode="default", scheme=None) -> None:
    ours = entity_scores(true, pred, mode=mode, scheme=scheme)
    ref = seqeval_report(true, pred, mode, scheme)
    types = [name for name in ref if not name.endswith(" avg")]
    assert list(ours["per_type"]) == types
    for name in types:
        mine, theirs = ours["per_type"][name], ref[name]
        assert (mine["precision"], mine["recall"], mine["f1"], mine["support"]) == \
               (theirs["precision"], theirs["recall"], theirs["f1-score"], theirs["support"]), name
    micro, macro = ref["micro avg"], ref["macro avg"]
    assert (ours["precision"], ours["recall"], ours["f1"], ours["support"]) == \
           (micro["precision"], micro["recall"], micro["f1-score"], micro["support"])
    if types:
        assert (ours["macro_precision"], ours["macro_recall"], ours["macro_f1"]) == \
               (macro["precision"], macro["recall"], macro["f1-score"])
    else:  # seqeval's macro mean of no types is NaN; ours is 0.0 so that metrics.json stays valid JSON
        assert math.isnan(macro["f1-score"]) and ours["macro_f1"] == 0.0


@pytest.mark.parametrize("mode, scheme, prefixes", [
    ("default", None, "BI"), ("default", None, "BIES"), ("default", None, "I"),
    ("strict", "BIO", "BI"), ("strict", "IOBES", "BIES"),
])
def test_scores_equal_seqeval_on_random_tags(mode, scheme, prefixes):
    rng = random.Random(f"{mode}-{scheme}-{prefixes}")
    for _ in range(400):
        true, pred = random_corpus(rng, prefixes)
        assert_same_as_seqeval(true, pred, mode, scheme)


@pytest.mark.parametrize("true, pred", [
    ([[]], [[]]),                                          # empty sentence
    ([["O", "O"], ["O"]], [["O", "O"], ["O"]]),            # no entities at all
    ([["O", "O"]], [["B-PER", "O"]]),                      # entities predicted only
    ([["I-PER", "I-PER", "O"]], [["B-PER", "I-PER", "O"]]),  # I- at the start
    ([["B-PER", "I-LOC", "I-LOC"]], [["B-PER", "B-LOC", "I-LOC"]]),  # type switch inside an entity
    ([["S-PER", "B-LOC", "I-LOC", "E-LOC"]], [["S-PER", "B-LOC", "E-LOC", "E-LOC"]]),
    ([["B-LOC", "E-LOC", "E-LOC", "I-LOC"]], [["E-LOC", "S-LOC", "I-LOC", "O"]]),
    ([["B-PER", "O"], ["I-PER"]], [["B-PER", "I-PER"], ["I-PER"]]),  # sentences never join
])
def test_scores_equal_seqeval_on_edge_cases(true, pred):
    assert_same_as_seqeval(true, pred)
    scheme = detect_scheme(tag for tags in true + pred for tag in tags)
    if scheme in SEQEVAL_SCHEMES:
        assert_same_as_seqeval(true, pred, "strict", scheme)


def test_scores_of_no_sentences_are_zero():
    scores = entity_scores([], [])
    assert scores["f1"] == scores["macro_f1"] == 0.0 and scores["per_type"] == {} and scores["support"] == 0


def test_strict_drops_what_default_forgives():
    true = [["B-PER", "I-PER", "O", "B-LOC"]]
    pred = [["I-PER", "I-PER", "O", "B-LOC"]]
    assert entity_scores(true, pred)["f1"] == 1.0
    strict = entity_scores(true, pred, mode="strict")
    assert strict["per_type"]["PER"]["recall"] == 0.0 and strict["per_type"]["LOC"]["f1"] == 1.0
    assert strict["f1"] == pytest.approx(2 * 1.0 * 0.5 / 1.5)


def test_entity_spans_modes():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]
    assert entity_spans(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("PER", 5, 6)]
    assert entity_spans(tags, "strict", "BIO") == [("PER", 0, 2), ("LOC", 4, 5)]
    iobes = ["S-PER", "B-LOC", "E-LOC", "B-PER", "I-PER", "O", "E-LOC"]
    assert entity_spans(iobes, "strict", "IOBES") == [("PER", 0, 1), ("LOC", 1, 3)]
    assert entity_spans(iobes) == [("PER", 0, 1), ("LOC", 1, 3), ("PER", 3, 5), ("LOC", 6, 7)]
    assert entity_spans(["I-X", "I-X", "I-Y"], "strict", "IO") == [("X", 0, 2), ("Y", 2, 3)]
    assert entity_spans([]) == []


def test_strict_refuses_tags_outside_the_scheme():
    with pytest.raises(TunesmithError, match="'E-LOC' does not belong to the BIO scheme"):
        entity_spans(["B-LOC", "E-LOC"], "strict", "BIO")


@pytest.mark.parametrize("tags, scheme", [
    ({"O", "B-PER", "I-PER"}, "BIO"), ({"B-PER"}, "BIO"), ({"O", "B-X", "E-X", "S-Y"}, "IOBES"),
    ({"O", "S-X"}, "IOBES"), ({"O", "I-PER", "I-LOC"}, "IO"), ({"O"}, "BIO"), (set(), "BIO"),
])
def test_detect_scheme(tags, scheme):
    assert detect_scheme(tags) == scheme


@pytest.mark.parametrize("bad", ["PER", "B-", "b-PER", "B_PER", "", "L-PER", 3])
def test_detect_scheme_names_a_bad_tag(bad):
    with pytest.raises(TunesmithError, match=r"is not an entity tag; use O for no entity") as info:
        detect_scheme(["O", bad], source="train.conll")
    assert "train.conll" in str(info.value) and str(bad) in str(info.value)
    assert str(info.value).count(". ") == 0  # one sentence


def test_entity_types():
    assert entity_types({"O", "B-PER", "I-geo-loc", "S-PER"}) == ["PER", "geo-loc"]


@pytest.mark.parametrize("tags, scheme, fixed, count", [
    (["I-PER", "I-PER", "O", "I-LOC"], "BIO", ["B-PER", "I-PER", "O", "B-LOC"], 2),
    (["B-PER", "I-LOC", "I-LOC"], "BIO", ["B-PER", "B-LOC", "I-LOC"], 1),
    (["B-PER", "I-PER", "O", "B-LOC"], "BIO", ["B-PER", "I-PER", "O", "B-LOC"], 0),
    (["B-X", "O", "I-X", "E-X"], "IOBES", ["S-X", "O", "B-X", "E-X"], 2),
    (["I-X", "I-X", "O"], "IO", ["I-X", "I-X", "O"], 0),
    ([], "BIO", [], 0),
])
def test_repair_tags(tags, scheme, fixed, count):
    assert repair_tags(tags, scheme) == (fixed, count)


def test_repaired_tags_score_strictly_as_the_originals_score_by_default():
    """Fixing changes no score under the lenient reading, and makes the strict one agree with it."""
    rng = random.Random(7)
    for _ in range(200):
        true, pred = random_corpus(rng, "BI")
        fixed_true, _ = repair_tag_lists(true)
        fixed_pred, _ = repair_tag_lists(pred)
        assert entity_scores(fixed_true, fixed_pred, "strict", "BIO") == entity_scores(true, pred)
        assert without_nan(seqeval_report(fixed_true, fixed_pred, "strict", "BIO")) == without_nan(seqeval_report(true, pred))


def without_nan(report: dict) -> dict:
    """The report with NaN (seqeval's macro mean of no types) as None, so that equal reports compare equal."""
    return {row: {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in cells.items()}
            for row, cells in report.items()}


def test_repair_counts_over_sentences_and_says_so():
    fixed, count = repair_tag_lists([["I-PER"], ["O", "I-LOC", "I-LOC"], ["B-X"]])
    assert fixed == [["B-PER"], ["O", "B-LOC", "I-LOC"], ["B-X"]] and count == 2
    note = repair_note(count, "BIO", "train.conll")
    assert note.startswith("Fixed 2 tags of 'train.conll' that broke BIO order") and note.count(". ") == 0


def test_spans_to_tags_round_trip():
    spans = [("PER", 0, 1), ("LOC", 1, 4), ("X", 5, 7)]
    assert spans_to_tags(spans, 7, "BIO") == ["B-PER", "B-LOC", "I-LOC", "I-LOC", "O", "B-X", "I-X"]
    assert spans_to_tags(spans, 7, "IOBES") == ["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "B-X", "E-X"]
    for scheme in ("BIO", "IOBES"):
        assert entity_spans(spans_to_tags(spans, 7, scheme), "strict", scheme) == spans


def test_spans_with_offsets_keeps_the_original_text():
    text = "Ada  Lovelace met Charles Babbage in London."
    words = ["Ada", "Lovelace", "met", "Charles", "Babbage", "in", "London", "."]
    offsets, position = [], 0
    for word in words:
        position = text.index(word, position)
        offsets.append((position, position + len(word)))
        position += len(word)
    tags = ["B-PER", "I-PER", "O", "I-PER", "I-PER", "O", "B-LOC", "O"]
    scores = [0.9, 0.7, 0.99, 0.6, 0.8, 0.95, 0.5, 0.99]
    entities = spans_with_offsets(words, offsets, tags, scores, text)
    assert entities == [
        {"type": "PER", "text": "Ada  Lovelace", "start": 0, "end": 13, "score": pytest.approx(0.8)},
        {"type": "PER", "text": "Charles Babbage", "start": 18, "end": 33, "score": pytest.approx(0.7)},
        {"type": "LOC", "text": "London", "start": 37, "end": 43, "score": pytest.approx(0.5)},
    ]
    assert all(isinstance(e["score"], float) and isinstance(e["start"], int) for e in entities)
    assert spans_with_offsets([], [], [], [], "") == []
    with pytest.raises(ValueError):
        spans_with_offsets(words, offsets[:-1], tags, scores, text)
