"""Read a user's table file (CSV, TSV, JSON, JSONL, Parquet) into a DataFrame of raw cells.

Every failure is a TunesmithError naming the file, the line or row, and the fix: this is where
broken files are caught, before any model is loaded.
"""
from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path

import pandas as pd

from ..errors import TunesmithError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".json": "json", ".jsonl": "jsonl",
           ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}
FORMAT_LIST = "CSV (.csv), TSV (.tsv), JSON (.json), JSON Lines (.jsonl) or Parquet (.parquet)"
DELIMITERS = (",", ";", "\t", "|")
MAX_LINE_CHARS = 10_000_000  # one cell or line this long is almost surely a broken file


def detect_format(path: Path) -> tuple[str, str | None]:
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression:
        suffixes = suffixes[:-1]
    kind = FORMATS.get(suffixes[-1]) if suffixes else None
    if kind is None:
        raise TunesmithError(f"'{path}' has an unknown format ('{path.suffix or 'no extension'}'); save it as {FORMAT_LIST}, "
                             f"or as plain text (.txt or .md) to train a language model on it.")
    return kind, compression


def read_table(path: str | Path, encoding: str | None = None, role: str = "data") -> pd.DataFrame:
    """The file's rows as a DataFrame; text cells stay str, JSON/Parquet keep their types."""
    path = Path(path)
    if not path.exists():
        raise TunesmithError(f"The {role} file '{path}' does not exist; check the path.")
    if path.is_dir():
        raise TunesmithError(f"The {role} path '{path}' is a folder; give a {FORMAT_LIST} file.")
    kind, compression = detect_format(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TunesmithError(f"Cannot read the {role} file '{path}' ({exc.strerror}); check its permissions.") from None
    if compression:
        raw = decompress(raw, compression, path)
    if not raw.strip():
        raise TunesmithError(f"The {role} file '{path}' is empty; it needs a header and at least one labeled row.")
    if kind == "parquet":
        frame = read_parquet(raw, path)
    else:
        text = decode(raw, path, encoding)
        if not text.strip():  # a byte-order mark alone, or Unicode spaces
            raise TunesmithError(f"The {role} file '{path}' is empty; it needs a header and at least one labeled row.")
        if "\x00" in text:
            line = text.count("\n", 0, text.index("\x00")) + 1
            raise TunesmithError(f"'{path}' holds a NUL byte on line {line}, so it is not a UTF-8 text file; re-export it as UTF-8 {kind.upper()} "
                                 f"(or, if it is UTF-16 without a byte-order mark, pass --encoding utf-16-le).")
        frame = {"csv": read_delimited, "tsv": read_delimited, "json": read_json, "jsonl": read_jsonl}[kind](text, path, kind)
    if len(frame) == 0:
        what = "a header but no rows" if kind in ("csv", "tsv") else "no rows"
        raise TunesmithError(f"The {role} file '{path}' has {what}; add labeled examples.")
    check_columns(list(frame.columns), path)
    return frame


def decompress(raw: bytes, compression: str, path: Path) -> bytes:
    import bz2
    import gzip
    import lzma
    import zipfile

    try:
        if compression == "zip":
            with zipfile.ZipFile(io.BytesIO(raw)) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise TunesmithError(f"'{path}' must hold exactly one file, it holds {len(names)}; unzip it and pass the file.")
                return zf.read(names[0])
        return {"gzip": gzip.decompress, "bz2": bz2.decompress, "xz": lzma.decompress}[compression](raw)
    except (OSError, EOFError, ValueError, lzma.LZMAError, zipfile.BadZipFile) as exc:
        raise TunesmithError(f"'{path}' is not a valid {compression} archive ({exc}); re-compress it or pass the plain file.") from None


def decode(raw: bytes, path: Path, encoding: str | None) -> str:
    if encoding is None:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            encoding = "utf-16"
        else:
            encoding = "utf-8-sig"
    try:
        return raw.decode(encoding)
    except LookupError:
        raise TunesmithError(f"Unknown text encoding '{encoding}'; use a name Python knows, such as utf-8, latin-1 or cp1252.") from None
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise TunesmithError(f"'{path}' is not valid {encoding.replace('-sig', '').upper()}: bad byte 0x{raw[exc.start]:02x} on line {line}; "
                             f"re-save it as UTF-8, or pass its encoding with --encoding (for example latin-1 or cp1252).") from None


def read_delimited(text: str, path: Path, kind: str) -> pd.DataFrame:
    longest = max((len(line) for line in text.splitlines()), default=0)
    if longest > MAX_LINE_CHARS:
        raise TunesmithError(f"'{path}' has a line of {longest:,} characters; a row that long is a broken file (an unclosed quote?), so fix or remove it.")
    sep = "\t" if kind == "tsv" else sniff_delimiter(text)
    check_mixed_delimiters(text, sep, path)
    try:  # pandas renames a repeated column to 'name.1' silently, so look at the header first
        header = next(csv.reader(io.StringIO(text, newline=""), delimiter=sep), [])
    except csv.Error:
        header = []  # a malformed header line: pandas names the problem below
    duplicates = sorted({name for name in header if name.strip() and header.count(name) > 1})
    if duplicates:
        raise TunesmithError(f"'{path}' has the column name {', '.join(repr(d) for d in duplicates)} more than once; rename the duplicate columns.")
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False, na_filter=False, engine="c")
    except pd.errors.EmptyDataError:  # a ValueError too, so caught first
        raise TunesmithError(f"'{path}' has no columns; it needs a header line naming the text and label columns.") from None
    except (pd.errors.ParserError, csv.Error, ValueError, OverflowError) as exc:
        detail = " ".join(str(exc).split())
        raise TunesmithError(f"'{path}' is not a well-formed {kind.upper()} file ({detail}); check the quoting and the number of fields on that line.") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas quietly turns the surplus first fields into an index
        fields, extra = len(frame.columns) + frame.index.nlevels, "tabs" if sep == "\t" else repr(sep)
        raise TunesmithError(f"'{path}' has {fields} fields on line 2 but {len(frame.columns)} names in its header; name every column in the "
                             f"header, or remove the extra {extra} at the ends of the rows.")
    return frame


