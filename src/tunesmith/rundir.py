"""The run folder: its status record, its lock, preflight checks, and refusing to clobber earlier work.

run.json's "status" is "running" while training and becomes "done" only after every output is
written, so a folder that did not finish is never taken for a finished model. The process training
in a folder holds an flock on its RUN_LOCK file; the kernel drops it however that process ends
(kill -9 included), so the file left behind never blocks anything: only a held lock does.
"""
from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import re
import shutil
import time
from pathlib import Path

from .errors import TunesmithError
from .atomic import atomic_write_text
from .train.checkpoint import list_checkpoints

RUN_RECORD = "run.json"
RUN_LOCK = ".run.lock"  # holds the training process's pid; locked (flock) only while it runs


def read_record(run_dir: Path) -> dict | None:
    path = Path(run_dir) / RUN_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"status": "damaged"}


def write_record(run_dir: Path, record: dict) -> None:
    atomic_write_text(Path(run_dir) / RUN_RECORD, json.dumps(record, indent=2))


# -- the default run folder (no --out) --------------------------------------------------------

def default_run_dir(data: str, resume: bool = False, overwrite: bool = False, say=None) -> Path:
    """runs/<data name>; when that is taken, a new run goes to the first free runs/<name>-2, -3, ...
    and --resume continues the newest unfinished one of them. `say` (console.print) gets one line
    when the folder is not runs/<name>. --overwrite replaces runs/<name> itself."""
    base = Path("runs") / (Path(data).name.split(".")[0] or "run")
    if overwrite:
        return base
    chosen = newest_unfinished(base) if resume else first_free(base)
    if chosen != base and say is not None:
        say(f"Resuming '{chosen}', the newest unfinished run of '{base}'." if resume
            else f"'{base}' {what_it_holds(base)}, so this run goes to '{chosen}'.")
    return chosen


def numbered(base: Path, k: int) -> Path:
    return base if k == 1 else base.with_name(f"{base.name}-{k}")


def first_free(base: Path) -> Path:
    """base, base-2, base-3, ...: the first that is free."""
    for k in itertools.count(1):
        if is_free(numbered(base, k)):
            return numbered(base, k)


def is_free(path: Path) -> bool:
    """Missing, or a folder holding nothing but a stale lock file (a run that stopped before writing anything)."""
    return not path.exists() or (path.is_dir() and not run_files(path) and training_pid(path) is None)


def newest_unfinished(base: Path) -> Path:
    """The unfinished run among base, base-2, ... whose run.json was written last; base when there is none."""
    pattern = re.compile(re.escape(base.name) + r"(-[1-9][0-9]*)?")
    siblings = [p for p in base.parent.iterdir() if pattern.fullmatch(p.name)] if base.parent.is_dir() else []
    unfinished = [p for p in siblings if is_unfinished(p)]
    return max(unfinished, key=lambda p: (p / RUN_RECORD).stat().st_mtime_ns, default=base)


def is_unfinished(run_dir: Path) -> bool:
    record = read_record(run_dir)
    return record is not None and record.get("status") != "done"


def what_it_holds(run_dir: Path) -> str:
    record = read_record(run_dir)
    if record is None:
        return "holds files that are not a tunesmith run"
    return "holds a finished run" if record.get("status") == "done" else "holds an unfinished run"


def run_files(run_dir: Path) -> list[Path]:
    """The folder's entries other than the lock file."""
    return [p for p in Path(run_dir).iterdir() if p.name != RUN_LOCK]


# -- the lock held while training ---------------------------------------------------------------

