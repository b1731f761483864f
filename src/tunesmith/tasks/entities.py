"""Entity tags (BIO, IOBES, IO): reading spans out of tag sequences, repairing them, scoring them.

Written here rather than imported so that the NER task needs no extra package at run time; the
tests check every number against seqeval 1.2.2 (`classification_report(..., output_dict=True)`),
whose "default" mode is the conlleval reading and whose "strict" mode counts only well-formed
entities of the given scheme.

Spans are (type, start, end) with `end` exclusive, like a Python slice of the sentence.
"""
from __future__ import annotations

import re
from collections import Counter
from itertools import chain
from typing import Iterable, Sequence

import numpy as np

from ..errors import TunesmithError

SCHEMES = ("BIO", "IOBES", "IO")
MODES = ("default", "strict")
ENTITY_TAG = re.compile(r"(?P<prefix>[BIES])-(?P<type>\S+)")
TAG_HELP = "use O for no entity and B-TYPE / I-TYPE (or E-TYPE / S-TYPE) for the words of an entity, such as B-PER"
ALLOWED_PREFIXES = {"BIO": set("BIO"), "IOBES": set("BIOES"), "IO": set("IO")}

Span = tuple[str, int, int]


def split_tag(tag: str, source: str | None = None) -> tuple[str, str]:
    """('B', 'PER') for 'B-PER', ('O', '') for 'O'."""
    if tag == "O":
        return "O", ""
    match = ENTITY_TAG.fullmatch(tag) if isinstance(tag, str) else None
    if match is None:
        where = f" in '{source}'" if source else ""
        raise TunesmithError(f"The tag {str(tag)[:40]!r}{where} is not an entity tag; {TAG_HELP}.")
    return match["prefix"], match["type"]


def detect_scheme(tags: Iterable[str], source: str | None = None) -> str:
    """'IOBES' when any E-/S- tag occurs, else 'BIO' when any B- does, else 'IO' (only I- and O).

    A set of only O tags is called BIO, the commonest scheme. IOE files (I-, E-, no B-) read as
    IOBES: the default reading scores them right; strict IOBES does not count entities without B-.
    """
    prefixes = {split_tag(tag, source)[0] for tag in set(tags)}
    if prefixes & {"E", "S"}:
        return "IOBES"
    if "B" in prefixes or "I" not in prefixes:
        return "BIO"
    return "IO"


def entity_types(tags: Iterable[str]) -> list[str]:
    """The entity types a tag set names, sorted: ['LOC', 'PER'] for {'O', 'B-PER', 'I-LOC'}."""
    return sorted({split_tag(tag)[1] for tag in set(tags)} - {""})


