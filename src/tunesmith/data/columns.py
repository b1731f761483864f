"""Which column is the text and which the label, and checks that their cells make sense."""
from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import TunesmithError, did_you_mean

TEXT_NAMES = ("text", "sentence", "review", "content", "document", "body", "comment", "tweet", "message",
              "utterance", "snippet", "question", "query", "description", "title", "abstract", "phrase")
LABEL_NAMES = ("label", "labels", "category", "class", "sentiment", "target", "y", "polarity", "intent",
               "topic", "tag", "rating", "stars", "emotion", "verdict", "gold_label")
MIN_TEXT_LENGTH = 8  # mean characters a column needs to pass for text when no name says so
CLOSE_TEXT_LENGTH = 0.8  # a second text column at least this long relative to the chosen one is a close call


class ColumnChoice(NamedTuple):
    """An inferred column and, when the choice was close, the runner-up (worth telling the user)."""

    column: str
    runner_up: str | None = None


def require_column(frame: pd.DataFrame, name: str, path, option: str) -> str:
    if name in frame.columns:
        return name
    by_lower = {str(c).lower(): c for c in frame.columns}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise TunesmithError(f"'{path}' has no column '{name}' (its columns: {', '.join(map(str, frame.columns))});"
                         f" pass the right one with {option}.{did_you_mean(name, frame.columns)}")


def by_name(frame: pd.DataFrame, names, exclude=()) -> str | None:
    matches = names_matching(frame, names, exclude)
    return matches[0] if matches else None


def names_matching(frame: pd.DataFrame, names, exclude=()) -> list:
    """Columns whose name is one of `names`, in the order of `names` (the first is the best)."""
    lowered = {str(c).strip().lower(): c for c in frame.columns if c not in exclude}
    return [lowered[name] for name in names if name in lowered]


def mean_text_length(series: pd.Series) -> float:
    values = series.head(2000)
    strings = [v for v in values if isinstance(v, str)]
    if len(strings) < 0.9 * len(values):
        return 0.0
    if sum(looks_numeric(v) for v in strings) > 0.5 * len(strings):
        return 0.0
    return sum(len(v) for v in strings) / max(len(strings), 1)


def looks_numeric(value) -> bool:
    if isinstance(value, numbers.Number):
        return True
    try:
        float(str(value))
        return True
    except ValueError:
        return False


def infer_text_column(frame: pd.DataFrame, path, exclude=()) -> str:
    return choose_text_column(frame, path, exclude).column


def choose_text_column(frame: pd.DataFrame, path, exclude=()) -> ColumnChoice:
    """By known name first, else the column of longest text; with a close runner-up if there is one."""
    lengths = {c: mean_text_length(frame[c]) for c in frame.columns if c not in exclude}
    named = names_matching(frame, TEXT_NAMES, exclude)
    if named:
        return ColumnChoice(named[0], named[1] if len(named) > 1 else longest_rival(lengths, named[0]))
    best = max(lengths, key=lengths.get, default=None)
    if best is None or lengths[best] < MIN_TEXT_LENGTH:
        raise TunesmithError(f"Could not tell which column of '{path}' holds the text (columns: {', '.join(map(str, frame.columns))}); name it with --text-column.")
    return ColumnChoice(best, longest_rival(lengths, best))


# Column names that come in pairs in the sentence-pair benchmarks (GLUE, NLI, paraphrase, QNLI)
PAIR_NAMES = (("sentence1", "sentence2"), ("premise", "hypothesis"), ("question", "sentence"), ("question1", "question2"),
              ("headline", "body"), ("text_a", "text_b"), ("text1", "text2"), ("sentence_a", "sentence_b"),
              ("query", "passage"), ("question", "passage"), ("claim", "evidence"), ("anchor", "candidate"))
PAIR_SUFFIXES = (("1", "2"), ("_1", "_2"), ("a", "b"), ("_a", "_b"), ("_left", "_right"), ("_first", "_second"))


def split_column_list(value: str | None, frame: pd.DataFrame) -> list[str] | None:
    """`--text-column a,b`: the names of a text pair (a column whose name has a comma is one column)."""
    if not value or "," not in value or value in frame.columns:
        return None
    names = [name.strip() for name in value.split(",")]
    if len(names) != 2 or not all(names):
        raise TunesmithError(f"--text-column '{value}' names {len(names)} columns; give one text column, or two for a pair (--text-column premise,hypothesis).")
    return names


