"""Raw text for continued pre-training (the causal-lm task): files and folders of prose, or a text column.

What is read, and what a document is:

    notes.txt, notes.md     plain text (a .gz/.bz2/.xz/.zip of one works too). Documents are separated by two or
                            more blank lines; a single blank line is a paragraph break inside a document, so a file
                            without such a gap (a book, a page of notes) is one document.
    a folder                with .txt/.md files of its own and no images or clips: every .txt/.md file in it and its
                            sub-folders (hidden ones left out), in name order, a folder's own files before its
                            sub-folders'; each file is one document or more by the same rule; empty files are
                            skipped, with a note.
    a table                 (CSV, TSV, JSON, JSONL, Parquet: what data/read.py reads) one document a row, from
                            --text-column, else a column named text, content, document or body, else the table's
                            one text column; rows without text are left out, with a note.

Decoding follows data/read.py: UTF-8 (a BOM is dropped), UTF-16 found by its byte-order mark, --encoding for
anything else, and a bad byte named by its line. A NUL byte or control characters make the file binary, not text.

Documents become passages (`passages`): a document of more than about one block of --max-length tokens is cut
into pieces of about that many characters x 4 (English BPE averages about four characters a token), at a
paragraph break where there is one, else a line break, a sentence end or a space, so a held-out validation
split (data/text_tables.split_off_random_validation on the passages) is whole stretches of text and never
tokens from inside a training passage. A cut is made just before whitespace: the piece after it starts with
that whitespace, which byte-level BPE tokenizes as it does inside the whole text (checked for SmolLM2).
"""
from __future__ import annotations

import csv
import io
import os
import re
import unicodedata
from pathlib import Path

import pandas as pd

from ..errors import TunesmithError
from .columns import is_missing, is_nested, mean_text_length, names_matching, require_column
from .read import COMPRESSIONS, decode, decompress

TEXT_SUFFIXES = (".txt", ".md")
TEXT_COLUMN_NAMES = ("text", "content", "document", "body")
RAW_TEXT = "raw_text"  # the attrs key that marks a table read from plain text (one document a row)
DOCUMENT_BREAK = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")  # two or more blank lines
CHARS_PER_TOKEN = 4  # what a passage is sized by: about one block of --max-length tokens of English
MIN_PASSAGES, MIN_PASSAGE_CHARS = 20, 200  # a short text is still cut into enough passages to hold some out
SNIFF_BYTES = 1 << 16
CONTROL_SHARE = 0.01  # more control characters than this (tab, line ends and form feed aside) is a binary file
# where a passage may end, best first; each match is the whitespace a cut goes before
CUTS = (re.compile(r"(?<=\S)[ \t]*\n[ \t]*\n"), re.compile(r"(?<=\S)[ \t]*\n"),
        re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]\u201d\u2019]))\s"), re.compile(r"(?<=\S)\s"))


# -- files and folders ----------------------------------------------------------------------------

def text_suffix(path) -> str | None:
    """'.txt' or '.md' when the file's name says it is plain text (a compression suffix aside), else None."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] in COMPRESSIONS:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes and suffixes[-1] in TEXT_SUFFIXES else None


def is_text_file(path) -> bool:
    return text_suffix(path) is not None and not Path(path).is_dir()


def folder_files(folder: Path) -> list[Path]:
    """Every file under the folder, hidden files and folders left out: in name order, a folder's files before its sub-folders'."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        found += [Path(root) / f for f in sorted(files) if not f.startswith(".")]
    return found


def is_text_folder(path) -> bool:
    """A folder with .txt/.md files of its own (its sub-folders' are read too) and no images or audio clips anywhere:
    class sub-folders with no text beside them are the media tasks' layout, and get their message."""
    from .audio import AUDIO_FILES
    from .images import IMAGE_FILES

    path = Path(path)
    if not path.is_dir() or not any(f.is_file() and not f.name.startswith(".") and text_suffix(f.name) for f in path.iterdir()):
        return False
    names = [f.name for f in folder_files(path)]
    return not any(kind.is_file_name(name) for name in names for kind in (IMAGE_FILES, AUDIO_FILES))


