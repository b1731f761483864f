"""Tables of text tasks whose rows are not one class each (regression scores, sets of labels).

data/prepare.py stratifies by label: every class keeps a training row and the validation split
mirrors the class shares. A score or a label set has no classes to stratify by, so these tasks
sample and split at random, with the same seeded streams and the same automatic sizes (10% of
the rows, at least min(50, 20%), at most 2,000). The rest is shared with text classification:
the text columns are chosen as it chooses them (only the label column is the task's own), the
validation, test, predict and eval files are read with the same columns.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import TunesmithError
from .columns import clean_text, require_column
from .prepare import (SAMPLE_STREAM, SPLIT_STREAM, automatic_validation_size, choose_columns,
                      explicit_validation_size)
from .sources import read_data_file

# (raw table, label column, path) -> the label column of the task's table
LabelReader = Callable[[pd.DataFrame, str, object], pd.Series]


@dataclass
class RandomSplits:
    """train/validation/test tables with columns text, [text_pair], label, and how they were made."""

    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame | None
    text_column: str
    label_column: str
    text_pair_column: str | None
    sources: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    validation_from_split: bool = False

    def sizes(self) -> str:
        """'8,603 train / 1,000 validation / 1,000 test examples'."""
        parts = [f"{len(self.train):,} train"]
        parts += [f"{len(t):,} {name}" for name, t in (("validation", self.validation), ("test", self.test)) if t is not None]
        return f"{' / '.join(parts)} examples"

    def columns(self) -> str:
        pair = f", text pair column '{self.text_pair_column}'" if self.text_pair_column else ""
        return f"text column '{self.text_column}'{pair}, label column '{self.label_column}'"


def sample_rows(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n random rows (--max-train-examples), in their original order."""
    rng = np.random.default_rng([seed, SAMPLE_STREAM])
    return table.iloc[np.sort(rng.choice(len(table), size=n, replace=False))].reset_index(drop=True)


def split_off_random_validation(train: pd.DataFrame, fraction: float | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(rest, validation, notes): a random validation split, sized as prepare.py sizes a stratified one
    (the rows counted as one class, so at least one row stays in training)."""
    rows = len(train)
    if rows < 2:
        raise TunesmithError(f"Only {rows} training example: too few to hold out a validation split; add data, pass --validation FILE, "
                             f"or use --val-fraction 0.")
    notes = []
    if fraction is None:
        size, why = automatic_validation_size(pd.Series([rows]))
        if why:
            notes.append(f"Held out {size:,} of {rows:,} training rows for validation ({100 * size / rows:.3g}% rather than 10%: {why}).")
    else:
        size = explicit_validation_size(fraction, rows, spare=rows - 1)
    held = np.zeros(rows, dtype=bool)
    held[np.random.default_rng([seed, SPLIT_STREAM]).choice(rows, size=size, replace=False)] = True
    return train[~held].reset_index(drop=True), train[held].reset_index(drop=True), notes


def text_columns(raw: pd.DataFrame, text_column: str, pair_column: str | None, path) -> pd.DataFrame:
    """Columns text, [text_pair] of one file, every cell checked."""
    table = pd.DataFrame({"text": clean_text(raw, require_column(raw, text_column, path, "--text-column"), path)})
    if pair_column:
        table["text_pair"] = clean_text(raw, require_column(raw, pair_column, path, "--text-pair-column"), path)
    return table.reset_index(drop=True)


def text_table(raw: pd.DataFrame, columns: tuple, path, read_labels: LabelReader) -> pd.DataFrame:
    """Columns text, [text_pair], label of one file."""
    text_col, pair_col, label_col = columns
    table = text_columns(raw, text_col, pair_col, path)
    table["label"] = read_labels(raw, require_column(raw, label_col, path, "--label-column"), path).to_numpy()
    return table


def prepare_random_splits(raw: pd.DataFrame, sources: dict, data_cfg, seed: int, label_column: str,
                          read_labels: LabelReader) -> RandomSplits:
    """The task's tables: text columns chosen as text classification chooses them (the label column is
    the task's choice), rows sampled and the validation split held out at random, other files read alike."""
    path = sources["train"]
    columns, notes = choose_columns(raw, dataclasses.replace(data_cfg, label_column=label_column), path)
    train = text_table(raw, columns, path, read_labels)
    if data_cfg.max_train_examples and len(train) > data_cfg.max_train_examples:
        rows = len(train)
        train = sample_rows(train, data_cfg.max_train_examples, seed)
        notes.append(f"Sampled {len(train):,} of {rows:,} training rows at random.")

    def read_other(role: str) -> pd.DataFrame:
        return text_table(read_data_file(sources[role], data_cfg.encoding, role=role), columns, sources[role], read_labels)

    validation = test = None
    if sources.get("validation"):
        validation = read_other("validation")
    elif data_cfg.val_fraction != 0:
        train, validation, split_notes = split_off_random_validation(train, data_cfg.val_fraction, seed)
        notes += split_notes
    if sources.get("test"):
        test = read_other("test")
    text_col, pair_col, label_col = columns
    return RandomSplits(train, validation, test, text_col, label_col, pair_col, sources={k: v for k, v in sources.items() if v},
                        notes=notes, validation_from_split=validation is not None and not sources.get("validation"))


# -- predict and eval inputs -------------------------------------------------------------------

def read_input_table(path, data_cfg, trained: tuple, column: str | None, with_labels: bool,
                     read_labels: LabelReader) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(columns text, [text_pair], [label]; the file's raw rows) of a predict/eval file. `trained` is the
    run's (text, pair, label) column names; the file's columns are found as text classification finds them."""
    from .columns import input_columns

    raw = read_data_file(path, data_cfg.encoding, role="input")
    text, pair, label = input_columns(raw, path, *trained, column, data_cfg.label_column, with_labels)
    table = text_columns(raw, text, pair, path)
    if with_labels:
        table["label"] = read_labels(raw, label, path).to_numpy()
    return table, raw