def infer_text_pair(frame: pd.DataFrame, exclude=()) -> tuple[str, str] | None:
    """Two text columns that are a pair by name (premise/hypothesis, sentence1/sentence2, question/sentence,
    headline/body, or any x1/x2, x_a/x_b), both holding text; None when no such pair is there."""
    lowered = {str(c).strip().lower(): c for c in frame.columns if c not in exclude}
    candidates = [(lowered[a], lowered[b]) for a, b in PAIR_NAMES if a in lowered and b in lowered]
    for name, column in lowered.items():
        for first, second in PAIR_SUFFIXES:
            stem = name[: -len(first)] if name.endswith(first) else None
            if stem and stem + second in lowered and stem.strip("_ ").isalpha():
                candidates.append((column, lowered[stem + second]))
    for pair in candidates:
        if all(mean_text_length(frame[c]) >= MIN_TEXT_LENGTH for c in pair):
            return pair
    return None


def input_columns(frame: pd.DataFrame, path, text: str, pair: str | None, label: str | None, given_text: str | None = None,
                  given_label: str | None = None, with_labels: bool = False) -> tuple[str, str | None, str | None]:
    """The text, pair and label columns of a predict/eval file: named by the caller, else the training
    run's names (case aside), else inferred as training infers them (a pair by its names too)."""
    def find(given, trained, option, infer):
        if given:
            return require_column(frame, given, path, option)
        by_lower = {str(c).strip().lower(): c for c in frame.columns}
        return by_lower.get(str(trained).strip().lower()) or infer()

    named = split_column_list(given_text, frame)
    if named:
        text_col, pair_col = (require_column(frame, n, path, "--text-column") for n in named)
    elif pair:
        text_col = find(given_text, text, "--text-column", lambda: None)
        pair_col = find(None, pair, "--text-column", lambda: None)
        if text_col is None or pair_col is None:
            inferred = infer_text_pair(frame)
            if inferred is None:
                raise TunesmithError(f"'{path}' has no columns '{text}' and '{pair}', the text pair this run reads (its columns: "
                                     f"{', '.join(map(str, frame.columns))}); name them with --text-column FIRST,SECOND.")
            text_col, pair_col = inferred
    else:
        pair_col = None
        text_col = find(given_text, text, "--text-column", lambda: choose_text_column(frame, path, [given_label] if given_label else []).column)
    label_col = None
    if with_labels:
        label_col = find(given_label, label, "--label-column",
                         lambda: choose_label_column(frame, path, [c for c in (text_col, pair_col) if c]).column)
    return text_col, pair_col, label_col


def longest_rival(lengths: dict, chosen) -> str | None:
    """The longest other text column, if it is nearly as long as the chosen one (or longer)."""
    rivals = {c: n for c, n in lengths.items()
              if c != chosen and n >= MIN_TEXT_LENGTH and n >= CLOSE_TEXT_LENGTH * lengths.get(chosen, 0.0)}
    return max(rivals, key=rivals.get, default=None)


def infer_label_column(frame: pd.DataFrame, path, text_columns) -> str:
    return choose_label_column(frame, path, text_columns).column


def choose_label_column(frame: pd.DataFrame, path, text_columns) -> ColumnChoice:
    """By known name first, else the column of fewest distinct values; with a close runner-up if there is one."""
    distinct = label_like_columns(frame, text_columns)
    named = names_matching(frame, LABEL_NAMES, text_columns)
    if named:
        if len(named) > 1:
            return ColumnChoice(named[0], named[1])
        return ColumnChoice(named[0], fewest_rival(distinct, named[0], frame[named[0]].astype(str).nunique()))
    if not distinct:
        raise TunesmithError(f"Could not tell which column of '{path}' holds the labels (columns: {', '.join(map(str, frame.columns))}); name it with --label-column.")
    best = min(distinct, key=distinct.get)
    return ColumnChoice(best, fewest_rival(distinct, best, distinct[best]))


