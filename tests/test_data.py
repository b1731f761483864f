"""Unit tests of data/read.py, data/columns.py and data/prepare.py: formats, inference, checks."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from conftest import toy_reviews
from tunesmith.config import DataConfig
from tunesmith.data.columns import (clean_labels, clean_text, infer_label_column, infer_text_column, is_missing,
                                    require_column, sort_label_names)
from tunesmith.data.prepare import load_labeled_data, stratified_split
from tunesmith.data.read import detect_format, read_table, sniff_delimiter
from tunesmith.errors import TunesmithError

ROWS = [{"text": "a great film", "label": "pos"}, {"text": "a dull film", "label": "neg"}] * 10


def write(path, content) -> str:
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


# -- read.py --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, kind, compression", [
    ("a.csv", "csv", None), ("a.TSV", "tsv", None), ("a.tab", "tsv", None), ("a.json", "json", None),
    ("a.jsonl", "jsonl", None), ("a.ndjson", "jsonl", None), ("a.parquet", "parquet", None), ("a.v2.csv.gz", "csv", "gzip"),
    ("a.jsonl.bz2", "jsonl", "bz2"), ("a.tsv.xz", "tsv", "xz"), ("a.csv.zip", "csv", "zip"),
])
def test_detect_format(tmp_path, name, kind, compression):
    assert detect_format(tmp_path / name) == (kind, compression)


@pytest.mark.parametrize("name", ["a.txt", "a", "a.gz", "a.csv.rar"])
def test_unknown_format_names_the_formats(tmp_path, name):
    with pytest.raises(TunesmithError, match="unknown format.*CSV \\(.csv\\), TSV"):
        detect_format(tmp_path / name)


@pytest.mark.parametrize("header, sep", [("text,label", ","), ("text;label", ";"), ("text\tlabel", "\t"), ("text|label", "|"),
                                         ("text", ","), ("a;b,c", ",")])
def test_sniff_delimiter(header, sep):
    assert sniff_delimiter(header + "\nx\n") == sep


def test_csv_cells_stay_text(tmp_path):
    frame = read_table(write(tmp_path / "a.csv", "text,label\n007,1.0\nNA,null\n"))
    assert frame.to_dict("records") == [{"text": "007", "label": "1.0"}, {"text": "NA", "label": "null"}]


def test_every_format_reads_the_same_table(tmp_path):
    frame = pd.DataFrame(ROWS)
    frame.to_csv(tmp_path / "a.csv", index=False)
    frame.to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    (tmp_path / "a.json").write_text(json.dumps(ROWS))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    frame.to_parquet(tmp_path / "a.parquet")
    (tmp_path / "a.csv.gz").write_bytes(gzip.compress((tmp_path / "a.csv").read_bytes()))
    for name in ("a.csv", "a.tsv", "a.json", "a.jsonl", "a.parquet", "a.csv.gz"):
        got = read_table(tmp_path / name)
        assert got.to_dict("records") == ROWS, name


def test_json_shapes(tmp_path):
    records = read_table(write(tmp_path / "a.json", json.dumps({"data": ROWS})))
    columns = read_table(write(tmp_path / "b.json", json.dumps({"text": ["x", "y"], "label": ["p", "n"]})))
    assert len(records) == 20 and columns.to_dict("records") == [{"text": "x", "label": "p"}, {"text": "y", "label": "n"}]


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"text,label\n", "a header but no rows"),
    (b"text,label\nx,y\nx,y,z\n", "Expected 2 fields in line 3"),
    (b"text,label\nx,y,\nx,y,\n", "3 fields on line 2 but 2 names in its header"),
    (b"text,label\nx\x00,y\n", "NUL byte on line 2"),
    (b"text,label\ncaf\xe9,y\n", "bad byte 0xe9 on line 2"),
    (b"text,label,text\nx,y,z\n", "column name 'text' more than once"),
    (b"text,label\n" + b"x;y\n" * 3, "mixes delimiters"),
    (b",\nx,y\n", "has no column names"),
])
def test_csv_errors_name_the_problem(tmp_path, content, message):
    with pytest.raises(TunesmithError, match=message):
        read_table(write(tmp_path / "a.csv", content))


def test_encodings(tmp_path):
    latin = write(tmp_path / "latin.csv", "text,label\ncafé,y\n".encode("latin-1"))
    assert read_table(latin, encoding="latin-1")["text"][0] == "café"
    with pytest.raises(TunesmithError, match="not valid UTF-8.*--encoding"):
        read_table(latin)
    utf16 = write(tmp_path / "u.tsv", "\ufefftext\tlabel\ncafé\ty\n".encode("utf-16-le"))
    assert read_table(utf16).to_dict("records") == [{"text": "café", "label": "y"}]
    bom = write(tmp_path / "bom.csv", "\ufefftext,label\nx,y\n")
    assert list(read_table(bom).columns) == ["text", "label"]
    with pytest.raises(TunesmithError, match="Unknown text encoding 'nope'"):
        read_table(bom, encoding="nope")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(TunesmithError, match="The training file .* does not exist"):
        read_table(tmp_path / "nope.csv", role="training")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(TunesmithError, match="is a folder"):
        read_table(tmp_path / "dir.csv")


@pytest.mark.parametrize("content, message", [
    ("[" * 50_000 + "]" * 50_000, "cannot be a table"),
    ('[{"a": ' + "9" * 5000 + "}]", "cannot be a table"),
    ("[1]", "item 1 is a int"),
    ("{}", "JSON list of records"),
])
def test_json_errors(tmp_path, content, message):
    with pytest.raises(TunesmithError, match=message):
        read_table(write(tmp_path / "a.json", content))


def test_jsonl_errors_name_the_line(tmp_path):
    with pytest.raises(TunesmithError, match="line 3 is not valid JSON"):
        read_table(write(tmp_path / "a.jsonl", '{"a": 1}\n\n{"a": \n'))
    with pytest.raises(TunesmithError, match="line 2 is JSON that cannot be a table row"):
        read_table(write(tmp_path / "b.jsonl", '{"a": 1}\n' + "[" * 50_000 + "\n"))


# -- columns.py -----------------------------------------------------------------------------------

def test_require_column_is_case_insensitive_and_suggests():
    frame = pd.DataFrame({"Review": ["x"], "label": ["y"]})
    assert require_column(frame, "review", "f.csv", "--text-column") == "Review"
    with pytest.raises(TunesmithError, match="no column 'reveiw'.*--text-column. Did you mean 'Review'"):
        require_column(frame, "reveiw", "f.csv", "--text-column")


def test_infer_columns_by_name_then_by_content():
    named = pd.DataFrame({"id": [1, 2], "Sentence": ["a b", "c d"], "Gold_Label": ["x", "y"]})
    assert infer_text_column(named, "f") == "Sentence"
    assert infer_label_column(named, "f", ["Sentence"]) == "Gold_Label"
    unnamed = pd.DataFrame({"n": [str(i) for i in range(20)], "words": ["a long enough sentence"] * 20, "mood": ["up", "down"] * 10})
    assert infer_text_column(unnamed, "f") == "words"
    assert infer_label_column(unnamed, "f", ["words"]) == "mood"  # 'n' has too many distinct values
    with pytest.raises(TunesmithError, match="which column of 'f' holds the text"):
        infer_text_column(pd.DataFrame({"a": ["1", "2"], "b": ["x", "y"]}), "f")
    with pytest.raises(TunesmithError, match="holds the labels"):
        infer_label_column(pd.DataFrame({"t": ["a b c"] * 4}), "f", ["t"])


def test_clean_labels_normalises_numbers_and_names_bad_rows():
    frame = pd.DataFrame({"label": [1.0, 0.0, 2.5, " pos ", True]}, dtype=object)
    assert clean_labels(frame, "label", "f").tolist() == ["1", "0", "2.5", "pos", "True"]
    for missing in (None, float("nan"), pd.NA, "  "):
        frame = pd.DataFrame({"label": ["a", missing, "b"]}, dtype=object)
        with pytest.raises(TunesmithError, match="no label on lines 3;"):
            clean_labels(frame, "label", "f")
    nested = pd.DataFrame({"label": ["a", np.array([1, 2]), "b"]}, dtype=object)
    with pytest.raises(TunesmithError, match="lists or objects on lines 3"):
        clean_labels(nested, "label", "f")


def test_is_missing():
    assert [is_missing(v) for v in (None, float("nan"), pd.NA, pd.NaT, "", " ", "x", 0, [1], {"a": 1})] == \
        [True, True, True, True, True, True, False, False, False, False]


def test_clean_text():
    assert clean_text(pd.DataFrame({"t": ["a", 5, "b"]}, dtype=object), "t", "f").tolist() == ["a", "5", "b"]
    with pytest.raises(TunesmithError, match="not text \\(lines 3\\)"):
        clean_text(pd.DataFrame({"t": ["a", {"x": 1}]}, dtype=object), "t", "f")
    with pytest.raises(TunesmithError, match="is empty on lines 2, 3, 4, 5, 6 and 2 more"):
        clean_text(pd.DataFrame({"t": [""] * 7}), "t", "f")
    with pytest.raises(TunesmithError, match="holds only numbers"):
        clean_text(pd.DataFrame({"t": ["1", "2.5"]}), "t", "f")


def test_sort_label_names():
    assert sort_label_names(["10", "2", "1"]) == ["1", "2", "10"]
    assert sort_label_names(["pos", "neg", "2"]) == ["2", "neg", "pos"]


# -- prepare.py -----------------------------------------------------------------------------------

def test_load_labeled_data_infers_splits_and_maps_labels(tmp_path):
    toy_reviews(100).to_csv(tmp_path / "train.csv", index=False)
    toy_reviews(20, seed=5).to_csv(tmp_path / "test.csv", index=False)
    data = load_labeled_data(DataConfig(data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv")), seed=1)
    assert (data.text_column, data.label_column, data.label_names) == ("review", "sentiment", ["neg", "pos"])
    assert (len(data.train), len(data.validation), len(data.test)) == (80, 20, 20)  # 10% raised to min(50, 20% of 100)
    assert data.validation["label"].value_counts().tolist() == [10, 10]  # stratified
    assert set(data.train["label"]) == {0, 1} and data.train["label"].dtype == np.int64
    again = load_labeled_data(DataConfig(data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv")), seed=1)
    assert again.validation.equals(data.validation)  # seeded


def test_load_labeled_data_options(tmp_path):
    toy_reviews(100).to_csv(tmp_path / "train.csv", index=False)
    data = load_labeled_data(DataConfig(data=str(tmp_path / "train.csv"), val_fraction=0.0, max_train_examples=30), seed=1)
    assert data.validation is None and len(data.train) == 30
    with pytest.raises(TunesmithError, match="both 'review'"):
        load_labeled_data(DataConfig(data=str(tmp_path / "train.csv"), text_column="review", label_column="review"), seed=1)


def test_unseen_labels_in_the_test_file_are_refused(tmp_path):
    toy_reviews(40).to_csv(tmp_path / "train.csv", index=False)
    toy_reviews(10, labels=("neg", "pos", "meh")).to_csv(tmp_path / "test.csv", index=False)
    with pytest.raises(TunesmithError, match="test file .* labels never seen in training \\('meh'\\)"):
        load_labeled_data(DataConfig(data=str(tmp_path / "train.csv"), test=str(tmp_path / "test.csv")), seed=0)


def test_stratified_split_with_rare_classes():
    table = pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["a"] * 8 + ["b", "c"]})
    rest, held = stratified_split(table, 0.2, seed=0)  # exactly 20%; the classes of one example stay in training
    assert len(rest) + len(held) == 10 and len(held) == 2 and set(held["label"]) == {"a"} and set(rest["label"]) == {"a", "b", "c"}
    with pytest.raises(TunesmithError, match="too few to hold out"):
        stratified_split(pd.DataFrame({"text": ["x", "y"], "label": ["a", "b"]}), 0.5, seed=0)
