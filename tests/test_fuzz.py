"""Property-based fuzzing of the readers: whatever the bytes, read_table and load_labeled_data
either return a table or raise TunesmithError (a clear sentence), never anything else.

Each test counts the cases it ran and prints the count (`pytest -s tests/test_fuzz.py`).
TUNESMITH_FUZZ_EXAMPLES raises the number of examples per test for a longer campaign.
"""
from __future__ import annotations

import gzip
import io
import json
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunesmith.config import DataConfig
from tunesmith.data import load_labeled_data, read_table
from tunesmith.errors import TunesmithError

EXAMPLES = int(os.environ.get("TUNESMITH_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EXTENSIONS = [".csv", ".tsv", ".json", ".jsonl", ".parquet", ".csv.gz", ".jsonl.bz2", ".tsv.zip"]
ENCODINGS = [None, None, None, "latin-1", "utf-16", "cp1252", "ascii"]

# cells built from the characters that trouble CSV readers
# (NUL bytes are left to the random-bytes test: here they would stop almost every case at the reader)
CSV_ALPHABET = st.sampled_from(list(',;\t|"\'\n\r \\#=') + ["\ufeff", "é", "日本", "\u2028", "NaN", "null", "1", "-0.5", "1e400",
                                                         "pos", "neg", "text", "label", "a film", "a film", "pos", "neg"])
CSV_CELL = st.lists(CSV_ALPHABET, max_size=8).map("".join)
CSV_ROW = st.lists(CSV_CELL, min_size=1, max_size=5)
JSON_SCALAR = st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=20)
JSON_VALUE = st.recursive(JSON_SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                          max_leaves=20)
RECORD = st.fixed_dictionaries({}, optional={"text": JSON_VALUE, "label": JSON_VALUE, "review": st.text(max_size=30),
                                             "sentiment": st.sampled_from(["pos", "neg", 1, 0, None, 1.5])})


@pytest.fixture(scope="module")
def workdir():
    with tempfile.TemporaryDirectory(prefix="tunesmith-fuzz-") as folder:
        yield Path(folder)


def compress(raw: bytes, extension: str) -> bytes:
    if extension.endswith(".gz"):
        return gzip.compress(raw)
    if extension.endswith(".bz2"):
        import bz2

        return bz2.compress(raw)
    if extension.endswith(".zip"):
        import zipfile

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zf:
            zf.writestr("data" + extension[: -len(".zip")], raw)
        return buffer.getvalue()
    return raw


def only_our_errors(path: Path, encoding: str | None) -> str:
    """Read the file both ways; returns which outcome it had. Anything but TunesmithError escapes."""
    try:
        read_table(path, encoding)
    except TunesmithError:
        return "refused by read_table"
    try:
        load_labeled_data(DataConfig(data=str(path), encoding=encoding), seed=0)
    except TunesmithError:
        return "refused by load_labeled_data"
    return "accepted"


def fuzz(workdir: Path, strategy, name: str) -> dict:
    """Run `strategy` (which draws (bytes, extension, encoding)) through the readers; count outcomes."""
    outcomes: dict[str, int] = {}

    @SETTINGS
    @given(strategy)
    def case(drawn):
        raw, extension, encoding = drawn
        path = workdir / f"{name}{extension}"
        path.write_bytes(compress(raw, extension))
        outcome = only_our_errors(path, encoding)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    case()
    total = sum(outcomes.values())
    print(f"\nfuzz {name}: {total} cases, {outcomes}")
    assert total >= min(EXAMPLES, 50)
    return outcomes


def test_random_bytes_with_every_extension(workdir):
    fuzz(workdir, st.tuples(st.binary(max_size=400), st.sampled_from(EXTENSIONS), st.sampled_from(ENCODINGS)), "bytes")


@st.composite
def csv_like(draw):
    header = draw(st.sampled_from([["text", "label"], ["review", "sentiment"], ["text"], ["a", "b", "c"]]) | CSV_ROW)
    rows = draw(st.lists(CSV_ROW, max_size=12))
    sep = draw(st.sampled_from([",", ";", "\t", "|"]))
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    text = newline.join(sep.join(row) for row in [header, *rows]) + draw(st.sampled_from(["", newline]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    raw = text.encode(encoding, errors="replace")
    return raw, draw(st.sampled_from([".csv", ".tsv", ".csv.gz"])), draw(st.sampled_from([None, None, "latin-1", "utf-16"]))


def test_csv_like_text(workdir):
    outcomes = fuzz(workdir, csv_like(), "csv")
    assert outcomes.get("accepted", 0) + outcomes.get("refused by load_labeled_data", 0) > 0  # some get past the reader


@st.composite
def json_like(draw):
    if draw(st.booleans()):
        value = draw(st.lists(RECORD, max_size=12) | st.dictionaries(st.sampled_from(["data", "rows", "text", "label"]),
                                                                     st.lists(JSON_VALUE | RECORD, max_size=6), max_size=3))
    else:
        value = draw(JSON_VALUE)
    if draw(st.booleans()):  # JSON Lines: one value a line
        items = value if isinstance(value, list) else [value]
        text = "\n".join(json.dumps(item) for item in items)
        return text.encode(), ".jsonl", None
    return json.dumps(value).encode(), ".json", None


def test_json_like_values(workdir):
    outcomes = fuzz(workdir, json_like(), "json")
    assert outcomes.get("accepted", 0) + outcomes.get("refused by load_labeled_data", 0) > 0


@st.composite
def parquet_like(draw):
    import pandas as pd

    columns = draw(st.dictionaries(st.sampled_from(["text", "label", "review", "x", "Unnamed: 0", ""]),
                                   st.sampled_from(["text", "int", "float", "none", "list", "mixed"]), min_size=1, max_size=4))
    rows = draw(st.integers(min_value=0, max_value=10))
    makers = {"text": st.text(max_size=15), "int": st.integers(-5, 5), "float": st.floats(allow_nan=True, width=32),
              "none": st.none(), "list": st.lists(st.integers(0, 3), max_size=3), "mixed": st.one_of(st.none(), st.text(max_size=5))}
    frame = pd.DataFrame({name: [draw(makers[kind]) for _ in range(rows)] for name, kind in columns.items()})
    buffer = io.BytesIO()
    try:
        frame.to_parquet(buffer)
    except Exception:  # pyarrow cannot store this mix: fuzz the damaged-file path with its bytes instead
        return draw(st.binary(max_size=200)), ".parquet", None
    raw = buffer.getvalue()
    if draw(st.booleans()):  # flip or cut a few bytes
        cut = draw(st.integers(0, len(raw)))
        raw = raw[:cut] + draw(st.binary(max_size=8)) + raw[cut + 1:]
    return raw, ".parquet", None


def test_parquet_tables_and_damaged_parquet(workdir):
    fuzz(workdir, parquet_like(), "parquet")
