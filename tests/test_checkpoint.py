"""Unit tests of train/checkpoint.py (atomic writes, exact state round trip, pruning) and of the
run folder rules in rundir.py (refuse, resume, overwrite)."""
from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tunesmith.atomic import atomic_folder, atomic_write_text
from tunesmith.errors import TunesmithError
from tunesmith.rundir import prepare_run_dir, write_record
from tunesmith.train import checkpoint as ckpt
from tunesmith.train.events import TrainState


def tiny_training_objects(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Dropout(0.5), torch.nn.Linear(3, 2))
    model[0].bias.requires_grad_(False)  # frozen weights are not part of a checkpoint
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (step + 1))
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler


def test_checkpoint_round_trip_is_exact(tmp_path):
    model, optimizer, scheduler = tiny_training_objects()
    state = TrainState(epoch=1, steps_in_epoch=2, step=3, total_steps=9, best_metric=0.7, best_step=2, history=[{"step": 2}], losses=[[1, 0.5]])
    torch.manual_seed(123)
    np.random.seed(5)
    random.seed(9)
    path = ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, state)
    expected_draws = (torch.rand(3), np.random.rand(2), random.random())
    assert path.name == "step-0000003"
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "optimizer.pt", "rng.safetensors", "state.json"]
    assert "0.bias" not in ckpt.read_safetensors(path / "model.safetensors")

    model2, optimizer2, scheduler2 = tiny_training_objects(seed=1)  # other weights, other optimizer state
    loaded = ckpt.load_checkpoint(path, model2, optimizer2, scheduler2)
    assert loaded == state
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(torch.equal(dict(model.named_parameters())[n], dict(model2.named_parameters())[n]) for n in trained)
    assert scheduler2.state_dict() == scheduler.state_dict()
    for a, b in zip(optimizer.state_dict()["state"].values(), optimizer2.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    draws = (torch.rand(3), np.random.rand(2), random.random())  # the random streams carry on exactly
    assert torch.equal(draws[0], expected_draws[0]) and np.array_equal(draws[1], expected_draws[1]) and draws[2] == expected_draws[2]


def test_interrupted_writes_leave_no_checkpoint_and_are_cleaned(tmp_path):
    model, optimizer, scheduler = tiny_training_objects()
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(tmp_path / "step-0000005") as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())  # cleaned on the way out
    # what a SIGKILL leaves (no chance to clean): ignored by list_checkpoints, removed by the next prune
    (tmp_path / ".tmp-step-0000009-abc").mkdir()
    (tmp_path / ".tmp-best.safetensors-77").write_bytes(b"x")
    for step in (2, 4, 6):
        ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=step))
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000002", "step-0000004", "step-0000006"]
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000004", "step-0000006"]


def test_a_crash_between_the_two_renames_is_repaired(tmp_path):
    model, optimizer, scheduler = tiny_training_objects()
    saved = ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=4))
    saved.rename(tmp_path / ".old-step-0000004-4242")  # atomic_folder moved it aside, then the process died
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-0000004"]


def test_best_weights_are_one_file_replaced_atomically(tmp_path):
    model, _, _ = tiny_training_objects()
    ckpt.save_best_weights(tmp_path, model, TrainState(step=7, best_metric=0.9))
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]
    other, _, _ = tiny_training_objects(seed=3)
    assert ckpt.load_best_weights(tmp_path, other)
    assert torch.equal(other[2].weight, model[2].weight)
    assert not ckpt.load_best_weights(tmp_path / "none", other)


def test_damaged_checkpoint_is_a_clear_error(tmp_path):
    model, optimizer, scheduler = tiny_training_objects()
    path = ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=1))
    (path / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(TunesmithError, match="is damaged.*delete its checkpoint folder"):
        ckpt.load_checkpoint(path, model, optimizer, scheduler)
    path = ckpt.save_checkpoint(tmp_path, model, optimizer, scheduler, TrainState(step=2))
    bigger = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    with pytest.raises(TunesmithError, match="Cannot resume from the checkpoint .* does not fit this run"):
        ckpt.load_checkpoint(path, bigger, optimizer, scheduler)


def test_atomic_write_text_replaces_whole_files(tmp_path):
    target = tmp_path / "run.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


# -- rundir.py ------------------------------------------------------------------------------------

def output(resume=False, overwrite=False):
    return SimpleNamespace(resume=resume, overwrite=overwrite)


def test_run_folder_rules(tmp_path):
    run = tmp_path / "run"
    assert prepare_run_dir(run, output()) is None and run.is_dir()  # new: created
    write_record(run, {"status": "running"})
    model, optimizer, scheduler = tiny_training_objects()
    for step in (3, 6):
        ckpt.save_checkpoint(run / "checkpoints", model, optimizer, scheduler, TrainState(step=step))
    with pytest.raises(TunesmithError, match="unfinished run \\(last checkpoint: step 6\\); pass --resume"):
        prepare_run_dir(run, output())
    assert prepare_run_dir(run, output(resume=True)).name == "step-0000006"
    write_record(run, {"status": "done"})
    with pytest.raises(TunesmithError, match="already holds a finished run; pass --overwrite"):
        prepare_run_dir(run, output())
    with pytest.raises(TunesmithError, match="already finished"):
        prepare_run_dir(run, output(resume=True))
    assert prepare_run_dir(run, output(overwrite=True)) is None
    assert run.is_dir() and not list(run.iterdir())  # replaced only when asked


def test_overwrite_never_deletes_a_folder_that_is_not_a_run(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(TunesmithError, match="not a tunesmith run"):
        prepare_run_dir(tmp_path, output(overwrite=True))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_damaged_record_is_not_taken_for_a_finished_run(tmp_path):
    (tmp_path / "run.json").write_text("{half a rec")
    with pytest.raises(TunesmithError, match="unfinished run"):
        prepare_run_dir(tmp_path, output())
    from tunesmith.job import finished_record

    with pytest.raises(TunesmithError, match="did not finish \\(status: damaged\\)"):
        finished_record(tmp_path)
