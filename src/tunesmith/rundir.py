"""The run folder: its status record, preflight checks, and refusing to clobber earlier work.

run.json's "status" is "running" while training and becomes "done" only after every output is
written, so a folder that did not finish is never taken for a finished model.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import TunesmithError
from .train.checkpoint import atomic_write_text, list_checkpoints

RUN_RECORD = "run.json"


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


def default_run_dir(data: str) -> Path:
    name = Path(data).name.split(".")[0] or "run"
    return Path("runs") / name


def prepare_run_dir(run_dir: Path, output_cfg, expected_bytes: int = 0) -> Path | None:
    """Create or check the run folder; returns the checkpoint to resume from, if any.

    Refuses to overwrite: a finished run needs --overwrite, an unfinished one --resume or
    --overwrite. Then checks that the folder is writable and has room for the run's files.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TunesmithError(f"--out '{run_dir}' is a file, not a folder; choose another --out.")
    record = read_record(run_dir)
    has_files = run_dir.is_dir() and any(run_dir.iterdir())
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