@contextlib.contextmanager
def hold_run_lock(run_dir):
    """Hold the run folder's lock for as long as training writes to it; the folder must exist (enter it after
    prepare_run_dir). Raises the still-training error when another live process holds it."""
    fd = os.open(Path(run_dir) / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not take_lock(fd, fcntl.LOCK_EX, tries=5):
            raise still_training(run_dir, read_pid(fd))
        pid = f"{os.getpid()}\n".encode()
        os.pwrite(fd, pid, 0)
        os.ftruncate(fd, len(pid))  # written, then cut: a reader never sees an empty file
        yield
    finally:
        os.close(fd)  # releases the lock


def take_lock(fd: int, kind: int, tries: int = 1) -> bool:
    """flock without blocking; retried for an instant, as a prober (training_pid) holds a shared lock briefly."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < tries:
                time.sleep(0.02)
    return False


def training_pid(run_dir) -> int | None:
    """The pid of the live process training in run_dir (0 when it has not written it yet), or None."""
    try:
        fd = os.open(Path(run_dir) / RUN_LOCK, os.O_RDONLY)
    except OSError:  # no lock file, or no such folder
        return None
    try:
        return None if take_lock(fd, fcntl.LOCK_SH) else read_pid(fd)
    finally:
        os.close(fd)


def read_pid(fd: int) -> int:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").split("\n")[0].strip()
    return int(text) if text.isdigit() else 0


def still_training(run_dir, pid: int) -> TunesmithError:
    if not pid:
        return TunesmithError(f"'{run_dir}' is still training; wait for it to finish or stop it first.")
    return TunesmithError(f"'{run_dir}' is still training (pid {pid}); wait for it to finish or stop it (kill {pid}) first.")


def check_not_training(run_dir) -> None:
    """Refuse to touch a folder that a live run is writing."""
    pid = training_pid(run_dir)
    if pid is not None:
        raise still_training(run_dir, pid)


# -- preflight ------------------------------------------------------------------------------------

def prepare_run_dir(run_dir: Path, output_cfg, expected_bytes: int = 0) -> Path | None:
    """Create or check the run folder; returns the checkpoint to resume from, if any.

    Refuses a folder that a live run is training in. Refuses to overwrite: a finished run needs
    --overwrite, an unfinished one --resume or --overwrite. Then checks that the folder is
    writable and has room for the run's files.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TunesmithError(f"--out '{run_dir}' is a file, not a folder; choose another --out.")
    check_not_training(run_dir)
    record = read_record(run_dir)
    has_files = run_dir.is_dir() and bool(run_files(run_dir))  # a stale lock file alone is no run
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    resume_from = None
    if output_cfg.resume:
        if record is None:
            raise TunesmithError(f"--resume: '{run_dir}' holds no tunesmith run to continue; check --out, or drop --resume to start a new run.")
        if record.get("status") == "done":
            raise TunesmithError(f"--resume: the run in '{run_dir}' already finished; its model is ready (tunesmith predict {run_dir} ...).")
        resume_from = checkpoints[-1] if checkpoints else None
    elif has_files:
        if record is None:
            raise TunesmithError(f"--out '{run_dir}' already holds files that are not a tunesmith run; choose an empty or new folder.")
        if not output_cfg.overwrite:
            if record.get("status") == "done":
                raise TunesmithError(f"'{run_dir}' already holds a finished run; pass --overwrite to replace it or choose another --out.")
            where = f" (last checkpoint: step {int(checkpoints[-1].name.split('-')[1])})" if checkpoints else ""
            raise TunesmithError(f"'{run_dir}' holds an unfinished run{where}; pass --resume to continue it, --overwrite to start over, or choose another --out.")
    check_room(run_dir, expected_bytes)
    if has_files and not output_cfg.resume:  # --overwrite, and the new run can be written
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return resume_from


def check_room(run_dir: Path, expected_bytes: int) -> None:
    """The run folder (or the folder it will be made in) is writable and has room for the run."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise TunesmithError(f"Cannot create the run folder '{run_dir}': '{existing}' is a file; choose another --out.")
    probe = existing / f".tunesmith-write-test-{os.getpid()}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise TunesmithError(f"Cannot write to '{existing}' ({exc.strerror}), where the run folder '{run_dir}' goes; choose a folder you can write to with --out.") from None
    free = shutil.disk_usage(existing).free
    if expected_bytes and free < expected_bytes:
        raise TunesmithError(f"Only {free / 2**30:.2f} GiB free where '{run_dir}' goes, and this run needs about {expected_bytes / 2**30:.2f} GiB "
                             f"for its model and checkpoints; free some space or choose another --out.")
