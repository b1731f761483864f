"""From the user's files (or a bundled dataset name) to validated train/validation/test tables."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..errors import TunesmithError
from .columns import (ColumnChoice, choose_label_column, choose_text_column, clean_labels, clean_text, infer_text_pair,
                      match_training_spellings, merge_label_spellings, require_column, sort_label_names, split_column_list,
                      spelling_note)
from .sources import read_data_file, resolve_sources

# The automatic validation split (no --validation file, no --val-fraction): 10% of the rows, at least
# min(50, 20%) and one row per label within that 20%, at most 2,000 rows.
AUTO_VAL_FRACTION = 0.10
AUTO_VAL_MIN_ROWS = 50
AUTO_VAL_MAX_FRACTION = 0.20
AUTO_VAL_MAX_ROWS = 2000
# separate random streams, so that sampling rows and splitting them do not draw the same numbers
SAMPLE_STREAM, SPLIT_STREAM = 1, 2


@dataclass
class LabeledData:
    """Tables with columns text, [text_pair], label (int id), plus the label names in id order."""

    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame | None
    label_names: list[str]
    text_column: str
    label_column: str
    text_pair_column: str | None = None
    sources: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # one sentence each, printed before training
    validation_from_split: bool = False  # True when validation was held out of the training file

    @property
    def imbalance_ratio(self) -> float:
        """Examples of the largest class over those of the smallest, in the train table."""
        counts = self.train["label"].value_counts()
        return float(counts.max() / counts.min())

    def describe(self) -> str:
        parts = [f"{len(self.train):,} train"]
        if self.validation is not None:
            parts.append(f"{len(self.validation):,} validation")
        if self.test is not None:
            parts.append(f"{len(self.test):,} test")
        return f"{' / '.join(parts)} examples, {len(self.label_names)} labels ({', '.join(self.label_names[:8])}{', ...' if len(self.label_names) > 8 else ''})"


def load_labeled_data(data_cfg, seed: int) -> LabeledData:
    """The text-classification splits of the configured files (resolve, read, prepare)."""
    sources = resolve_sources(data_cfg)
    return prepare_labeled_data(read_data_file(sources["train"], data_cfg.encoding, role="training"), sources, data_cfg, seed)


def prepare_labeled_data(train_raw: pd.DataFrame, sources: dict, data_cfg, seed: int) -> LabeledData:
    """Text, [text pair] and label columns chosen, labels tidied and mapped to ids, validation split off."""
    path = sources["train"]
    columns, notes = choose_columns(train_raw, data_cfg, path)
    text_col, pair_col, label_col = columns
    keep_spelling = data_cfg.keep_label_spelling

    train = tidy(train_raw, columns, path, keep_spelling)
    merged = []
    if not keep_spelling:
        train["label"], merged = merge_label_spellings(train["label"])
        if merged:
            notes.append(spelling_note(merged))
    if data_cfg.max_train_examples and len(train) > data_cfg.max_train_examples:
        rows = len(train)
        train = sample_per_label(train, data_cfg.max_train_examples, seed, path)
        notes.append(f"Sampled {len(train):,} of {rows:,} training rows, per label.")
    names = sort_label_names(train["label"].unique())
    if len(names) < 2:
        hint = " (spellings that differ only in case or spaces were merged; pass --keep-label-spelling to keep them apart)" if merged else ""
        raise TunesmithError(f"Column '{label_col}' of '{path}' has a single label ('{names[0]}'){hint}; a classifier needs examples of at least two classes.")

    validation = test = None
    if sources["validation"]:
        validation = read_other_file("validation", sources, columns, data_cfg, names)
    elif data_cfg.val_fraction != 0:
        train, validation, split_notes = split_off_validation(train, data_cfg.val_fraction, seed)
        notes += split_notes
    if sources["test"]:
        test = read_other_file("test", sources, columns, data_cfg, names)

    to_label_ids(train, validation, test, names, sources)  # every label keeps a training row: sampling and the split see to it
    return LabeledData(train, validation, test, names, text_col, label_col, pair_col,
                       sources={k: v for k, v in sources.items() if v}, notes=notes,
                       validation_from_split=validation is not None and not sources["validation"])


def choose_columns(raw: pd.DataFrame, data_cfg, path) -> tuple[tuple, list[str]]:
    """(text, text pair, label) columns, as given or inferred, and a note for each close inference."""
    notes = []
    text, pair_col = choose_text_columns(raw, data_cfg, path, notes)
    text_cols = [c for c in (text.column, pair_col) if c]
    if data_cfg.label_column:
        label = ColumnChoice(require_column(raw, data_cfg.label_column, path, "--label-column"))
    else:
        label = choose_label_column(raw, path, text_cols)
    if label.column in text_cols:
        raise TunesmithError(f"The text and label columns are both '{label.column}'; name them with --text-column and --label-column.")
    if pair_col == text.column:
        raise TunesmithError(f"--text-pair-column names the text column '{text.column}' again; give the second text column, or drop the option.")

    columns = (text.column, pair_col, label.column)
    notes += [f"{role} column '{choice.column}' was inferred (runner-up: '{choice.runner_up}'); pass {flag} to choose another."
             for choice, role, flag in ((text, "Text", "--text-column"), (label, "Label", "--label-column"))
             if choice.runner_up is not None and choice.runner_up not in columns]  # a runner-up used as another column was no rival
    return columns, notes


def choose_text_columns(raw: pd.DataFrame, data_cfg, path, notes: list[str]) -> tuple[ColumnChoice, str | None]:
    """The text column and the pair's second one: named (--text-column a,b or --text-pair-column),
    inferred as a pair by their names (premise/hypothesis, ...), or one inferred text column."""
    exclude = [data_cfg.label_column] if data_cfg.label_column else []
    named = split_column_list(data_cfg.text_column, raw)
    if named:
        if data_cfg.text_pair_column:
            raise TunesmithError("--text-column names a pair and --text-pair-column a second text; give the pair one way, not both.")
        return ColumnChoice(require_column(raw, named[0], path, "--text-column")), require_column(raw, named[1], path, "--text-column")
    pair = require_column(raw, data_cfg.text_pair_column, path, "--text-pair-column") if data_cfg.text_pair_column else None
    if data_cfg.text_column:
        return ColumnChoice(require_column(raw, data_cfg.text_column, path, "--text-column")), pair
    if pair is None:
        inferred = infer_text_pair(raw, exclude)
        if inferred:
            notes.append(f"Columns '{inferred[0]}' and '{inferred[1]}' were read as a text pair, encoded together; "
                         f"pass --text-column to use one text only.")
            return ColumnChoice(inferred[0]), inferred[1]
    try:
        return choose_text_column(raw, path, exclude + ([pair] if pair else [])), pair
    except TunesmithError:
        if pair is None:
            raise
        return choose_text_column(raw, path, exclude), pair  # the pair column is the only text: refused below as named twice


def tidy(raw: pd.DataFrame, columns, path, keep_spelling: bool = False) -> pd.DataFrame:
    """Keep text, [text_pair], label; check every cell; same column names in every file."""
    text_col, pair_col, label_col = columns
    frame = pd.DataFrame({"text": clean_text(raw, require_column(raw, text_col, path, "--text-column"), path)})
    if pair_col:
        frame["text_pair"] = clean_text(raw, require_column(raw, pair_col, path, "--text-pair-column"), path)
    frame["label"] = clean_labels(raw, require_column(raw, label_col, path, "--label-column"), path, keep_spelling)
    return frame.reset_index(drop=True)


def read_other_file(role: str, sources: dict, columns, data_cfg, names) -> pd.DataFrame:
    """The validation or test file, tidied, its labels spelled as in training unless --keep-label-spelling."""
    path = sources[role]
    table = tidy(read_data_file(path, data_cfg.encoding, role=role), columns, path, data_cfg.keep_label_spelling)
    if not data_cfg.keep_label_spelling:
        table["label"] = match_training_spellings(table["label"], names)
    return table


def to_label_ids(train, validation, test, names, sources) -> None:
    """Replace label names by their ids in place; a validation/test label unseen in training is an error."""
    index = {name: i for i, name in enumerate(names)}
    for role, table in (("validation", validation), ("test", test)):
        if table is None:
            continue
        unseen = sorted(set(table["label"]) - set(index))
        if unseen:
            raise TunesmithError(f"The {role} file '{sources[role]}' has labels never seen in training ({', '.join(map(repr, unseen[:5]))}); "
                                 f"the model can only predict {', '.join(map(repr, names[:10]))}: fix those labels or add training examples of them.")
    for table in (train, validation, test):
        if table is not None:
            table["label"] = table["label"].map(index).astype("int64")


# -- sampling and splitting per label ---------------------------------------------------------------

def label_counts(labels: pd.Series) -> pd.Series:
    """Rows per label, in first-seen order (a fixed order keeps seeded draws reproducible)."""
    return labels.value_counts().reindex(labels.unique())


def round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5 + 1e-9))  # 1e-9: 0.35 x 10 is 3.4999999999999996 in floats


def apportion(weights: pd.Series, total: int, cap: pd.Series) -> pd.Series:
    """`total` rows shared among labels in proportion to `weights` (largest remainders), each label at
    least one and at most its cap. Callers ensure len(weights) <= total <= cap.sum() and every cap >= 1."""
    ideal = total * weights / weights.sum()
    quota = np.floor(ideal).clip(lower=1, upper=cap).astype(int)
    while (gap := total - int(quota.sum())) != 0:
        if gap > 0:  # short: one more to the labels furthest below their share that have rows left
            behind = (ideal - quota)[quota < cap].sort_values(ascending=False, kind="stable")
            quota.loc[behind.index[:gap]] += 1
        else:  # over (the minimum of one): one fewer from the labels furthest above their share
            ahead = (quota - ideal)[quota > 1].sort_values(ascending=False, kind="stable")
            quota.loc[ahead.index[:-gap]] -= 1
    return quota


def pick_rows(labels: pd.Series, quota: pd.Series, rng) -> np.ndarray:
    """A mask choosing quota[label] random rows of each label."""
    chosen = np.zeros(len(labels), dtype=bool)
    positions = labels.groupby(labels, sort=False).indices
    for label, k in quota.items():  # in quota's order, not the dict's, for reproducible draws
        chosen[rng.choice(positions[label], size=int(k), replace=False)] = True
    return chosen


def sample_per_label(train: pd.DataFrame, n: int, seed: int, path) -> pd.DataFrame:
    """n rows (--max-train-examples), in proportion to each label's count and at least one of each."""
    counts = label_counts(train["label"])
    if n < len(counts):
        raise TunesmithError(f"--max-train-examples {n} is fewer than the {len(counts)} labels of '{path}'; "
                             f"pass at least {len(counts)} so that every label keeps a training example.")
    chosen = pick_rows(train["label"], apportion(counts, n, cap=counts), np.random.default_rng([seed, SAMPLE_STREAM]))
    return train[chosen].reset_index(drop=True)


