"""Labeled files as training data, whatever they hold (images, audio clips): finding them, checking
their paths, naming the bad ones, and keeping each decoded file once.

Two layouts name the files of a split:

    data/<class>/<file>             one level of class folders; hidden files and folders skipped
    table.csv (or .jsonl)           a column of paths (relative to the table's folder) and a label column

Both become a raw table with a path column and a label column (`folder_table` for a folder), so a
task reads either the same way. Each medium describes itself once with a MediaKind (data/images.py's
IMAGE_FILES, data/audio.py's AUDIO_FILES) and every function here takes it, so the images' and the
clips' messages say the same things in their own words. Paths never leave the data folder (data/paths.py).
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TunesmithError
from .columns import names_matching, require_column

SHOWN = 3  # bad files or rows named in one sentence; the rest are counted
COLUMN_SHARE = 0.9  # of a column's cells that must be file names of the medium for an unnamed column to count


@dataclass(frozen=True)
class MediaKind:
    """How one medium's files are recognised and named in messages."""

    name: str                       # "image", "audio": its task ("image classification"), "image paths", attrs["image_folder"]
    plural: str                     # "images", "clips"
    item: str                       # "<image>": a file in the layout a message shows ('photos/<class>/<image>')
    suffixes: tuple[str, ...]       # lower-case file suffixes read as this medium
    suffix_words: str               # "JPEG, PNG, WebP, BMP, GIF or TIFF"
    path_names: tuple[str, ...]     # column names that hold its paths, best first (the cells must match too)
    column_option: str              # "--image-column"

    @property
    def folder_attr(self) -> str:
        """The raw table's attrs key that marks a folder of class folders of this medium."""
        return f"{self.name}_folder"

    def is_file_name(self, name) -> bool:
        return isinstance(name, str) and name.strip().lower().endswith(self.suffixes)


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"  # macOS zip archives add __MACOSX/ with ._ copies of every file


def listed(items, shown: int = SHOWN) -> str:
    """'a', 'b', 'c' and 4 more."""
    items = list(items)
    text = ", ".join(f"'{item}'" for item in items[:shown])
    return text + (f" and {len(items) - shown} more" if len(items) > shown else "")


def visible_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and not is_hidden(f.name))


# -- finding the files of a split -------------------------------------------------------------------

def kind_of_folder(folder: Path, kinds: tuple[MediaKind, ...]) -> MediaKind:
    """The medium a folder of class folders holds: the one with the most files in its class folders (then
    loose in the folder itself); the first kind when it holds none of them."""
    classes = [d for d in folder.iterdir() if d.is_dir() and not is_hidden(d.name)]
    in_classes = [f.name for d in classes for f in visible_files(d)]
    loose = [f.name for f in visible_files(folder)]
    for names in (in_classes, loose):
        counts = [sum(kind.is_file_name(n) for n in names) for kind in kinds]
        if max(counts, default=0):
            return kinds[counts.index(max(counts))]
    return kinds[0]


def folder_table(folder, kinds: tuple[MediaKind, ...], min_classes: int = 2) -> pd.DataFrame:
    """A folder of class sub-folders as a raw table: `path` (relative to the folder) and `label` (the
    sub-folder's name), for the medium it holds (kind_of_folder). attrs[kind.folder_attr] marks the
    layout; attrs['notes'] says what was skipped."""
    folder = Path(folder)
    kind = kind_of_folder(folder, kinds)
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not is_hidden(d.name))
    rows, empty, others = [], [], 0
    for class_dir in classes:
        files = visible_files(class_dir)
        members = [f for f in files if kind.is_file_name(f.name)]
        others += len(files) - len(members)
        if not members:
            empty.append(class_dir)
        rows += [(f"{class_dir.name}/{f.name}", class_dir.name) for f in members]
    loose = [f.name for f in visible_files(folder) if kind.is_file_name(f.name)]
    if not rows:
        found = f"{len(loose)} {kind.plural} but no class sub-folders" if loose else f"no {kind.plural} in class sub-folders"
        layouts = [f"for {k.name} classification put each class's {k.plural} in a sub-folder named after the class "
                   f"('{folder}/<class>/{k.item}', {k.suffix_words} files)" if i == 0 else
                   f"for {k.name} classification each class's {k.plural} ('{folder}/<class>/{k.item}', {k.suffix_words} files)"
                   for i, k in enumerate((kind, *(k for k in kinds if k is not kind)))]
        raise TunesmithError(f"'{folder}' is a folder with {found}; {', '.join(layouts)}, or give a CSV with path and label "
                             f"columns; for text, give a data file (CSV, TSV, JSON, JSONL or Parquet).")
    if empty:
        nested = any(d.is_dir() for d in empty[0].iterdir())
        why = f" ({kind.plural} in deeper folders do not count: the classes are the first level of sub-folders)" if nested else ""
        raise TunesmithError(f"The class folder{'s' if len(empty) > 1 else ''} {listed(str(d) for d in empty)} of '{folder}' "
                             f"hold{'' if len(empty) > 1 else 's'} no {kind.suffix_words} {kind.plural}{why}; add {kind.plural} or remove "
                             f"{'those folders' if len(empty) > 1 else 'that folder'}.")
    labels = sorted({label for _, label in rows})
    if len(labels) < min_classes:
        raise TunesmithError(f"The {kind.name} folder '{folder}' has a single class folder ('{labels[0]}'); a classifier needs at least two: "
                             f"add a sub-folder of {kind.plural} for each other class.")
    table = pd.DataFrame(rows, columns=["path", "label"])
    table.attrs[kind.folder_attr] = str(folder)
    notes = []
    if others:
        notes.append(f"Skipped {others:,} file{'s' if others != 1 else ''} in the class folders of '{folder}' without an {kind.name} suffix "
                     f"(only {kind.suffix_words} files are read).")
    if loose:
        notes.append(f"Skipped {len(loose):,} {kind.plural if len(loose) != 1 else kind.item.strip('<>')} directly in '{folder}', "
                     f"outside any class folder ({listed(loose)}).")
    table.attrs["notes"] = notes
    return table


