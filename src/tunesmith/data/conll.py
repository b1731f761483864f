"""Token-tagged data: CoNLL-style files (one token a line) and JSON rows of token and tag lists.

Both become the same table, one row per sentence with a `tokens` and a `tags` list, so the NER
task never needs to know which file format the user had. Every failure names the file and the
line or row, and says what to change.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TunesmithError
from .read import COMPRESSIONS, decode, decompress

CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".iob", ".bio")
CONLL_ONLY_SUFFIXES = (".conll", ".iob", ".bio")  # no table format uses these: read as CoNLL whatever they hold
DOCSTART = "-DOCSTART-"
ENTITY_TAG = re.compile(r"O|[BIES]-\S+")
SNIFF_BYTES = 64 * 1024  # enough for a few hundred token lines; the rest of a big file is not read to decide
SNIFF_LINES = 400
SNIFF_SHARE = 0.9  # a stray malformed line must not hide a CoNLL file (read_conll then names that line)
HEADER_TOKENS = {"token", "tokens", "word", "words", "text"}
HEADER_TAGS = {"tag", "tags", "label", "labels", "ner", "ner_tag", "ner_tags", "entity", "entities"}
EXAMPLE_LINE = "'Paris<TAB>B-LOC'"
TOKENS_EXAMPLE = '["EU", "rejects", "German", "call"]'
TAGS_EXAMPLE = '["B-ORG", "O", "B-MISC", "O"]'


def read_conll(path: str | Path, encoding: str | None = None) -> pd.DataFrame:
    """One row per sentence: `tokens` and `tags`, both list[str] of the same length.

    A line holds one token in its first column and its tag in its last (middle columns, such as
    CoNLL-2003's part-of-speech and chunk tags, are ignored). A blank or whitespace-only line ends
    a sentence (WNUT files end theirs with a line holding a single tab); `-DOCSTART-` lines are
    skipped. Columns are split on tabs when the line has one (so a token may hold spaces), else
    on spaces.
    """
    path = Path(path)
    return parse_conll(read_text(path, encoding), path)


def parse_conll(text: str, path) -> pd.DataFrame:
    """`read_conll` on text already decoded; `path` only names the source in error messages."""
    sentences, tokens, tags = [], [], []
    for number, line in enumerate(text.split("\n"), start=1):
        fields = split_fields(line)
        if fields is None or fields[0] == DOCSTART:
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        if number == 1 and is_header(fields):
            continue
        if fields[0] == "":
            raise TunesmithError(f"'{path}' line {number} has a tag but no token; put the token in the first column, "
                                 f"like {EXAMPLE_LINE}.")
        if len(fields) < 2:
            raise TunesmithError(f"'{path}' line {number} has the token {fields[0][:40]!r} but no tag; put its tag in the "
                                 f"last column (like {EXAMPLE_LINE}, O for no entity), or end the sentence with a blank line.")
        tokens.append(fields[0])
        tags.append(fields[-1])
    if tokens:
        sentences.append((tokens, tags))
    if not sentences:
        raise TunesmithError(f"'{path}' holds no tagged tokens; write one token and its tag a line, like {EXAMPLE_LINE}, "
                             f"with a blank line after each sentence.")
    return pd.DataFrame({"tokens": [s[0] for s in sentences], "tags": [s[1] for s in sentences]})


def read_text(path: Path, encoding: str | None) -> str:
    if not path.exists():
        raise TunesmithError(f"The data file '{path}' does not exist; check the path.")
    if path.is_dir():
        raise TunesmithError(f"The data path '{path}' is a folder; give a CoNLL file (one token and its tag a line).")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TunesmithError(f"Cannot read the data file '{path}' ({exc.strerror}); check its permissions.") from None
    compression = COMPRESSIONS.get(path.suffix.lower())
    if compression:
        raw = decompress(raw, compression, path)
    text = decode(raw, path, encoding)
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise TunesmithError(f"'{path}' holds a NUL byte on line {line}, so it is not a UTF-8 text file; re-export it as UTF-8 "
                             f"(or, if it is UTF-16 without a byte-order mark, pass --encoding utf-16-le).")
    return text


def split_fields(line: str) -> list[str] | None:
    """The line's columns, or None for a sentence break (blank, or only whitespace such as one tab)."""
    line = line.rstrip("\r")
    if not line.strip():
        return None
    if "\t" in line:
        # empty middle columns ('tok\t\tO') carry nothing; an empty first column is kept to be reported
        parts = [part.strip(" ") for part in line.split("\t")]
        return [parts[0]] + [part for part in parts[1:] if part]
    return line.split()


def is_header(fields: list[str]) -> bool:
    """A 'token<TAB>tag' title line, which some exported files start with."""
    return len(fields) >= 2 and fields[0].lower() in HEADER_TOKENS and fields[-1].lower() in HEADER_TAGS


def looks_like_conll(path: str | Path) -> bool:
    """Whether a .conll/.txt/.tsv/.iob/.bio file is token-per-line tagged data rather than a table.

    A two-column TSV could be either, so this decides by content: nearly every non-blank line of
    the file's start must have 2-4 columns whose last is an entity tag (O, B-x, I-x, E-x, S-x), and
    at least one tag must be an entity (a file of only O tags teaches nothing, and is likelier a table).
    A .conll/.iob/.bio file is CoNLL whatever it holds, so that an empty or all-O one gets
    read_conll's (and the NER task's) message rather than "unknown format".
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    if not suffixes or suffixes[-1] not in CONLL_SUFFIXES or compression == "zip" or not path.is_file():
        return False
    if suffixes[-1] in CONLL_ONLY_SUFFIXES:
        return True
    lines = head_lines(path, compression)
    checked = tagged = entities = 0
    for number, line in enumerate(lines[:SNIFF_LINES], start=1):
        fields = split_fields(line)
        if fields is None or fields[0] == DOCSTART or (number == 1 and is_header(fields)):
            continue
        checked += 1
        if 2 <= len(fields) <= 4 and ENTITY_TAG.fullmatch(fields[-1]):
            tagged += 1
            entities += fields[-1] != "O"
    return checked > 0 and entities > 0 and tagged >= SNIFF_SHARE * checked


def head_lines(path: Path, compression: str | None) -> list[str]:
    """The first lines of a (possibly compressed) text file, leniently decoded: only for sniffing."""
    import bz2
    import gzip
    import lzma

    opener = {None: open, "gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression]
    try:
        with opener(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except (OSError, EOFError, lzma.LZMAError):
        return []
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="replace")
    else:
        text = head.decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.split("\n")
    return lines[:-1] if len(head) == SNIFF_BYTES else lines  # the last line may be cut


def token_table(frame: pd.DataFrame, token_column: str, tag_column: str, path) -> pd.DataFrame:
    """Rows of JSON/JSONL (or Parquet) data holding a token list and a tag list -> `tokens`, `tags`.

    Checks that both cells of every row are lists of non-empty strings of the same length and
    names the row (counted from 1) and the fix when one is not.
    """
    for column in (token_column, tag_column):
        if column not in frame.columns:
            raise TunesmithError(f"'{path}' has no column '{column}' (its columns: {', '.join(map(str, frame.columns))}); "
                                 f"name the token and tag list columns.")
    tokens_out, tags_out = [], []
    for row, (tokens, tags) in enumerate(zip(frame[token_column], frame[tag_column]), start=1):
        tokens = as_string_list(tokens, row, token_column, path, TOKENS_EXAMPLE)
        tags = as_string_list(tags, row, tag_column, path, TAGS_EXAMPLE)
        if not tokens:
            raise TunesmithError(f"'{path}' row {row} has no tokens; remove the row or give it its tokens and tags.")
        if len(tokens) != len(tags):
            raise TunesmithError(f"'{path}' row {row} has {len(tokens)} tokens in '{token_column}' but {len(tags)} tags in "
                                 f"'{tag_column}'; give exactly one tag per token.")
        tokens_out.append(tokens)
        tags_out.append(tags)
    return pd.DataFrame({"tokens": tokens_out, "tags": tags_out})


def as_string_list(cell, row: int, column: str, path, example: str) -> list[str]:
    if isinstance(cell, (np.ndarray, tuple)):  # Parquet list columns arrive as arrays
        cell = list(cell)
    if cell is None or (isinstance(cell, float) and np.isnan(cell)):
        raise TunesmithError(f"'{path}' row {row} has no '{column}'; give every row a list like {example}.")
    if isinstance(cell, str):
        raise TunesmithError(f"'{path}' row {row}: '{column}' is a string, not a list; write it as a JSON list like {example}.")
    if not isinstance(cell, list):
        raise TunesmithError(f"'{path}' row {row}: '{column}' is {kind_of(cell)}, not a list; write it as a JSON list like {example}.")
    for position, item in enumerate(cell, start=1):
        if not isinstance(item, str):
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and example == TAGS_EXAMPLE:
                raise TunesmithError(f"'{path}' row {row}: '{column}' holds numbers (tag ids?), not tag names; write the tags "
                                     f"themselves, like {example}.")
            raise TunesmithError(f"'{path}' row {row}: item {position} of '{column}' is {kind_of(item)}, not a string; "
                                 f"write a list of strings like {example}.")
        if not item.strip():
            raise TunesmithError(f"'{path}' row {row}: item {position} of '{column}' is empty; remove empty tokens (and their tags).")
    return list(cell)


def kind_of(value) -> str:
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


# -- which columns of a table hold the token and tag lists ------------------------------------------

TOKEN_COLUMN_NAMES = ("tokens", "words", "token", "word", "text")
TAG_COLUMN_NAMES = ("tags", "ner_tags", "labels", "ner", "tag", "label", "ner_labels", "entities")
LIST_SHARE = 0.9  # of a column's sampled cells that must be lists for it to count as a list column
SAMPLE_ROWS = 200


def is_list_cell(cell) -> bool:
    return isinstance(cell, (list, tuple, np.ndarray))


def list_columns(frame: pd.DataFrame) -> list:
    """Columns whose cells are (nearly all) lists, as JSON/JSONL/Parquet token data has them."""
    head = frame.head(SAMPLE_ROWS)
    return [c for c in frame.columns if len(head) and head[c].map(is_list_cell).mean() >= LIST_SHARE]


def looks_like_tags(series: pd.Series) -> bool:
    """List cells whose items are all entity-tag strings (O, B-X, ...), with at least one entity."""
    items = [item for cell in series.head(SAMPLE_ROWS) if is_list_cell(cell) for item in cell]
    return bool(items) and all(isinstance(i, str) and ENTITY_TAG.fullmatch(i) for i in items) and any(i != "O" for i in items)


def token_columns(frame: pd.DataFrame, token_column: str | None = None, tag_column: str | None = None) -> tuple | None:
    """(token list column, tag list column) of a table, as named or inferred; None when it has no such pair.

    Named columns must be list columns. Otherwise the token column goes by name (tokens, words, ...)
    and the tag column by name (tags, ner_tags, labels, ...) or by content (lists of O / B-X tags);
    when only one is found, the table's one other list column is the other. The lists of most
    sampled rows must have equal lengths (the rows that do not are named later by token_table).
    """
    lists = list_columns(frame)
    by_lower = {str(c).strip().lower(): c for c in lists}

    def named(name):
        return by_lower.get(name.strip().lower()) if name else None

    tokens = named(token_column) if token_column else next((by_lower[n] for n in TOKEN_COLUMN_NAMES if n in by_lower), None)
    tags = named(tag_column) if tag_column else next((by_lower[n] for n in TAG_COLUMN_NAMES if n in by_lower and by_lower[n] != tokens), None)
    if (token_column and tokens is None) or (tag_column and tags is None):
        return None
    if tags is None:
        tags = next((c for c in lists if c != tokens and looks_like_tags(frame[c])), None)
    others = [c for c in lists if c not in (tokens, tags)]
    if tokens is None and tags is not None and len(others) == 1:
        tokens = others[0]
    if tags is None and tokens is not None and len(others) == 1:
        tags = others[0]
    if tokens is None or tags is None or tokens == tags:
        return None
    head = frame.head(SAMPLE_ROWS)
    same = [len(a) == len(b) for a, b in zip(head[tokens], head[tags]) if is_list_cell(a) and is_list_cell(b)]
    return (tokens, tags) if same and sum(same) >= 0.5 * len(same) else None


# -- sampling and splitting sentences ---------------------------------------------------------------

def sample_sentences(table: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n random sentences (--max-train-examples), kept in file order; seeded as text classification's sample."""
    from .prepare import SAMPLE_STREAM

    chosen = np.sort(np.random.default_rng([seed, SAMPLE_STREAM]).choice(len(table), size=n, replace=False))
    return table.iloc[chosen].reset_index(drop=True)


def split_sentences(table: pd.DataFrame, fraction: float | None, seed: int, path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(train, validation, notes): random sentences held out, seeded; sized as text classification's split
    (10%, at least min(50, 20%), at most 2,000) or round(fraction x sentences) for --val-fraction."""
    from .prepare import (AUTO_VAL_FRACTION, AUTO_VAL_MAX_FRACTION, AUTO_VAL_MAX_ROWS, AUTO_VAL_MIN_ROWS, SPLIT_STREAM,
                          round_half_up)

    rows, notes = len(table), []
    if rows < 2:
        raise TunesmithError(f"'{path}' holds a single sentence: too few to hold out a validation split; add sentences, pass "
                             f"--validation FILE, or use --val-fraction 0.")
    if fraction is None:
        size = round_half_up(AUTO_VAL_FRACTION * rows)
        size = min(max(size, min(AUTO_VAL_MIN_ROWS, round_half_up(AUTO_VAL_MAX_FRACTION * rows))), AUTO_VAL_MAX_ROWS)
        size = min(max(size, 1), rows - 1)
        if size != round_half_up(AUTO_VAL_FRACTION * rows):
            notes.append(f"Held out {size:,} of {rows:,} training sentences for validation ({100 * size / rows:.3g}% rather than 10%, "
                         f"so that validation scores rest on enough sentences).")
    else:
        size = round_half_up(fraction * rows)
        if size == 0 or size >= rows:
            raise TunesmithError(f"--val-fraction {fraction} of {rows} training sentences holds out {size}; pass a --val-fraction that "
                                 f"leaves at least one sentence on each side, --validation FILE, or --val-fraction 0.")
    held = np.zeros(rows, dtype=bool)
    held[np.random.default_rng([seed, SPLIT_STREAM]).choice(rows, size=size, replace=False)] = True
    return table[~held].reset_index(drop=True), table[held].reset_index(drop=True), notes


def read_text_lines(path: str | Path, encoding: str | None = None) -> pd.DataFrame:
    """A plain text file of one text a line (blank lines skipped) as a `text` column, for tagging raw text."""
    path = Path(path)
    lines = [line.strip() for line in read_text(path, encoding).split("\n") if line.strip()]
    if not lines:
        raise TunesmithError(f"'{path}' holds no text; write one text to tag a line.")
    return pd.DataFrame({"text": lines})
