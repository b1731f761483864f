"""The bad-input corpus (tests/bad_inputs/) through the real CLI.

Every malformed input, broken option or unknown name must end with a non-zero exit code, one
`error: ...` line that says what is wrong, no traceback, and nothing written that looks like a
result. The odd-but-valid files in tests/bad_inputs/odd/ must train.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_safety import make_pickle_only_model
from tunesmith.cli import main

CORPUS = Path(__file__).parent / "bad_inputs"
ODD = CORPUS / "odd"

# (case id, arguments after `tunesmith train`, words the error must contain). In the arguments,
# {c} is the corpus folder and {tmp} a scratch folder with generated inputs (see `generated`).
CASES = [
    # structure of delimited files
    ("truncated-quote", ["{c}/truncated_quote.csv"], "not a well-formed CSV"),
    ("truncated-row", ["{c}/truncated_row.csv"], "has no label on lines 22"),
    ("mixed-delimiters", ["{c}/mixed_delimiters.csv"], "mixes delimiters"),
    ("too-many-fields", ["{c}/too_many_fields.csv"], "Expected 2 fields in line 22"),
    ("unclosed-quote-middle", ["{c}/unclosed_quote_middle.csv"], "not a well-formed CSV"),
    ("trailing-delimiters", ["{c}/trailing_delimiters.csv"], "3 fields on line 2 but 2 names in its header"),
    ("header-only", ["{c}/header_only.csv"], "has a header but no rows"),
    ("empty-file", ["{c}/empty.csv"], "is empty"),
    ("whitespace-only", ["{c}/whitespace_only.tsv"], "is empty"),
    ("blank-header", ["{c}/blank_header.csv"], "has no column names"),
    ("duplicate-columns", ["{c}/duplicate_columns.csv"], "column name 'text' more than once"),
    ("one-class", ["{c}/one_class.csv"], "has a single label ('pos')"),
    ("missing-label-cells", ["{c}/missing_label_cells.csv"], "has no label on lines 22, 23"),
    ("empty-text-cells", ["{c}/empty_text_cells.csv"], "is empty on lines 22, 23"),
    ("numbers-as-text", ["{c}/numbers_as_text.csv"], "holds only numbers"),
    ("no-text-column", ["{c}/no_text_column.csv"], "which column of"),
    ("no-label-column", ["{c}/single_column.csv"], "holds the labels"),
    ("too-few-rows", ["{c}/too_few_rows.csv"], "too few to hold out a validation split"),
    ("huge-line", ["{tmp}/huge_line.csv"], "has a line of 12,000,0"),
    # bytes and encodings
    ("nul-bytes", ["{c}/nul_bytes.csv"], "NUL byte on line 3"),
    ("binary-garbage", ["{c}/binary_garbage.csv"], "not valid UTF-8"),
    ("invalid-utf8", ["{c}/invalid_utf8.csv"], "bad byte 0xe9 on line 22"),
    ("latin1-without-encoding", ["{c}/latin1.csv"], "pass its encoding with --encoding"),
    ("utf16-without-bom", ["{c}/utf16_no_bom.csv"], "--encoding utf-16-le"),
    ("utf16-odd-length", ["{c}/utf16_odd_length.csv"], "not valid UTF-16"),
    ("unknown-encoding", ["{c}/good.csv", "--encoding", "klingon"], "Unknown text encoding 'klingon'"),
    ("not-gzip", ["{c}/not_gzip.csv.gz"], "not a valid gzip archive"),
    ("truncated-gzip", ["{c}/truncated.csv.gz"], "not a valid gzip archive"),
    ("truncated-bz2", ["{c}/truncated.csv.bz2"], "not a valid bz2 archive"),
    ("zip-of-two-files", ["{c}/two_files.csv.zip"], "must hold exactly one file"),
    ("not-parquet", ["{c}/not_parquet.parquet"], "not a readable Parquet file"),
    ("txt-extension", ["{c}/data.txt"], "unknown format ('.txt')"),
    ("no-extension", ["{c}/data"], "unknown format ('no extension')"),
    ("spreadsheet", ["{c}/data.xlsx"], "unknown format ('.xlsx')"),
    ("folder-instead-of-file", ["{tmp}/folder.csv"], "is a folder"),
    ("missing-file", ["{c}/no_such_file.csv"], "does not exist"),
    # JSON and JSON Lines
    ("json-object-not-list", ["{c}/not_a_list.json"], "must hold a JSON list of records"),
    ("json-scalar", ["{c}/scalar.json"], "must hold a JSON list of records"),
    ("json-string", ["{c}/string.json"], "must hold a JSON list of records"),
    ("json-list-of-numbers", ["{c}/list_of_numbers.json"], "item 1 is a int"),
    ("json-list-of-lists", ["{c}/list_of_lists.json"], "item 1 is a list"),
    ("json-invalid", ["{c}/invalid.json"], "is not valid JSON"),
    ("json-lines-named-json", ["{c}/jsonl_named_json.json"], "looks like JSON Lines"),
    ("json-empty-list", ["{c}/empty_list.json"], "has no rows"),
    ("json-ragged-columns", ["{c}/ragged_columns.json"], "must hold a JSON list of records"),
    # a JSON label list per row is multi-label data now (tests/test_task_multi_label.py), no longer bad input
    ("json-object-texts", ["{c}/object_texts.json"], "cells that are not text"),
    ("json-null-labels", ["{c}/null_labels.json"], "has no label on lines"),
    ("json-huge-number", ["{c}/huge_number.json"], "JSON that cannot be a table"),
    ("json-deep-nesting", ["{tmp}/deep.json"], "JSON that cannot be a table"),
    ("jsonl-bad-line", ["{c}/bad_line.jsonl"], "line 4 is not valid JSON"),
    ("jsonl-not-objects", ["{c}/not_objects.jsonl"], "line 1 is a list"),
    ("jsonl-blank", ["{c}/empty_lines_only.jsonl"], "is empty"),
    # validation / test files and columns
    ("test-labels-unseen", ["{c}/good.csv", "--test", "{c}/test_unseen_labels.csv"], "labels never seen in training ('meh', 'weird')"),
    ("validation-other-columns", ["{c}/good.csv", "--validation", "{c}/validation_wrong_columns.csv"], "has no column 'text'"),
    ("test-is-folder", ["{c}/good.csv", "--test", "{tmp}/folder.csv"], "is a folder"),
    ("misspelled-text-column", ["{c}/reviews.csv", "--text-column", "reveiw"], "Did you mean 'review'?"),
    ("misspelled-label-column", ["{c}/reviews.csv", "--label-column", "sentimnet"], "Did you mean 'sentiment'?"),
    ("text-is-label", ["{c}/good.csv", "--text-column", "text", "--label-column", "text"], "both 'text'"),
    ("pair-is-text", ["{c}/good.csv", "--text-pair-column", "text"], "names the text column 'text' again"),
    # options
    ("lr-too-high", ["{c}/good.csv", "--lr", "5"], "--lr is out of range: 5.0"),
    ("zero-epochs", ["{c}/good.csv", "--epochs", "0"], "--epochs is out of range"),
    ("negative-batch", ["{c}/good.csv", "--batch-size", "-4"], "--batch-size is out of range"),
    ("val-fraction-too-big", ["{c}/good.csv", "--val-fraction", "0.9"], "--val-fraction is out of range"),
    ("max-length-too-small", ["{c}/good.csv", "--max-length", "4"], "--max-length is out of range"),
    ("nan-option", ["{c}/good.csv", "--warmup-ratio", "nan"], "must be a number, got NaN"),
    ("epochs-not-a-number", ["{c}/good.csv", "--epochs", "three"], "--epochs must be float, got 'three'"),
    ("batch-not-multiple", ["{c}/good.csv", "--batch-size", "16", "--grad-accum", "3"], "not a multiple of --grad-accum 3"),
    ("metric-typo", ["{c}/good.csv", "--metric", "acuracy"], "Did you mean 'accuracy'?"),
    ("method-typo", ["{c}/good.csv", "--method", "fulll"], "Unknown method 'fulll'"),
    ("config-not-yaml", ["{c}/good.csv", "--config", "{c}/bad_config.yaml"], "is not valid YAML"),
    ("config-unknown-key", ["{c}/good.csv", "--config", "{c}/unknown_option_config.yaml"], "Unknown option 'learning_rate'"),
    ("config-a-list", ["{c}/good.csv", "--config", "{c}/list_config.yaml"], "must hold a mapping"),
    ("no-data", [], "No training data"),
    # names of models and datasets
    ("model-typo", ["{c}/good.csv", "--model", "minilm-l7"], "Did you mean 'minilm-l6'?"),
    ("model-folder-missing", ["{c}/good.csv", "--model", "./no/such/model"], "does not exist"),
    ("model-folder-not-hf", ["{c}/good.csv", "--model", "{c}"], "not a Hugging Face model folder"),
    ("model-pickle-only", ["{c}/good.csv", "--model", "{tmp}/pickle_model"], "only as pickle files"),
    ("dataset-typo", ["rotten-tomatos"], "Did you mean 'rotten-tomatoes'?"),
    # output folder
    ("resume-nothing", ["{c}/good.csv", "--resume"], "holds no tunesmith run"),
    ("out-is-file", ["{c}/good.csv", "--out", "{c}/good.csv"], "is a file, not a folder"),
    ("out-has-other-files", ["{c}/good.csv", "--out", "{tmp}/someone_elses"], "not a tunesmith run"),
]

RESULT_FILES = ("metrics.json", "model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "config.json", "test_predictions.csv")


@pytest.fixture(scope="module")
def generated(tmp_path_factory, tiny_model) -> Path:
    """Inputs too big to commit, or that git cannot hold (a folder named like a file)."""
    tmp = tmp_path_factory.mktemp("generated")
    (tmp / "folder.csv").mkdir()
    (tmp / "folder.csv" / "train.csv").write_text("text,label\n")
    with open(tmp / "huge_line.csv", "w") as fh:  # one 12-million-character line: a lost closing quote
        fh.write("text,label\na great film,pos\n" + "x" * 12_000_000 + ",neg\n")
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    make_pickle_only_model(tiny_model, tmp / "pickle_model")
    (tmp / "someone_elses").mkdir()
    (tmp / "someone_elses" / "thesis.tex").write_text("precious")
    return tmp


def expand(args: list[str], tmp: Path) -> list[str]:
    return [a.format(c=CORPUS, tmp=tmp) for a in args]


def assert_no_result(out: Path) -> None:
    record = out / "run.json"
    assert not (record.is_file() and json.loads(record.read_text()).get("status") == "done")
    assert not [name for name in RESULT_FILES if (out / name).exists()]
    assert not (out / "checkpoints").exists()


def test_corpus_holds_at_least_40_inputs():
    files = [p for p in CORPUS.iterdir() if p.is_file()]
    assert len(files) >= 40 and len(CASES) >= 40
    assert max(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file()) < 64 * 1024  # big ones are generated


@pytest.mark.parametrize("args, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_error(args, expected, generated, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    args = expand(args, generated)
    if "--model" not in args:
        args += ["--model", str(tiny_model)]
    if "--out" not in args:
        args += ["--out", str(out)]
    code = main(["train", *args, "--epochs", "1", "--threads", "1"] if "--epochs" not in args else ["train", *args, "--threads", "1"])
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code != 0
    assert len(errors) == 1, captured.err
    assert expected in errors[0], errors[0]
    assert "Traceback" not in captured.err + captured.out
    assert_no_result(out)
    assert (generated / "someone_elses" / "thesis.tex").read_text() == "precious"  # never deleted


@pytest.mark.parametrize("case", ["nul-bytes", "model-typo"])
def test_bad_input_in_a_real_process(case, generated, tiny_model, tmp_path):
    """The installed command: exit code 2 and one line on stderr, nothing else."""
    args = expand(dict((c[0], c[1]) for c in CASES)[case], generated)
    expected = dict((c[0], c[2]) for c in CASES)[case]
    if "--model" not in args:
        args += ["--model", str(tiny_model)]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", *args, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert_no_result(tmp_path / "run")


# -- odd but valid: these must train -------------------------------------------------------------

ODD_CASES = [
    ("semicolon.csv", []), ("pipe.csv", []), ("bom.csv", []), ("crlf.csv", []), ("utf16.tsv", []),
    ("integer_labels.csv", []), ("quoted_newlines.csv", []), ("data_key.json", []), ("columns.json", []),
    ("number_labels.json", []), ("blank_lines.jsonl", []), ("gzipped.csv.gz", []), ("inferred_by_name.csv", []),
    ("inferred_by_content.csv", []), ("latin1_with_encoding.csv", ["--encoding", "latin-1"]), ("data.parquet", []),
]


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory) -> Path:
    """The committed odd files plus a Parquet file written here (binary, pyarrow-version specific)."""
    import pandas as pd

    folder = tmp_path_factory.mktemp("odd")
    for path in ODD.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    pd.read_csv(CORPUS / "good.csv").to_parquet(folder / "data.parquet")
    return folder


@pytest.mark.parametrize("name, extra", ODD_CASES, ids=[c[0] for c in ODD_CASES])
def test_odd_but_valid_input_trains(name, extra, odd_files, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", str(odd_files / name), "--model", str(tiny_model), "--out", str(out), "--epochs", "1",
                 "--batch-size", "8", "--threads", "1", "--early-stopping", "0", "--refit", "off", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "done"
    assert sorted(record["label_names"]) in (["neg", "pos"], ["0", "1"])
    assert json.loads((out / "metrics.json").read_text())["train"]["examples"] == 16  # 20 rows, 4 held out (at least min(50, 20% of the rows))