def files_in(folder, kind: MediaKind) -> list[Path]:
    """The files of a folder to predict on: those in it and in its (class) sub-folders, sorted."""
    folder = Path(folder)
    found = [f for f in visible_files(folder) if kind.is_file_name(f.name)]
    for sub in (d for d in folder.iterdir() if d.is_dir() and not is_hidden(d.name)):
        found += [f for f in visible_files(sub) if kind.is_file_name(f.name)]
    if not found:
        raise TunesmithError(f"The folder '{folder}' holds no {kind.suffix_words} {kind.plural} (nor do its sub-folders); give {kind.name} files, "
                             f"a folder of them, or a CSV with a path column.")
    return sorted(found)


def has_class_folders(folder: Path, kind: MediaKind) -> bool:
    """Whether a folder has sub-folders holding the medium's files (a labeled folder, for eval and predict --file)."""
    return any(d.is_dir() and not is_hidden(d.name) and any(kind.is_file_name(f.name) for f in d.iterdir()) for d in folder.iterdir())


# -- the path column of a table ---------------------------------------------------------------------

def name_share(values: pd.Series, kind: MediaKind) -> float:
    """The share of a column's cells (the first 2,000) that are file names of the medium."""
    head = values.head(2000)
    return float(head.map(kind.is_file_name).mean()) if len(head) else 0.0


def path_column_of(raw: pd.DataFrame, kind: MediaKind) -> str | None:
    """The column of the medium's paths, by name (path, image, file, ...) or by its cells, or None."""
    for column in names_matching(raw, kind.path_names):
        if name_share(raw[column], kind) >= 0.5:
            return column
    shares = {column: name_share(raw[column], kind) for column in raw.columns}
    best = max(shares, key=shares.get, default=None)
    return best if best is not None and shares[best] >= COLUMN_SHARE else None


def find_path_column(raw: pd.DataFrame, source, kind: MediaKind, given: str | None = None, trained: str | None = None) -> str:
    """The --image-column (--audio-column), else the training run's column name (predict/eval), else inferred."""
    if given:
        return require_column(raw, given, source, kind.column_option)
    by_lower = {str(c).strip().lower(): c for c in raw.columns}
    if trained and str(trained).strip().lower() in by_lower:
        return by_lower[str(trained).strip().lower()]
    column = path_column_of(raw, kind)
    if column is None:
        raise TunesmithError(f"Could not tell which column of '{source}' holds the {kind.name} paths (columns: {', '.join(map(str, raw.columns))}); "
                             f"name it with {kind.column_option} (its cells must be {kind.suffix_words} file names).")
    return column


