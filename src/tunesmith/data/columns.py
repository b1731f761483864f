"""Which column is the text and which the label, and checks that their cells make sense."""
from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from ..errors import TunesmithError, did_you_mean

TEXT_NAMES = ("text", "sentence", "review", "content", "document", "body", "comment", "tweet", "message",
              "utterance", "snippet", "question", "query", "description", "title", "abstract", "phrase")
LABEL_NAMES = ("label", "labels", "category", "class", "sentiment", "target", "y", "polarity", "intent",
               "topic", "tag", "rating", "stars", "emotion", "verdict", "gold_label")


def require_column(frame: pd.DataFrame, name: str, path, option: str) -> str:
    if name in frame.columns:
        return name
    by_lower = {str(c).lower(): c for c in frame.columns}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    raise TunesmithError(f"'{path}' has no column '{name}' (its columns: {', '.join(map(str, frame.columns))});"
                         f" pass the right one with {option}.{did_you_mean(name, frame.columns)}")


def by_name(frame: pd.DataFrame, names, exclude=()) -> str | None:
    lowered = {str(c).strip().lower(): c for c in frame.columns if c not in exclude}
    for name in names:
        if name in lowered:
            return lowered[name]
    return None


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
    named = by_name(frame, TEXT_NAMES, exclude)
    if named is not None:
        return named
    lengths = {c: mean_text_length(frame[c]) for c in frame.columns if c not in exclude}
    best = max(lengths, key=lengths.get, default=None)
    if best is None or lengths[best] < 8:
        raise TunesmithError(f"Could not tell which column of '{path}' holds the text (columns: {', '.join(map(str, frame.columns))}); name it with --text-column.")
    return best


def infer_label_column(frame: pd.DataFrame, path, text_columns) -> str:
    named = by_name(frame, LABEL_NAMES, exclude=text_columns)
    if named is not None:
        return named
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
    if not candidates:
        raise TunesmithError(f"Could not tell which column of '{path}' holds the labels (columns: {', '.join(map(str, frame.columns))}); name it with --label-column.")
    return min(candidates, key=candidates.get)


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


def clean_labels(frame: pd.DataFrame, column: str, path) -> pd.Series:
    """Labels as strings ('1.0' from a float column becomes '1'); missing ones name the rows."""
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
        return str(v).strip()

    return values.map(as_name)


def sort_label_names(names) -> list[str]:
    """Numbers in numeric order, otherwise alphabetical: the order of the model's label ids."""
    names = list(names)
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)