def entity_spans(tags: Sequence[str], mode: str = "default", scheme: str | None = None) -> list[Span]:
    """The entities in one sentence's tags, as (type, start, end) with `end` exclusive.

    mode="default" reads leniently, as conlleval and seqeval's default do: an I-X after O or after
    another type still starts an entity, and a B-X I-Y pair is two entities. mode="strict" counts
    only entities well formed in `scheme` (detected from the tags when None): B-X I-X* for BIO,
    S-X or B-X I-X* E-X for IOBES; IO has no boundaries to be strict about, so reads as default.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    parts = [split_tag(tag) for tag in tags]
    if mode == "default":
        return default_spans(parts)
    scheme = scheme or detect_scheme(tags)
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, not {scheme!r}")
    for tag, (prefix, _) in zip(tags, parts):
        if prefix not in ALLOWED_PREFIXES[scheme]:
            raise TunesmithError(f"The tag {tag!r} does not belong to the {scheme} scheme; score with mode='default', "
                                 f"or use only {'/'.join(sorted(ALLOWED_PREFIXES[scheme]))} tags.")
    if scheme == "IO":
        return default_spans(parts)
    return strict_spans(parts, ends_with_e=scheme == "IOBES")


def default_spans(parts: list[tuple[str, str]]) -> list[Span]:
    # seqeval's end_of_chunk / start_of_chunk, condensed; a trailing O closes the last entity
    spans = []
    prev, prev_type, begin = "O", "", 0
    for i, (prefix, type_) in enumerate(parts + [("O", "")]):
        if prev in "ES" or (prev in "BI" and prefix in "BSO") or (prev != "O" and prev_type != type_):
            spans.append((prev_type, begin, i))
        if prefix in "BS" or (prev in "ESO" and prefix in "IE") or (prefix != "O" and prev_type != type_):
            begin = i
        prev, prev_type = prefix, type_
    return spans


def strict_spans(parts: list[tuple[str, str]], ends_with_e: bool) -> list[Span]:
    spans = []
    i, n = 0, len(parts)
    while i < n:
        prefix, type_ = parts[i]
        if prefix == "S":
            spans.append((type_, i, i + 1))
            i += 1
        elif prefix == "B":
            j = i + 1
            while j < n and parts[j] == ("I", type_):
                j += 1
            if not ends_with_e:
                spans.append((type_, i, j))
            elif j < n and parts[j] == ("E", type_):
                j += 1
                spans.append((type_, i, j))
            i = j  # an unfinished IOBES entity counts for nothing, and its words start nothing either
        else:
            i += 1
    return spans


def spans_to_tags(spans: Iterable[Span], length: int, scheme: str = "BIO") -> list[str]:
    """Tags of `length` words holding `spans`, written in `scheme`."""
    tags = ["O"] * length
    for type_, start, end in spans:
        if scheme == "IO":
            tags[start:end] = [f"I-{type_}"] * (end - start)
        elif scheme == "IOBES" and end - start == 1:
            tags[start] = f"S-{type_}"
        else:
            tags[start:end] = [f"B-{type_}"] + [f"I-{type_}"] * (end - start - 1)
            if scheme == "IOBES":
                tags[end - 1] = f"E-{type_}"
    return tags


def repair_tags(tags: Sequence[str], scheme: str = "BIO") -> tuple[list[str], int]:
    """Tags rewritten as well-formed `scheme`, and how many changed: fixed, with a note.

    Tags out of order (an I-X after O or after another type, a B-X I-Y pair, an IOBES entity
    without its E-) are fixed rather than refused, the way seqeval's default conlleval-style
    reading already reads them: I-X after O becomes B-X. The caller reports the count in a note
    (see `repair_note`), so the user knows their file was read this way.
    """
    fixed = spans_to_tags(entity_spans(tags, "default"), len(tags), scheme)
    return fixed, sum(a != b for a, b in zip(tags, fixed))


def repair_tag_lists(tag_lists: Iterable[Sequence[str]], scheme: str = "BIO") -> tuple[list[list[str]], int]:
    """`repair_tags` over many sentences: the fixed lists and the total number of tags changed."""
    fixed, count = [], 0
    for tags in tag_lists:
        tags, changed = repair_tags(tags, scheme)
        fixed.append(tags)
        count += changed
    return fixed, count


def repair_note(fixes: int, scheme: str, source: str) -> str:
    """The one-sentence note printed before training when `repair_tags` changed tags."""
    return (f"Fixed {fixes:,} tag{'s' if fixes != 1 else ''} of '{source}' that broke {scheme} order (an I-X after O or after "
            f"another type now reads B-X), the way the default entity scoring reads them.")


def entity_scores(true_tag_lists: Sequence[Sequence[str]], pred_tag_lists: Sequence[Sequence[str]],
                  mode: str = "default", scheme: str | None = None) -> dict:
    """Entity-level precision, recall and F1, as seqeval's classification_report computes them.

    Returns precision/recall/f1 over all entities (micro), macro_precision/macro_recall/macro_f1
    (unweighted means over types), support (true entities), predicted (predicted entities) and
    per_type: {type: {precision, recall, f1, support}}. An entity counts as found only if its type,
    start and end all match. With no entity of any type on either side every number is 0.0
    (seqeval gives NaN for the macro means there, which JSON cannot hold).
    """
    if len(true_tag_lists) != len(pred_tag_lists):
        raise ValueError(f"{len(true_tag_lists)} true tag lists but {len(pred_tag_lists)} predicted ones")
    if mode == "strict" and scheme is None:
        scheme = detect_scheme(chain.from_iterable(true_tag_lists))
    true, pred = set(), set()
    for sentence, (true_tags, pred_tags) in enumerate(zip(true_tag_lists, pred_tag_lists)):
        if len(true_tags) != len(pred_tags):
            raise ValueError(f"sentence {sentence}: {len(true_tags)} true tags but {len(pred_tags)} predicted ones")
        true.update((sentence,) + span for span in entity_spans(true_tags, mode, scheme))
        pred.update((sentence,) + span for span in entity_spans(pred_tags, mode, scheme))
    types = sorted({span[1] for span in true | pred})
    found, n_pred, n_true = (Counter(span[1] for span in spans) for spans in (true & pred, pred, true))
    found, n_pred, n_true = (np.array([counts[t] for t in types], dtype=np.int64) for counts in (found, n_pred, n_true))
    precision, recall, f1 = precision_recall_f1(found, n_pred, n_true)
    micro = precision_recall_f1(found.sum(keepdims=True), n_pred.sum(keepdims=True), n_true.sum(keepdims=True))
    mean = (lambda values: float(np.mean(values))) if types else (lambda values: 0.0)
    return {
        "precision": float(micro[0][0]), "recall": float(micro[1][0]), "f1": float(micro[2][0]),
        "macro_precision": mean(precision), "macro_recall": mean(recall), "macro_f1": mean(f1),
        "support": int(n_true.sum()), "predicted": int(n_pred.sum()),
        "per_type": {t: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                         "support": int(n_true[k])} for k, t in enumerate(types)},
    }


def precision_recall_f1(found: np.ndarray, n_pred: np.ndarray, n_true: np.ndarray):
    """Element-wise, with 0.0 where a denominator is 0; the same float operations as seqeval's."""
    precision = found / np.where(n_pred == 0, 1, n_pred)
    recall = found / np.where(n_true == 0, 1, n_true)
    denominator = precision + recall
    f1 = 2 * precision * recall / np.where(denominator == 0, 1, denominator)
    return precision, recall, f1


