"""From the user's files (or a bundled dataset name) to validated train/validation/test tables."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..assets.registry import DATASETS, dataset_files, require_dataset
from ..errors import TunesmithError
from .columns import (clean_labels, clean_text, infer_label_column, infer_text_column, require_column,
                      sort_label_names)
from .read import read_table


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

    def describe(self) -> str:
        parts = [f"{len(self.train):,} train"]
        if self.validation is not None:
            parts.append(f"{len(self.validation):,} validation")
        if self.test is not None:
            parts.append(f"{len(self.test):,} test")
        return f"{' / '.join(parts)} examples, {len(self.label_names)} labels ({', '.join(self.label_names[:8])}{', ...' if len(self.label_names) > 8 else ''})"


def resolve_sources(data_cfg) -> dict[str, str | None]:
    """Paths of train/validation/test: a file, or the files of a bundled dataset name."""
    if not data_cfg.data:
        raise TunesmithError("No training data given; pass a file (CSV, TSV, JSON, JSONL, Parquet) or a bundled dataset name such as rotten-tomatoes.")
    sources = {"train": data_cfg.data, "validation": data_cfg.validation, "test": data_cfg.test}
    path = Path(data_cfg.data)
    if not path.exists() and not path.suffix and (data_cfg.data in DATASETS or "/" not in data_cfg.data):
        require_dataset(data_cfg.data)
        files = dataset_files(data_cfg.data)
        sources["train"] = str(files["train"])
        if data_cfg.validation is None and data_cfg.val_fraction > 0:
            sources["validation"] = str(files["validation"])
        if data_cfg.test is None:
            sources["test"] = str(files["test"])
    return sources


def load_labeled_data(data_cfg, seed: int) -> LabeledData:
    sources = resolve_sources(data_cfg)
    train_raw = read_table(sources["train"], data_cfg.encoding, role="training")
    path = sources["train"]

    if data_cfg.text_column:
        text_col = require_column(train_raw, data_cfg.text_column, path, "--text-column")
    else:
        exclude = [data_cfg.label_column] if data_cfg.label_column else []
        text_col = infer_text_column(train_raw, path, exclude)
    pair_col = require_column(train_raw, data_cfg.text_pair_column, path, "--text-pair-column") if data_cfg.text_pair_column else None
    text_cols = [c for c in (text_col, pair_col) if c]
    if data_cfg.label_column:
        label_col = require_column(train_raw, data_cfg.label_column, path, "--label-column")
    else:
        label_col = infer_label_column(train_raw, path, text_cols)
    if label_col in text_cols:
        raise TunesmithError(f"The text and label columns are both '{label_col}'; name them with --text-column and --label-column.")
    if pair_col == text_col:
        raise TunesmithError(f"--text-pair-column names the text column '{text_col}' again; give the second text column, or drop the option.")

    columns = (text_col, pair_col, label_col)
    train = tidy(train_raw, columns, path)
    if data_cfg.max_train_examples and len(train) > data_cfg.max_train_examples:
        train = train.sample(n=data_cfg.max_train_examples, random_state=seed).reset_index(drop=True)
    names = sort_label_names(train["label"].unique())
    if len(names) < 2:
        raise TunesmithError(f"Column '{label_col}' of '{path}' has a single label ('{names[0]}'); a classifier needs examples of at least two classes.")

    validation = test = None
    if sources["validation"]:
        validation = tidy(read_table(sources["validation"], data_cfg.encoding, role="validation"), columns, sources["validation"])
    elif data_cfg.val_fraction > 0:
        train, validation = stratified_split(train, data_cfg.val_fraction, seed)
    if sources["test"]:
        test = tidy(read_table(sources["test"], data_cfg.encoding, role="test"), columns, sources["test"])

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
    if len(train) < len(names):
        raise TunesmithError(f"Only {len(train)} training examples for {len(names)} labels; add more labeled rows.")
    return LabeledData(train, validation, test, names, text_col, label_col, pair_col,
                       sources={k: v for k, v in sources.items() if v})


def tidy(raw: pd.DataFrame, columns, path) -> pd.DataFrame:
    """Keep text, [text_pair], label; check every cell; same column names in every file."""
    text_col, pair_col, label_col = columns
    frame = pd.DataFrame({"text": clean_text(raw, require_column(raw, text_col, path, "--text-column"), path)})
    if pair_col:
        frame["text_pair"] = clean_text(raw, require_column(raw, pair_col, path, "--text-pair-column"), path)
    frame["label"] = clean_labels(raw, require_column(raw, label_col, path, "--label-column"), path)
    return frame.reset_index(drop=True)


def stratified_split(train: pd.DataFrame, fraction: float, seed: int):
    from sklearn.model_selection import train_test_split

    counts = train["label"].value_counts()
    n_val = max(int(round(len(train) * fraction)), len(counts))
    if n_val >= len(train):
        raise TunesmithError(f"Only {len(train)} training examples: too few to hold out a validation split; add data, pass --validation FILE, or use --val-fraction 0.")
    stratify = train["label"] if counts.min() >= 2 else None
    try:
        rest, held = train_test_split(train, test_size=n_val, stratify=stratify, random_state=seed)
    except ValueError as exc:  # too few rows per class for a stratified split
        raise TunesmithError(f"Cannot hold out {n_val} of {len(train)} training examples for validation ({exc}); add data, pass --validation FILE, "
                             f"or use --val-fraction 0.") from None
    return rest.reset_index(drop=True), held.reset_index(drop=True)
