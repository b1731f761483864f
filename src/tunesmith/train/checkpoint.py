"""Atomic checkpoints that resume a run exactly.

A checkpoint is a folder written under a temporary name, every file fsync'd, then renamed into
place: a crash leaves either the whole checkpoint or none. It holds the trainable weights
(safetensors), the optimizer and scheduler state (tensors only, read with weights_only=True),
the random number generator states and the TrainState (data position, early stopping, history).
The best weights so far are one safetensors file, replaced atomically whenever they improve.
"""
from __future__ import annotations

import dataclasses
import json
import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..atomic import atomic_file, atomic_folder
from ..errors import TunesmithError
from .events import TrainState
from .faults import fault_point

CHECKPOINT_PREFIX = "step-"
BEST_WEIGHTS = "best.safetensors"


# buffers that training changes: BatchNorm's running statistics (conv nets), which a resumed run or the
# best weights must get back with the parameters
TRAINED_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def trained_buffers(model: torch.nn.Module):
    return ((name, b) for name, b in model.named_buffers() if name.rpartition(".")[2] in TRAINED_BUFFERS)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights a checkpoint must hold: those that train (all of them for full fine-tuning), and the
    running statistics of normalisation layers."""
    state = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    state.update((name, b.detach().cpu().contiguous()) for name, b in trained_buffers(model))
    return state


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters()) | dict(trained_buffers(model))
    missing = [n for n in tensors if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint holds weights the model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def rng_snapshot() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    np_state = np.random.get_state()
    py_state = random.getstate()
    plain = {"numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "python": [py_state[0], list(py_state[1]), py_state[2]]}
    return tensors, plain


def rng_restore(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))
    p = plain["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: TrainState) -> Path:
    """Write checkpoints/step-NNNNNNN atomically; returns its path."""
    final = Path(folder) / f"{CHECKPOINT_PREFIX}{state.step:07d}"
    rng_tensors, rng_plain = rng_snapshot()
    with atomic_folder(final) as tmp:
        save_file(trainable_state(model), str(tmp / "model.safetensors"))
        fault_point("checkpoint-write", state.step)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps({"state": dataclasses.asdict(state), "rng": rng_plain}))
    return final


def save_best_weights(folder: Path, model, state: TrainState) -> None:
    """checkpoints/best.safetensors: the weights of the best evaluation, written then renamed in."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(folder / BEST_WEIGHTS) as tmp:
        save_file(trainable_state(model), str(tmp), metadata={"step": str(state.step), "metric": str(state.best_metric)})


def load_best_weights(folder: Path, model) -> bool:
    path = Path(folder) / BEST_WEIGHTS
    if not path.is_file():
        return False
    load_trainable_state(model, read_safetensors(path))
    return True


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of an interrupted write are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    for aside in folder.glob(f".old-{CHECKPOINT_PREFIX}*"):  # a crash between atomic_folder's renames
        final = folder / aside.name[len(".old-"):].rsplit("-", 1)[0]
        if not final.exists():
            os.replace(aside, final)
    done = [p for p in folder.iterdir() if p.name.startswith(CHECKPOINT_PREFIX) and (p / "state.json").is_file()]
    return sorted(done, key=lambda p: p.name)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise TunesmithError(f"The checkpoint file '{path}' is damaged ({exc}); delete its checkpoint folder to resume from the one before.") from None


def load_checkpoint(path: Path, model, optimizer, scheduler) -> TrainState:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; returns its TrainState."""
    path = Path(path)
    try:
        load_trainable_state(model, read_safetensors(path / "model.safetensors"))
        # our own file, yet still read without unpickling code: tensors and plain values only
        saved = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        record = json.loads((path / "state.json").read_text())
        rng_restore(read_safetensors(path / "rng.safetensors"), record["rng"])
        return TrainState(**record["state"])
    except TunesmithError:
        raise
    except (OSError, RuntimeError, ValueError, KeyError, TypeError, EOFError, pickle.UnpicklingError) as exc:
        raise TunesmithError(f"Cannot resume from the checkpoint '{path}' ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                             f"it does not fit this run or is damaged: delete it to resume from the one before, or start over with --overwrite.") from None


def prune_checkpoints(folder: Path, keep: int) -> None:
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in Path(folder).glob(".tmp-*"):  # left by a process killed while writing
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