def stratified_split(train: pd.DataFrame, fraction: float | None, seed: int):
    """(rest, held out): round(fraction x rows) held out, or the automatic size when fraction is None."""
    rest, held, _ = split_off_validation(train, fraction, seed)
    return rest, held


def split_off_validation(train: pd.DataFrame, fraction: float | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """A validation split held out of the training rows, stratified, and notes on how it was sized.

    A label's last row always stays in training; when the split is too small for one row of each
    label, it takes one of each of the largest labels and a note says which are missing.
    """
    counts = label_counts(train["label"])
    rows, spare = len(train), int((counts - 1).sum())
    if spare == 0:
        raise TunesmithError(f"Only {rows} training examples, one per label: too few to hold out a validation split; add data, pass --validation FILE, "
                             f"or use --val-fraction 0.")
    notes = []
    if fraction is None:
        size, why = automatic_validation_size(counts)
        if why:
            notes.append(f"Held out {size:,} of {rows:,} training rows for validation ({100 * size / rows:.3g}% rather than 10%: {why}).")
    else:
        size = explicit_validation_size(fraction, rows, spare)
    rng = np.random.default_rng([seed, SPLIT_STREAM])
    included = labels_in_validation(counts, size, rng)
    held = pick_rows(train["label"], apportion(counts.loc[included], size, cap=counts.loc[included] - 1), rng)
    if len(included) < len(counts):
        notes.append(missing_labels_note(counts, included, size))
    return train[~held].reset_index(drop=True), train[held].reset_index(drop=True), notes


def automatic_validation_size(counts: pd.Series) -> tuple[int, str]:
    """Rows to hold out by the automatic rule, and why it is not 10% ('' when it is)."""
    rows = int(counts.sum())
    most = round_half_up(AUTO_VAL_MAX_FRACTION * rows)
    size, why = round_half_up(AUTO_VAL_FRACTION * rows), ""
    if min(AUTO_VAL_MIN_ROWS, most) > size:
        size, why = min(AUTO_VAL_MIN_ROWS, most), "at least min(50, 20% of the rows), so that validation scores rest on enough examples"
    with_spare = int((counts >= 2).sum())
    if min(with_spare, most) > size:
        size, why = min(with_spare, most), "one row of each label that has more than one, up to 20% of the rows"
    if size > AUTO_VAL_MAX_ROWS:
        size, why = AUTO_VAL_MAX_ROWS, "validation is capped at 2,000 rows"
    spare = int((counts - 1).sum())
    if size > spare:
        size, why = spare, "every label keeps at least one training row"
    return size, why


def explicit_validation_size(fraction: float, rows: int, spare: int) -> int:
    """round(fraction x rows), exactly: never more than asked, and never a label's last row."""
    size = round_half_up(fraction * rows)
    if size == 0:
        raise TunesmithError(f"--val-fraction {fraction} of {rows} training examples is less than one row; pass a larger --val-fraction, "
                             f"--validation FILE, or --val-fraction 0.")
    if size > spare:
        raise TunesmithError(f"--val-fraction {fraction} asks for {size} of {rows} training examples, but holding out more than {spare} would leave "
                             f"a label with no training examples; use a smaller --val-fraction, add rows of the rare labels, or pass --validation FILE.")
    return size


def labels_in_validation(counts: pd.Series, size: int, rng) -> pd.Index:
    """The labels that get validation rows: all that can spare one, or the `size` largest if fewer fit."""
    can_spare = counts[counts >= 2]
    if size >= len(can_spare):
        return can_spare.index
    shuffled = can_spare.iloc[rng.permutation(len(can_spare))]  # ties of size broken at random, not by name
    return shuffled.sort_values(ascending=False, kind="stable").index[:size]


def missing_labels_note(counts: pd.Series, included: pd.Index, size: int) -> str:
    """Which labels the validation split lacks, why, and what to do about it."""
    missing = [label for label in counts.index if label not in set(included)]
    singles = int((counts.loc[missing] == 1).sum())
    reasons = []
    if singles:
        reasons.append(f"{singles} {'has' if singles == 1 else 'have'} a single row, which stays in training")
    if len(missing) > singles:
        reasons.append(f"{len(missing) - singles} did not fit in a validation split of {size:,} rows, which goes to the largest labels first")
    shown = ", ".join(map(repr, missing[:3])) + (", ..." if len(missing) > 3 else "")
    return (f"{len(missing)} of {len(counts)} labels ({shown}) {'has' if len(missing) == 1 else 'have'} no validation rows "
            f"({' and '.join(reasons)}), so validation metrics cover only the other {len(included)}; "
            f"add rows of those labels or pass --validation FILE.")
