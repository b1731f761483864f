"""NaN/inf losses and gradients, out-of-memory errors and preflight checks, on the tiny model.

Faults come from the test-only hook in train/faults.py (the TUNESMITH_FAULT variable).
"""
from __future__ import annotations

import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tunesmith.cli import main
from tunesmith.errors import TunesmithError
from tunesmith.train.checkpoint import list_checkpoints

# 144 train examples, batch 16: 9 steps an epoch
OPTIONS = dict(epochs=2, batch_size=16, lr=3e-3, early_stopping=0, threads=2, val_fraction=0.1, refit="off")


def train(reviews_csv, tiny_model, out, **options):
    return tunesmith.finetune(reviews_csv, model=str(tiny_model), out=str(out), **{**OPTIONS, **options})


def all_finite(path: Path) -> bool:
    return all(torch.isfinite(t).all() for t in load_file(str(path)).values())


# -- NaN and inf ------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault, max_grad_norm", [("nan-at=5", 1.0), ("nan-grad-at=5", 1.0), ("nan-grad-at=5", 0.0)],
                         ids=["nan-loss", "nan-gradient", "nan-gradient-no-clipping"])
def test_nan_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(fault, max_grad_norm, tmp_path, reviews_csv,
                                                                           tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("TUNESMITH_FAULT", fault)
    out = tmp_path / "run"
    args = ["train", str(reviews_csv), "--model", str(tiny_model), "--out", str(out), "--epochs", "2", "--batch-size", "16",
            "--checkpoint-every", "2", "--max-grad-norm", str(max_grad_norm), "--threads", "2"]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: The loss or its gradient became NaN/infinite at step 5")
    assert "step-0000004" in error and "--lr" in error and "--on-nan skip" in error
    kept = list_checkpoints(out / "checkpoints")
    assert [p.name for p in kept] == ["step-0000002", "step-0000004"]  # nothing after the bad step
    assert all(all_finite(p / "model.safetensors") for p in kept)
    assert json.loads((out / "run.json").read_text())["status"] == "running" and not (out / "metrics.json").exists()


def test_on_nan_skip_skips_isolated_bad_batches_and_counts_them(tmp_path, reviews_csv, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNESMITH_FAULT", "nan-at=3,11;nan-grad-at=7")
    run = train(reviews_csv, tiny_model, tmp_path / "run", on_nan="skip")
    assert run.metrics["train"]["skipped_batches"] == 3
    assert run.metrics["train"]["steps"] == 18
    assert all_finite(tmp_path / "run" / "model.safetensors")
    losses = run.metrics["curves"]["losses"]
    assert [step for step, _ in losses] == [s for s in range(1, 19) if s not in (3, 7, 11)]


def test_on_nan_skip_still_stops_when_bad_batches_are_not_isolated(tmp_path, reviews_csv, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNESMITH_FAULT", "nan-at=1,2,3,4,5")
    with pytest.raises(TunesmithError, match="4 batches were skipped, too many to be isolated"):
        train(reviews_csv, tiny_model, tmp_path / "run", on_nan="skip")


# -- out of memory ----------------------------------------------------------------------------------

def test_out_of_memory_halves_the_micro_batch_and_keeps_the_effective_batch(tmp_path, reviews_csv, tiny_model, monkeypatch, capsys):
    monkeypatch.setenv("TUNESMITH_FAULT", "oom-above=8")  # micro-batches of more than 8 examples "do not fit"
    recovered = train(reviews_csv, tiny_model, tmp_path / "oom", grad_accum=1, epochs=1)
    assert "micro-batch halved, gradient accumulation now 2" in capsys.readouterr().out
    assert recovered.metrics["train"]["final_grad_accum"] == 2 and recovered.metrics["train"]["steps"] == 9
    monkeypatch.delenv("TUNESMITH_FAULT")
    planned = train(reviews_csv, tiny_model, tmp_path / "accum2", grad_accum=2, epochs=1)
    a, b = load_file(str(tmp_path / "oom" / "model.safetensors")), load_file(str(tmp_path / "accum2" / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6)
    assert planned.metrics["train"]["final_grad_accum"] == 2
    # the comparison can fail: micro-batches of 16 (other padding, other dropout draws) end elsewhere
    train(reviews_csv, tiny_model, tmp_path / "accum1", grad_accum=1, epochs=1)
    c = load_file(str(tmp_path / "accum1" / "model.safetensors"))
    assert any(not torch.allclose(a[name], c[name], rtol=1e-5, atol=1e-6) for name in a)


def test_out_of_memory_with_one_example_per_micro_batch_is_a_clear_error(tmp_path, reviews_csv, tiny_model, monkeypatch):
    monkeypatch.setenv("TUNESMITH_FAULT", "oom-above=0")
    with pytest.raises(TunesmithError, match="Out of memory at step 1 even with one example per micro-batch; lower max_length="):
        train(reviews_csv, tiny_model, tmp_path / "run")


# -- preflight: everything that can fail is checked before the first step ----------------------------

@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if training starts: preflight errors must come first."""
    def fit(*args, **kwargs):
        raise AssertionError("training started before the preflight error")

    monkeypatch.setattr("tunesmith.job.fit", fit)


def test_low_disk_is_refused_before_training(tmp_path, reviews_csv, tiny_model, monkeypatch, no_training):
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr("tunesmith.rundir.shutil.disk_usage", lambda path: Usage(10**9, 10**9 - 50_000, 50_000))
    with pytest.raises(TunesmithError, match=r"Only 0.00 GiB free where .* needs about 0.00 GiB"):
        train(reviews_csv, tiny_model, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unwritable_output_folder_is_refused_before_training(tmp_path, reviews_csv, tiny_model, monkeypatch, no_training):
    real_write = Path.write_text

    def read_only(self, *args, **kwargs):  # tests run as root, where chmod cannot make a folder read-only
        if ".tunesmith-write-test" in self.name:
            raise PermissionError(13, "Permission denied")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", read_only)
    with pytest.raises(TunesmithError, match="Cannot write to .* \\(Permission denied\\)"):
        train(reviews_csv, tiny_model, tmp_path / "deep" / "run")
    assert not (tmp_path / "deep").exists()


def test_bad_row_at_the_end_of_the_data_is_found_before_the_model_loads(tmp_path, tiny_model, monkeypatch, no_training):
    from conftest import toy_reviews

    path = tmp_path / "big.csv"
    table = toy_reviews(3000)
    table.loc[2999, "sentiment"] = ""
    table.to_csv(path, index=False)
    monkeypatch.setattr("tunesmith.job.resolve_model_source", lambda name: pytest.fail("the model was loaded before the data was checked"))
    with pytest.raises(TunesmithError, match="has no label on lines 3001"):
        train(path, tiny_model, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unloadable_model_is_found_before_the_run_folder_is_made(tmp_path, reviews_csv, tiny_model, no_training):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(TunesmithError, match="weights of .* are damaged"):
        train(reviews_csv, broken, tmp_path / "run")
    assert not (tmp_path / "run").exists()