def check_mixed_delimiters(text: str, sep: str, path: Path) -> None:
    """A header cut by one delimiter over rows cut by another parses 'fine' into empty columns."""
    lines = [line for line in itertools.islice(io.StringIO(text, newline=None), 200) if line.strip()]  # CSV's line ends only
    if len(lines) < 2 or sep not in lines[0] or any(sep in row for row in lines[1:]):
        return
    rows = lines[1:]
    for other in DELIMITERS:
        if other != sep and all(other in row for row in rows):
            raise TunesmithError(f"'{path}' mixes delimiters: its header is split by {sep!r} but its rows by {other!r}; "
                                 f"save it again with one delimiter throughout.")


def sniff_delimiter(text: str) -> str:
    """Comma unless the header clearly uses ';', tab or '|' (Excel in many locales writes ';')."""
    header = text.split("\n", 1)[0]
    counts = {sep: header.count(sep) for sep in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 and counts[","] == 0 else ","


def read_json(text: str, path: Path, kind: str) -> pd.DataFrame:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip().startswith("{") and "\n{" in text.strip():
            raise TunesmithError(f"'{path}' looks like JSON Lines (one object a line); rename it to .jsonl.") from None
        raise TunesmithError(f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix it or save the data as CSV.") from None
    except (ValueError, RecursionError) as exc:  # a number of thousands of digits, nesting thousands deep
        raise TunesmithError(f"'{path}' is JSON that cannot be a table ({str(exc).splitlines()[0][:120] or 'nested too deeply'}); save the data as a list of records.") from None
    if isinstance(value, dict):
        lists = [k for k, v in value.items() if isinstance(v, list)]
        if len(lists) == 1 and all(isinstance(r, dict) for r in value[lists[0]]):
            value = value[lists[0]]
        elif value and all(isinstance(v, list) for v in value.values()) and len({len(v) for v in value.values()}) == 1:
            value = [dict(zip(value, row)) for row in zip(*value.values())]
    if not isinstance(value, list):
        raise TunesmithError(f"'{path}' must hold a JSON list of records like [{{\"text\": ..., \"label\": ...}}], not a {type(value).__name__}.")
    return records_to_frame(value, path, "item")


def read_jsonl(text: str, path: Path, kind: str) -> pd.DataFrame:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise TunesmithError(f"'{path}' line {number} is not valid JSON ({exc.msg}); each line must be one object like {{\"text\": ..., \"label\": ...}}.") from None
        except (ValueError, RecursionError):  # a number of thousands of digits, nesting thousands deep
            raise TunesmithError(f"'{path}' line {number} is JSON that cannot be a table row; each line must be one object like {{\"text\": ..., \"label\": ...}}.") from None
    return records_to_frame(rows, path, "line")


def records_to_frame(rows: list, path: Path, unit: str) -> pd.DataFrame:
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise TunesmithError(f"'{path}' {unit} {number} is a {type(row).__name__}, not an object; every record must be like {{\"text\": ..., \"label\": ...}}.")
    return pd.DataFrame.from_records(rows)


def read_parquet(raw: bytes, path: Path) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(raw))
    except Exception as exc:  # pyarrow raises many types for a damaged file
        raise TunesmithError(f"'{path}' is not a readable Parquet file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'damaged'}); re-export it.") from None
    names = table.column_names
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TunesmithError(f"'{path}' has the column name {', '.join(repr(d) for d in duplicates)} more than once; rename the duplicate columns.")
    try:  # plain Python cells, converted here: invalid UTF-8 in a string column fails now, not later
        return table.to_pandas().astype(object)
    except Exception as exc:  # pyarrow types pandas cannot hold, damaged strings
        raise TunesmithError(f"'{path}' has Parquet columns that cannot be read as a table ({type(exc).__name__}); re-export it with plain text and label columns.") from None


def check_columns(columns: list, path: Path) -> None:
    blank = [i + 1 for i, c in enumerate(columns) if not str(c).strip() or str(c).startswith("Unnamed: ")]
    if len(blank) == len(columns):
        raise TunesmithError(f"'{path}' has no column names; its first line must be a header naming the text and label columns.")
    duplicates = sorted({str(c) for c in columns if columns.count(c) > 1})
    if duplicates:
        raise TunesmithError(f"'{path}' has the column name {', '.join(repr(d) for d in duplicates)} more than once; rename the duplicate columns.")