def file_text(path: Path, encoding: str | None, role: str) -> str:
    """The file's text ('' when empty), decoded as data/read.py decodes tables; a binary file is one sentence."""
    if not path.exists():
        raise TunesmithError(f"The {role} file '{path}' does not exist; check the path.")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TunesmithError(f"Cannot read the {role} file '{path}' ({exc.strerror}); check its permissions.") from None
    compression = COMPRESSIONS.get(path.suffix.lower())
    if compression:
        raw = decompress(raw, compression, path)
    utf16 = raw.startswith((b"\xff\xfe", b"\xfe\xff")) or (encoding or "").lower().replace("_", "-").startswith(("utf-16", "utf-32"))
    nul = raw.find(b"\x00", 0, SNIFF_BYTES)
    if nul >= 0 and not utf16:
        raise TunesmithError(f"'{path}' is a binary file, not text (a NUL byte at byte {nul:,}); give a UTF-8 text file, "
                             f"or, if it is UTF-16 text without a byte-order mark, pass --encoding utf-16-le.")
    text = decode(raw, path, encoding).lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    head = text[:SNIFF_BYTES]
    controls = sum(1 for ch in head if unicodedata.category(ch) == "Cc" and ch not in "\t\n\f\v")
    if controls > CONTROL_SHARE * max(len(head), 1):
        raise TunesmithError(f"'{path}' looks like a binary file, not text ({controls:,} control characters in its first "
                             f"{len(head):,}); give a text file, or pass the encoding it was written in with --encoding.")
    return text


def split_documents(text: str) -> list[str]:
    """The documents of a text: separated by two or more blank lines, each stripped; blank ones dropped."""
    return [doc.strip() for doc in DOCUMENT_BREAK.split(text) if doc.strip()]


def text_frame(documents: list[str], source: Path, files: int, notes: list[str], table_like: str | None = None) -> pd.DataFrame:
    """The raw table of plain text: one `text` row per document; attrs mark it (RAW_TEXT) and say where it came from."""
    frame = pd.DataFrame({"text": documents})
    frame.attrs.update({RAW_TEXT: True, "raw_text_source": str(source), "raw_text_files": files, "notes": notes,
                        "raw_text_table": table_like})
    return frame


def read_text_file(path, encoding: str | None = None, role: str = "data") -> pd.DataFrame:
    """A .txt/.md file as documents (see the module docstring); an empty one is one sentence."""
    path = Path(path)
    documents = split_documents(file_text(path, encoding, role))
    if not documents:
        raise TunesmithError(f"The {role} file '{path}' is empty; it needs the text to train the language model on.")
    table_like = looks_like_table(documents[0]) if text_suffix(path) == ".txt" else None
    return text_frame(documents, path, 1, [], table_like)


