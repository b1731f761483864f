"""CoNLL-style files and JSON token/tag rows -> one table of sentences, with clear errors."""
from __future__ import annotations

import bz2
import gzip
import json

import numpy as np
import pandas as pd
import pytest

from tunesmith.data.conll import looks_like_conll, read_conll, token_table
from tunesmith.data.read import read_table
from tunesmith.errors import TunesmithError

WNUT_STYLE = "@paulwalk\tO\nEmpire\tB-facility\nState\tI-facility\n\t\nPretty\tO\nbad\tO\n\t\n"
CONLL_2003 = ("-DOCSTART- -X- -X- O\n\n"
              "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O\n. . O O\n\n"
              "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n\n\n")


def write(tmp_path, name: str, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_reads_wnut_style_tab_separated_sentences(tmp_path):
    frame = read_conll(write(tmp_path, "ner.txt", WNUT_STYLE))
    assert list(frame.columns) == ["tokens", "tags"]
    assert frame["tokens"].tolist() == [["@paulwalk", "Empire", "State"], ["Pretty", "bad"]]
    assert frame["tags"].tolist() == [["O", "B-facility", "I-facility"], ["O", "O"]]


def test_reads_conll_2003_taking_the_last_column_and_skipping_docstart(tmp_path):
    frame = read_conll(write(tmp_path, "train.conll", CONLL_2003))
    assert frame["tokens"].tolist() == [["EU", "rejects", "German", "call", "."], ["Peter", "Blackburn"]]
    assert frame["tags"].tolist() == [["B-ORG", "O", "B-MISC", "O", "O"], ["B-PER", "I-PER"]]


def test_line_endings_bom_blank_runs_and_no_final_newline(tmp_path):
    text = "\ufeffA\tB-X\r\nb\tO\r\n\r\n \r\n\t \r\nc\tO"
    frame = read_conll(write(tmp_path, "crlf.conll", text))
    assert frame["tokens"].tolist() == [["A", "b"], ["c"]]
    assert frame["tags"].tolist() == [["B-X", "O"], ["O"]]


def test_tab_separated_tokens_may_hold_spaces_and_empty_middle_columns_are_ignored(tmp_path):
    frame = read_conll(write(tmp_path, "x.tsv", "New York\tNNP\tB-LOC\nis\t\tO\n"))
    assert frame["tokens"].tolist() == [["New York", "is"]]
    assert frame["tags"].tolist() == [["B-LOC", "O"]]


def test_a_header_line_is_skipped(tmp_path):
    frame = read_conll(write(tmp_path, "x.tsv", "token\ttag\nParis\tB-LOC\n"))
    assert frame["tokens"].tolist() == [["Paris"]]


def test_compressed_file(tmp_path):
    frame = read_conll(write(tmp_path, "x.conll.gz", gzip.compress(WNUT_STYLE.encode())))
    assert len(frame) == 2


def test_a_token_without_a_tag_names_the_file_and_line(tmp_path):
    path = write(tmp_path, "bad.conll", "EU B-ORG\nrejects O\n\nGerman\ncall O\n")
    with pytest.raises(TunesmithError) as info:
        read_conll(path)
    message = str(info.value)
    assert "bad.conll' line 4 has the token 'German' but no tag" in message
    assert "put its tag in the last column" in message and message.count("; ") == 1


def test_a_tag_without_a_token_names_the_line(tmp_path):
    with pytest.raises(TunesmithError, match=r"line 2 has a tag but no token"):
        read_conll(write(tmp_path, "bad.tsv", "EU\tB-ORG\n\tO\n"))


@pytest.mark.parametrize("content, match", [
    (b"", "holds no tagged tokens"),
    (b"\n\n\t\n-DOCSTART- O\n", "holds no tagged tokens"),
    (b"caf\xe9\tO\n", r"not valid UTF-8: bad byte 0xe9 on line 1; re-save it as UTF-8, or pass its encoding"),
    (b"a\tO\nb\x00\tO\n", "NUL byte on line 2"),
])
def test_unreadable_files(tmp_path, content, match):
    with pytest.raises(TunesmithError, match=match):
        read_conll(write(tmp_path, "bad.conll", content))


def test_other_encodings(tmp_path):
    assert read_conll(write(tmp_path, "l1.conll", "caf\xe9\tO\n".encode("latin-1")), encoding="latin-1")["tokens"][0] == ["caf\xe9"]
    assert read_conll(write(tmp_path, "u16.conll", "caf\xe9\tB-X\n".encode("utf-16")))["tokens"][0] == ["caf\xe9"]
    with pytest.raises(TunesmithError, match="Unknown text encoding 'nope'"):
        read_conll(write(tmp_path, "x.conll", "a\tO\n"), encoding="nope")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(TunesmithError, match="does not exist"):
        read_conll(tmp_path / "nope.conll")
    with pytest.raises(TunesmithError, match="is a folder"):
        read_conll(tmp_path)


@pytest.mark.parametrize("name, content, expected", [
    ("ner.txt", WNUT_STYLE, True),
    ("train.conll", CONLL_2003, True),
    ("x.iob", "a B-X\nb I-X\n", True),
    ("x.bio", "token\ttag\na\tS-X\nb\tE-X\n", True),
    ("reviews.tsv", "text\tlabel\ngreat film\tpos\nawful\tneg\n", False),
    ("two.tsv", "a\tO\nb\tO\n", False),                                 # all O: a table is as likely
    ("five.tsv", "a b c d B-X\n", False),                               # too many columns
    ("notes.txt", "Some prose, the end of which is O\nand more\n", False),
    ("data.csv", "a\tB-X\n", False),                                    # not a CoNLL suffix
    ("stray.conll", "a\tB-X\n" + "b\tO\n" * 20 + "oops\n", True),        # one bad line: read_conll names it
])
def test_looks_like_conll(tmp_path, name, content, expected):
    assert looks_like_conll(write(tmp_path, name, content)) is expected


def test_looks_like_conll_compressed_missing_and_folders(tmp_path):
    assert looks_like_conll(write(tmp_path, "x.conll.bz2", bz2.compress(WNUT_STYLE.encode()))) is True
    assert looks_like_conll(tmp_path / "missing.conll") is False
    (tmp_path / "dir.conll").mkdir()
    assert looks_like_conll(tmp_path / "dir.conll") is False


def test_looks_like_conll_reads_only_the_start_of_a_big_file(tmp_path):
    path = write(tmp_path, "big.conll", "Paris\tB-LOC\n" * 200_000 + "no tag here and many words\n" * 100_000)
    assert looks_like_conll(path) is True


def test_token_table_from_jsonl(tmp_path):
    rows = [{"words": ["EU", "rejects"], "ner": ["B-ORG", "O"], "id": 1}, {"words": ["Paris"], "ner": ["B-LOC"], "id": 2}]
    path = write(tmp_path, "x.jsonl", "\n".join(json.dumps(r) for r in rows))
    frame = token_table(read_table(path), "words", "ner", path)
    assert list(frame.columns) == ["tokens", "tags"]
    assert frame["tokens"].tolist() == [["EU", "rejects"], ["Paris"]]
    assert frame["tags"].tolist() == [["B-ORG", "O"], ["B-LOC"]]


def test_token_table_accepts_parquet_arrays():
    frame = pd.DataFrame({"tokens": [np.array(["a", "b"], dtype=object)], "tags": [("O", "B-X")]})
    assert token_table(frame, "tokens", "tags", "x.parquet")["tags"].tolist() == [["O", "B-X"]]


@pytest.mark.parametrize("tokens, tags, match", [
    (["a", "b"], ["O"], r"row 2 has 2 tokens in 'tokens' but 1 tags in 'tags'; give exactly one tag per token"),
    ("a b", ["O", "O"], r"row 2: 'tokens' is a string, not a list; write it as a JSON list like"),
    (["a"], [0], r"row 2: 'tags' holds numbers \(tag ids\?\), not tag names"),
    ([1999], ["O"], r"row 2: item 1 of 'tokens' is an int, not a string"),
    (["a", " "], ["O", "O"], r"row 2: item 2 of 'tokens' is empty"),
    ([], [], r"row 2 has no tokens"),
    (None, ["O"], r"row 2 has no 'tokens'"),
    (float("nan"), ["O"], r"row 2 has no 'tokens'"),
    ({"a": 1}, ["O"], r"row 2: 'tokens' is a dict, not a list"),
])
def test_token_table_names_the_bad_row(tokens, tags, match):
    frame = pd.DataFrame({"tokens": [["ok"], tokens], "tags": [["O"], tags]})
    with pytest.raises(TunesmithError, match=match):
        token_table(frame, "tokens", "tags", "x.json")


def test_token_table_missing_column():
    with pytest.raises(TunesmithError, match=r"'x.json' has no column 'ner' \(its columns: tokens, tags\)"):
        token_table(pd.DataFrame({"tokens": [["a"]], "tags": [["O"]]}), "tokens", "ner", "x.json")
