"""What the classifiers of files (image and audio classification) share: labeled splits of paths,
files that do not decode, predict/eval inputs from files, folders and tables, and predictions with paths.

Each function takes the medium's MediaKind (data/media_files.py), so images and clips are read, checked
and named the same way in their own words. Labels, the stratified validation split and label ids are
text classification's (data/prepare.py, data/columns.py); the prediction columns and records are a
TextClassification's over the same labels, with each file's path put first.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pandas as pd

from ..data import media_files
from ..data.media_files import MediaKind, listed
from ..errors import TunesmithError
from .protocol import Splits

TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".json", ".jsonl", ".ndjson", ".parquet", ".pq")


def file_rows(raw: pd.DataFrame, column: str, source, kind: MediaKind) -> pd.DataFrame:
    """Columns `file` (resolved path) and `path` (as a person reads it) of a raw table's rows."""
    files, shown = media_files.resolve_paths(raw, column, source, kind)
    return pd.DataFrame({"file": files, "path": shown})


def drop_bad_files(table: pd.DataFrame, bad: list[tuple[int, str]], role: str, skip: bool, notes: list[str],
                   kind: MediaKind) -> pd.DataFrame:
    """The rows whose files decode; `bad` ((row, why) of the others) is an error naming them, or (--skip-bad-files) a note."""
    if not bad:
        return table
    named = [(table["path"].iloc[i], why) for i, why in bad]
    if not skip:
        raise TunesmithError(media_files.bad_files_message(named, len(table), role, kind))
    if len(bad) == len(table):
        raise TunesmithError(f"None of the {len(table):,} {role} {kind.plural} decodes ({listed(p for p, _ in named)}); "
                             f"check that the files are {kind.name} files.")
    notes.append(f"Skipped {len(bad):,} of {len(table):,} {role} {kind.plural} that cannot be decoded (--skip-bad-files): "
                 f"{listed(p for p, _ in named)}.")
    return table.drop(index=[i for i, _ in bad]).reset_index(drop=True)


def label_column_of(frame: pd.DataFrame, path, given: str | None, trained: str | None, path_column: str, kind: MediaKind) -> str:
    """The label column of a split: a class-folder table's `label`, else --label-column, else the training
    file's label column name (case aside), else inferred as text classification infers it."""
    from ..data.columns import choose_label_column, require_column

    if frame.attrs.get(kind.folder_attr):
        return "label"
    if given:
        return require_column(frame, given, path, "--label-column")
    by_lower = {str(c).strip().lower(): c for c in frame.columns}
    if trained and str(trained).strip().lower() in by_lower:
        return by_lower[str(trained).strip().lower()]
    return choose_label_column(frame, path, [path_column]).column


def prepare_labeled_files(raw: pd.DataFrame, sources: dict, cfg, seed: int, kind: MediaKind, given_column: str | None,
                          find_bad: Callable[[list[str]], list[tuple[int, str]]]):
    """(LabeledData, Splits) of a medium's training table and its validation/test files: paths resolved inside
    their data folders, labels tidied, files that do not decode found by `find_bad` (files -> (row, why))
    before training, the validation split stratified. The Splits' `file` and `path` columns hold each
    file's resolved path and the path as the user wrote it; `label` the label id."""
    from ..data.columns import clean_labels, match_training_spellings, merge_label_spellings, sort_label_names, spelling_note
    from ..data.prepare import LabeledData, sample_per_label, split_off_validation, to_label_ids
    from ..data.sources import read_data_file

    data_cfg, skip, source = cfg.data, cfg.task.skip_bad_files, sources["train"]
    folder = raw.attrs.get(kind.folder_attr)
    notes = list(raw.attrs.get("notes", []))
    column = media_files.find_path_column(raw, source, kind, given_column)
    label_column = label_column_of(raw, source, data_cfg.label_column, None, column, kind)

    def read_split(frame: pd.DataFrame, path) -> pd.DataFrame:
        if frame is not raw:
            notes.extend(frame.attrs.get("notes", []))
        own_column = media_files.find_path_column(frame, path, kind, given_column, trained=column)
        own_label = label_column_of(frame, path, data_cfg.label_column, label_column, own_column, kind)
        table = file_rows(frame, own_column, path, kind)
        table["label"] = clean_labels(frame, own_label, path, data_cfg.keep_label_spelling).to_numpy()
        return table

    def decodable(table: pd.DataFrame, role: str) -> pd.DataFrame:
        return drop_bad_files(table, find_bad(table["file"].tolist()), role, skip, notes, kind)

    train = read_split(raw, source)
    if not data_cfg.keep_label_spelling:
        train["label"], merged = merge_label_spellings(train["label"])
        if merged:
            notes.append(spelling_note(merged))
    if data_cfg.max_train_examples and len(train) > data_cfg.max_train_examples:
        rows = len(train)
        train = sample_per_label(train, data_cfg.max_train_examples, seed, source)
        notes.append(f"Sampled {len(train):,} of {rows:,} training {kind.plural}, per label.")
    train = decodable(train, "training")  # after sampling: only the files that will train
    names = sort_label_names(train["label"].unique())
    if len(names) < 2:
        where = (f"The {kind.name} folder '{folder}' has {kind.plural} of a single class" if folder
                 else f"Column '{label_column}' of '{source}' has a single label")
        raise TunesmithError(f"{where} ('{names[0]}'); a classifier needs examples of at least two classes.")

    others = {}
    for role in ("validation", "test"):
        if sources.get(role):
            table = read_split(read_data_file(sources[role], data_cfg.encoding, role=role), sources[role])
            if not data_cfg.keep_label_spelling:
                table["label"] = match_training_spellings(table["label"], names)
            others[role] = decodable(table, role)
    validation, test = others.get("validation"), others.get("test")
    if validation is None and data_cfg.val_fraction != 0:
        train, validation, split_notes = split_off_validation(train, data_cfg.val_fraction, seed)
        notes += split_notes
    to_label_ids(train, validation, test, names, sources)
    used = {k: v for k, v in sources.items() if v}
    from_split = validation is not None and not sources.get("validation")
    data = LabeledData(train, validation, test, names, column, label_column, sources=used, notes=notes, validation_from_split=from_split)
    described = f"class folders of '{folder}'" if folder else f"{kind.name} column '{column}', label column '{label_column}'"
    return data, Splits(train, validation, test, used, notes, validation_from_split=from_split,
                        summary=data.describe().replace(" examples,", f" {kind.plural},"), columns=described)