def read_text_folder(folder, encoding: str | None = None, role: str = "data") -> pd.DataFrame:
    """Every .txt/.md file of a folder (and its sub-folders) as documents; empty files skipped with a note."""
    folder = Path(folder)
    files = [f for f in folder_files(folder) if text_suffix(f.name)]
    documents, empty = [], []
    for path in files:
        found = split_documents(file_text(path, encoding, role))
        documents += found
        if not found:
            empty.append(path.relative_to(folder).as_posix())
    if not documents:
        raise TunesmithError(f"The {len(files):,} text file{'s' if len(files) != 1 else ''} of the {role} folder '{folder}' "
                             f"{'are all' if len(files) != 1 else 'is'} empty; put the text to train on in them.")
    notes = []
    if empty:
        shown = ", ".join(f"'{name}'" for name in empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        notes.append(f"Skipped {len(empty):,} empty text file{'s' if len(empty) != 1 else ''} in '{folder}' ({shown}).")
    return text_frame(documents, folder, len(files) - len(empty), notes)


def looks_like_table(text: str) -> str | None:
    """How a .txt file's start looks like a delimited table ("columns 'text', 'label', split by ','"), or None for prose.

    A table is a header of 2-20 short names, then lines that all split into as many fields: prose has
    sentences, not names, on its first line, and commas that vary from line to line."""
    lines = [line for line in text.split("\n")[:200] if line.strip()]
    if len(lines) < 3:
        return None
    for sep in (",", "\t", ";", "|"):
        try:
            rows = list(csv.reader(io.StringIO("\n".join(lines)), delimiter=sep))
        except csv.Error:
            continue
        header = rows[0]
        names_ok = 2 <= len(header) <= 20 and all(name.strip() and len(name) <= 40 and len(name.split()) <= 3 for name in header)
        if names_ok and all(len(row) == len(header) for row in rows[1:]):
            shown = "tab" if sep == "\t" else repr(sep)
            return f"a header naming the columns {', '.join(repr(n.strip()) for n in header[:5])} and {len(rows) - 1:,} lines split by {shown} alike"
    return None


# -- documents of any table ----------------------------------------------------------------------

def text_column_of(raw: pd.DataFrame, given: str | None, path) -> str:
    """--text-column, else a column named text/content/document/body, else the table's one text column."""
    if given:
        return require_column(raw, given, path, "--text-column")
    named = names_matching(raw, TEXT_COLUMN_NAMES)
    if named:
        return named[0]
    texts = [c for c in raw.columns if mean_text_length(raw[c]) > 0]
    if len(texts) == 1:
        return texts[0]
    which = f"{len(texts)} columns hold text ({', '.join(map(repr, texts[:5]))})" if texts else "no column holds text"
    raise TunesmithError(f"'{path}' has no text column to train a language model on ({which}; its columns: "
                         f"{', '.join(map(str, raw.columns[:8]))}); name the column with --text-column.")


def documents_of(raw: pd.DataFrame, given_column: str | None, path) -> tuple[pd.Series, str | None, list[str]]:
    """(the documents, indexed by their rows of `raw`; the column they came from, None for plain text; notes): every
    row of a plain-text table, or the text column of any other table, its rows without text left out."""
    from .media_files import row_name

    notes = list(raw.attrs.get("notes", []))
    if raw.attrs.get(RAW_TEXT):
        return raw["text"], None, notes
    column = text_column_of(raw, given_column, path)
    values = raw[column]
    nested = [i for i, v in enumerate(values) if is_nested(v) or isinstance(v, (bytes, bool))]
    if nested:
        rows = ", ".join(row_name(path, i) for i in nested[:5]) + (f" and {len(nested) - 5} more" if len(nested) > 5 else "")
        raise TunesmithError(f"Column '{column}' of '{path}' has cells that are not text ({rows}); give every row a text or remove those rows.")
    kept = values[~values.map(is_missing)].map(str)
    if kept.empty:
        raise TunesmithError(f"Column '{column}' of '{path}' holds no text; fill it in, or name the column that does with --text-column.")
    if len(kept) < len(values):
        notes.append(f"Left out {len(values) - len(kept):,} of {len(values):,} rows of '{path}' with no text in column '{column}'.")
    return kept, column, notes


# -- passages -------------------------------------------------------------------------------------

def passage_chars(documents, max_length: int) -> int:
    """Characters a passage holds: about one block of max_length tokens, fewer for a short text so that it still
    makes MIN_PASSAGES passages to hold some out (never under MIN_PASSAGE_CHARS)."""
    total = sum(len(d) for d in documents)
    return max(MIN_PASSAGE_CHARS, min(CHARS_PER_TOKEN * max_length, total // MIN_PASSAGES))


def cut_point(text: str, low: int, high: int) -> int:
    """Where to end a piece within text[low:high]: before the last paragraph break, else line break, sentence end or
    space in that stretch; `high` itself (mid-word) when it has none."""
    for pattern in CUTS:
        last = None
        for last in pattern.finditer(text, low, high + 1):
            pass
        if last is not None and last.start() > low:
            return last.start()
    return high


def cut_into_pieces(text: str, max_chars: int) -> list[str]:
    """The text in pieces of at most max_chars (at least half that, but the last), which joined give the text back exactly."""
    pieces, start = [], 0
    while len(text) - start > max_chars:
        end = cut_point(text, start + max_chars // 2, start + max_chars)
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])
    return pieces


def passages(documents, max_chars: int | None) -> pd.DataFrame:
    """One row per passage: `text`; `document` and `piece` (its number and place in its document: encode keeps that
    order); `ends_document` (an end-of-text token follows it). max_chars None keeps every document whole."""
    rows = []
    for number, document in enumerate(documents):
        pieces = cut_into_pieces(document, max_chars) if max_chars else [document]
        rows += [(piece, number, k, k == len(pieces) - 1) for k, piece in enumerate(pieces)]
    return pd.DataFrame(rows, columns=["text", "document", "piece", "ends_document"])