def data_folder(source) -> Path:
    """The folder a split's paths are relative to: the data folder itself, or the table's folder."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def row_name(source, i: int) -> str:
    """How a message names row i of a file: its line in a CSV/TSV (after the header), else its row."""
    suffixes = [s.lower() for s in Path(source).suffixes]
    return f"line {i + 2}" if any(s in (".csv", ".tsv", ".tab") for s in suffixes) else f"row {i + 1}"


def resolve_paths(raw: pd.DataFrame, column: str, source, kind: MediaKind) -> tuple[list[str], list[str]]:
    """(resolved file of each row, the path as a person reads it: relative to where the command ran).

    A cell that is empty, leaves the data folder or names no file is one sentence naming the rows."""
    from .columns import is_missing
    from .paths import safe_member_path

    base, shown_base = data_folder(source), Path(source) if Path(source).is_dir() else Path(source).parent
    where = f"the {kind.name} folder" if Path(source).is_dir() else f"'{source}'"
    cells = raw[column]
    empty = [i for i, cell in enumerate(cells) if is_missing(cell) or not isinstance(cell, str)]
    if empty:
        raise TunesmithError(f"Column '{column}' of {where} has no {kind.name} path on {', '.join(row_name(source, i) for i in empty[:SHOWN])}"
                             f"{f' and {len(empty) - SHOWN} more rows' if len(empty) > SHOWN else ''}; give every row a file path or remove those rows.")
    files, shown, missing = [], [], []
    for i, cell in enumerate(cells):
        named = f"The {kind.name} folder '{source}'" if Path(source).is_dir() else f"{row_name(source, i).capitalize()} of {where}"
        # a folder's own scan may follow the user's links (a class folder linked in); a table's cells may not leave it
        path = safe_member_path(base, cell, allow_outside=Path(source).is_dir(), where=named)
        if not path.is_file():
            missing.append((i, cell))
        files.append(str(path))
        shown.append(cell.strip() if os.path.isabs(cell.strip()) else os.path.normpath(shown_base / cell.strip()))
    if missing:
        named = ", ".join(f"{row_name(source, i)} ('{cell}')" for i, cell in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise TunesmithError(f"{len(missing):,} of {len(cells):,} {kind.name} paths in {where} name no file: {named}{more}; paths are relative to "
                             f"'{base}', so fix them or remove those rows.")
    return files, shown


# -- files that do not decode -----------------------------------------------------------------------

def bad_files_message(bad: list[tuple[str, str]], total: int, role: str, kind: MediaKind, can_skip: bool = True) -> str:
    """One sentence naming the first few files that do not decode (and why), the count, and the fix."""
    shown = ", ".join(f"'{path}' ({why})" for path, why in bad[:SHOWN])
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    skip = ", or pass --skip-bad-files to leave them out" if can_skip else ""
    return f"{len(bad):,} of {total:,} {role} {kind.plural} cannot be decoded: {shown}{more}; fix or remove them{skip}."


# -- the decode cache -------------------------------------------------------------------------------

def memory_limit_bytes() -> int:
    """Decoded files up to an eighth of the machine's memory stay in RAM; the rest go to a temporary file."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (ValueError, OSError, AttributeError):
        return 2 << 30


class DecodedFiles:
    """Every file decoded once by `decode` (source -> numpy array), kept by its resolved path: in memory,
    then, past `limit_bytes`, appended to an unlinked temporary file read back through np.memmap. Sources
    given in memory (a PIL image, an array) are decoded and stored but not looked up again. `problem`
    says in a few words why a source did not decode."""

    def __init__(self, decode, problem, kind: MediaKind, limit_bytes: int | None = None):
        self.decode, self.problem, self.kind = decode, problem, kind
        self.limit = memory_limit_bytes() if limit_bytes is None else limit_bytes
        self.by_path: dict[str, int] = {}
        self.in_memory: list[np.ndarray | None] = []
        self.on_disk: dict[int, tuple[int, tuple, np.dtype]] = {}  # entry -> (offset, shape, dtype) in the file
        self.memory_bytes = self.file_bytes = 0
        self.file = self.mapped = None

    def __len__(self) -> int:
        return len(self.in_memory)

    def add_all(self, sources: list, shown: list[str] | None = None) -> np.ndarray:
        """The entry of each source, decoding those not seen before; files that do not decode are one error naming them."""
        entries, bad = self.decode_all(sources)
        if bad:
            raise TunesmithError(bad_files_message([((shown or sources)[i], why) for i, why in bad], len(sources), "input", self.kind,
                                                   can_skip=False))
        return np.asarray(entries, dtype=np.int64)

    def decode_all(self, sources: list) -> tuple[list[int | None], list[tuple[int, str]]]:
        """(the entry of each source, None where it does not decode; (row, why) of those that do not)."""
        entries, bad = [], []
        for i, source in enumerate(sources):
            key = source if isinstance(source, str) else None
            if key is not None and key in self.by_path:
                entries.append(self.by_path[key])
                continue
            try:
                array = self.decode(source)
            except TunesmithError:
                raise
            except Exception as exc:  # noqa: BLE001  (decoders raise OSError, RuntimeError, ValueError, struct.error ...)
                bad.append((i, self.problem(exc)))
                entries.append(None)
                continue
            entries.append(self.store(array))
            if key is not None:
                self.by_path[key] = entries[-1]
        return entries, bad

    def store(self, array: np.ndarray) -> int:
        entry = len(self.in_memory)
        if self.memory_bytes + array.nbytes <= self.limit:
            self.in_memory.append(array)
            self.memory_bytes += array.nbytes
            return entry
        if self.file is None:  # unlinked: the OS frees it however the process ends
            self.file = tempfile.TemporaryFile(prefix=f"tunesmith-{self.kind.plural}-")
        self.file.seek(self.file_bytes)
        self.file.write(np.ascontiguousarray(array).tobytes())
        self.on_disk[entry] = (self.file_bytes, array.shape, array.dtype)
        self.file_bytes += array.nbytes
        self.in_memory.append(None)
        return entry

    def __getitem__(self, entry: int) -> np.ndarray:
        array = self.in_memory[entry]
        if array is not None:
            return array
        offset, shape, dtype = self.on_disk[entry]
        if self.mapped is None or len(self.mapped) < self.file_bytes:
            self.file.flush()
            self.mapped = np.memmap(self.file, dtype=np.uint8, mode="r", shape=(self.file_bytes,))
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.mapped, dtype=dtype, count=count, offset=offset).reshape(shape)
