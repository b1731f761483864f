"""Atomic writes: a reader (or a crash) sees the old file or the new one, never half of one.

Every output a user could mistake for complete (metrics, predictions, plots, the model folder,
checkpoints) is written under a temporary name beside its final path, fsync'd, then renamed.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield a temporary path beside `path` to write to; on success fsync it and rename it to `path`.

    The temporary name keeps the final suffix (`.tmp-x-123.csv`), so writers that go by the
    suffix (matplotlib, pandas' compression) write the right format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.stem}-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextlib.contextmanager
def atomic_folder(final: Path):
    """Yield a temporary folder beside `final`; on success fsync it and rename it to `final`.

    A folder that already exists is moved aside first (directories cannot be renamed over);
    train/checkpoint.list_checkpoints() puts it back if a crash falls between the two renames.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    try:
        yield tmp
        for path in tmp.rglob("*"):
            if path.is_file():
                fsync_path(path)
        fsync_path(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_path(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