def label_like_columns(frame: pd.DataFrame, text_columns) -> dict:
    """Column -> number of distinct values, for the columns that could hold labels (2 to 100 classes,
    at most one per two rows)."""
    candidates = {}
    for column in frame.columns:
        if column in text_columns:
            continue
        values = frame[column]
        if values.map(is_nested).any():
            continue
        distinct = values.astype(str).nunique()
        if 2 <= distinct <= max(2, min(100, len(frame) // 2)):
            candidates[column] = distinct
    return candidates


def fewest_rival(distinct: dict, chosen, chosen_distinct: int) -> str | None:
    """The other label-like column of fewest values, if it has at most 20% (and one) more than the chosen one."""
    margin = max(1, chosen_distinct // 5)
    rivals = {c: n for c, n in distinct.items() if c != chosen and n <= chosen_distinct + margin}
    return min(rivals, key=rivals.get, default=None)


def is_nested(value) -> bool:
    """A list, object or array cell (JSON arrays, Parquet list columns): not one text or label."""
    return isinstance(value, (list, dict, tuple, set, np.ndarray))


def is_missing(value) -> bool:
    """None, NaN, pd.NA, NaT or a blank string."""
    if isinstance(value, str):
        return not value.strip()
    return not is_nested(value) and bool(pd.isna(value))


def bad_rows(mask: pd.Series) -> str:
    rows = [str(i + 2) for i in mask[mask].index[:5]]  # +2: 1-based and the header line
    more = f" and {int(mask.sum()) - 5} more" if mask.sum() > 5 else ""
    return ", ".join(rows) + more


def clean_text(frame: pd.DataFrame, column: str, path) -> pd.Series:
    """The column as str; empty or non-text cells are an error that names the rows."""
    values = frame[column]
    non_text = values.map(lambda v: not isinstance(v, str) and not (isinstance(v, numbers.Number) and not pd.isna(v)))
    if non_text.any():
        raise TunesmithError(f"Column '{column}' of '{path}' has cells that are not text (lines {bad_rows(non_text)}); "
                             f"give every row a text or remove those rows.")
    text = values.map(str)
    empty = text.str.strip() == ""
    if empty.any():
        raise TunesmithError(f"Column '{column}' of '{path}' is empty on lines {bad_rows(empty)}; fill in the text or remove those rows.")
    if text.map(looks_numeric).all():
        raise TunesmithError(f"Column '{column}' of '{path}' holds only numbers, not text; pass the column with the text using --text-column.")
    return text


def clean_labels(frame: pd.DataFrame, column: str, path, keep_spelling: bool = False) -> pd.Series:
    """Labels as strings ('1.0' from a float column becomes '1'); missing ones name the rows.

    Surrounding spaces are stripped unless `keep_spelling` (--keep-label-spelling, which promises
    labels exactly as written: 'pos ' and 'pos' stay two classes).
    """
    values = frame[column]
    missing = values.map(is_missing)
    if missing.any():
        raise TunesmithError(f"Column '{column}' of '{path}' has no label on lines {bad_rows(missing)}; label those rows or remove them.")
    unhashable = values.map(is_nested)
    if unhashable.any():
        raise TunesmithError(f"Column '{column}' of '{path}' holds lists or objects on lines {bad_rows(unhashable)}; each row needs one label.")

    def as_name(v) -> str:
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        return str(v) if keep_spelling else str(v).strip()

    return values.map(as_name)


def spelling_key(label: str) -> str:
    """What two spellings of one label share: 'Positive', 'positive' and ' POSITIVE ' all give 'positive'."""
    return label.strip().casefold()


def merge_label_spellings(labels: pd.Series) -> tuple[pd.Series, list[list[tuple[str, int]]]]:
    """Labels with each case/space variant replaced by the group's most frequent spelling (ties: the
    first seen), and the merged groups as [(spelling, count), ...], the kept spelling first."""
    counts = labels.value_counts()
    groups: dict[str, list[tuple[str, int]]] = {}
    for spelling in labels.unique():  # first-seen order, so a stable sort below keeps ties in it
        groups.setdefault(spelling_key(spelling), []).append((spelling, int(counts[spelling])))
    merged = [sorted(group, key=lambda sc: -sc[1]) for group in groups.values() if len(group) > 1]
    renames = {spelling: group[0][0] for group in merged for spelling, _ in group[1:]}
    return labels.map(lambda spelling: renames.get(spelling, spelling)), merged


def spelling_note(merged: list[list[tuple[str, int]]], shown: int = 5) -> str:
    """The note telling which spellings were merged into which, with their counts."""
    def group_text(group):
        (kept, n), rest = group[0], group[1:]
        return f"{kept!r} ({n:,}) <- " + ", ".join(f"{s!r} ({c:,})" for s, c in rest)

    text = "; ".join(group_text(g) for g in merged[:shown])
    if len(merged) > shown:
        text += f"; and {len(merged) - shown} more"
    return f"Labels that differ only in case or spaces were merged: {text}; pass --keep-label-spelling to keep them apart."


def match_training_spellings(labels: pd.Series, training_names) -> pd.Series:
    """Validation/test labels mapped onto the training spellings, ignoring case and surrounding spaces
    (an unknown label stays as it is, for the unseen-label check to name)."""
    by_key = {spelling_key(name): name for name in training_names}
    return labels.map(lambda label: by_key.get(spelling_key(label), label))


def sort_label_names(names) -> list[str]:
    """Numbers in numeric order, otherwise alphabetical: the order of the model's label ids."""
    names = list(names)
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)