def read_file_inputs(path, data_cfg, kind: MediaKind, column: str | None, trained_column: str, trained_label_column: str,
                     label_names: list[str], with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(file, path[, label] table; the raw rows) of one file, a folder of them (class folders give labels) or a table of paths."""
    from ..data.columns import clean_labels, match_training_spellings
    from ..data.prepare import to_label_ids
    from ..data.sources import read_data_file

    path = Path(path)
    one = kind.item.strip("<>")
    if not path.exists():
        raise TunesmithError(f"'{path}' does not exist; give {kind.name} files, a folder of {kind.plural}, or a CSV with a path column.")
    if path.is_file() and not path.name.lower().endswith(TABLE_SUFFIXES):
        if with_labels:
            raise TunesmithError(f"'{path}' is one {one} with no label; give a folder of class folders or a CSV with path and label columns to score.")
        raw = pd.DataFrame({"path": [path.name]})
        return file_rows(raw, "path", path, kind), raw
    if path.is_dir() and not with_labels and not media_files.has_class_folders(path, kind):
        found = media_files.files_in(path, kind)
        raw = pd.DataFrame({"path": [f.relative_to(path).as_posix() for f in found]})
        return file_rows(raw, "path", path, kind), raw
    raw = read_data_file(path, getattr(data_cfg, "encoding", None), role="input")
    column = media_files.find_path_column(raw, path, kind, column, trained=trained_column)
    table = file_rows(raw, column, path, kind)
    if with_labels:
        label = label_column_of(raw, path, data_cfg.label_column, trained_label_column, column, kind)
        names = clean_labels(raw, label, path, keep_spelling=data_cfg.keep_label_spelling)
        table["label"] = names.to_numpy() if data_cfg.keep_label_spelling else match_training_spellings(names, label_names).to_numpy()
        to_label_ids(None, None, table, label_names, {"test": str(path)})
    return table, raw


def predictions_with_paths(classes, outputs, table: pd.DataFrame, label_names: list[str], with_inputs: bool = True) -> pd.DataFrame:
    """A TextClassification's prediction columns, after each file's `path` and gold label (when with_inputs)."""
    predicted = classes.predictions_table(outputs, table, with_inputs=False)
    if not with_inputs:
        return predicted
    inputs = pd.DataFrame({"path": table["path"].to_numpy()})
    if "label" in table:
        inputs["label"] = [label_names[i] for i in table["label"]]
    return pd.concat([inputs, predicted], axis=1)


def records_with_paths(classes, outputs, table: pd.DataFrame) -> list[dict]:
    """A TextClassification's records, each with its file's `path` (None for an input given in memory)."""
    records = classes.predict_records(outputs, table)
    return [dict(record, path=path if isinstance(path, str) else None) for record, path in zip(records, table["path"])]  # pandas reads None as NaN