def spans_with_offsets(words: Sequence[str], offsets: Sequence[tuple[int, int]], tags: Sequence[str],
                       scores: Sequence[float], text: str) -> list[dict]:
    """Entities of raw text from word-level predictions, for `predict` on a sentence.

    `offsets[i]` is the (start, end) character range of `words[i]` in `text`, `scores[i]` the
    probability of its predicted tag. Each entity is {type, text, start, end, score}: `text` is
    the slice of the original text (spaces and punctuation inside kept), `end` exclusive, and
    `score` the mean probability of its words. Tags are read leniently (mode="default"), so a
    model that starts an entity with I- still shows it.
    """
    if not len(words) == len(offsets) == len(tags) == len(scores):
        raise ValueError(f"{len(words)} words, {len(offsets)} offsets, {len(tags)} tags and {len(scores)} scores")
    entities = []
    for type_, first, last in entity_spans(tags, "default"):
        start, end = int(offsets[first][0]), int(offsets[last - 1][1])
        entities.append({"type": type_, "text": text[start:end], "start": start, "end": end,
                         "score": float(np.mean(scores[first:last]))})
    return entities


SCHEME_PREFIXES = {"BIO": "BI", "IOBES": "BIES", "IO": "I"}


def label_space(types: Iterable[str], scheme: str) -> list[str]:
    """The model's labels: O first, then every tag of each type in the scheme, types sorted.

    ['O', 'B-LOC', 'I-LOC', 'B-PER', 'I-PER'] for BIO: every prefix of a type gets a label even if
    the training data never used it (an entity of one word never needs I-), so a test sentence
    with a longer entity of a known type still has labels for its words.
    """
    return ["O"] + [f"{prefix}-{type_}" for type_ in sorted(set(types)) for prefix in SCHEME_PREFIXES[scheme]]


def check_tag_lists(tag_lists: Iterable[Sequence[str]], source) -> None:
    """Refuse a tag that is no entity tag at all ('PER', 'B_PER', 'o'), naming the row: such a tag
    cannot be repaired (its prefix says nothing about where an entity starts), unlike tags out of order."""
    for row, tags in enumerate(tag_lists, start=1):
        for tag in tags:
            if tag != "O" and not (isinstance(tag, str) and ENTITY_TAG.fullmatch(tag)):
                raise TunesmithError(f"'{source}' row {row} has the tag {str(tag)[:40]!r}, which is not an entity tag, so it was refused "
                                     f"(tags out of B/I order are fixed, but this one names no position in an entity); {TAG_HELP}.")
