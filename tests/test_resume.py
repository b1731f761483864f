"""Exact resume: a real `tunesmith train` process killed at chosen points and resumed with
`--resume` ends with weights bitwise identical to a run that was never interrupted.

The kill points come from the test-only fault hook (train/faults.py, TUNESMITH_FAULT): SIGKILL
in the middle of an optimizer step, halfway through a checkpoint write and during evaluation,
plus SIGTERM and SIGINT sent from outside while a step runs.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import toy_reviews
from tunesmith.cli import main
from tunesmith.train.checkpoint import list_checkpoints

# 86 train / 10 validation examples, batch 16: 6 steps an epoch, 18 in all; checkpoints at
# steps 4, 6 (epoch end), 8, 12, 16 and 18; dropout on, so the RNG state must resume exactly.
TRAIN_FLAGS = ["--epochs", "3", "--val-fraction", "0.1", "--refit", "off", "--batch-size", "16", "--lr", "3e-3", "--early-stopping", "0", "--checkpoint-every", "4",
               "--keep-checkpoints", "2", "--threads", "1", "--seed", "7"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("resume")
    data = folder / "reviews.csv"
    toy_reviews(96, seed=3).to_csv(data, index=False)
    return folder, data, tiny_model


def train_command(data: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunesmith.cli", "train", str(data), "--model", str(model), "--out", str(out), *TRAIN_FLAGS, *extra]


def child_env(fault: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_FAULT"}
    env["HF_HUB_OFFLINE"] = "1"
    if fault:
        env["TUNESMITH_FAULT"] = fault
    return env


def run(command: list[str], fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=child_env(fault), capture_output=True, text=True, timeout=300)


def run_with_signal(command: list[str], pause_at: str, sig: int) -> tuple[int, str]:
    """Start a run that pauses inside a step, send it `sig` during the pause, wait for it."""
    proc = subprocess.Popen(command, env=child_env(f"pause-at={pause_at}"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("tunesmith-fault: paused"):
            proc.send_signal(sig)
            break
    lines.extend(proc.stderr)
    return proc.wait(timeout=300), "".join(lines)


def assert_same_weights(expected: Path, got: Path) -> None:
    """The saved model (the best evaluation's weights) and the last checkpoint's weights (step 16: a
    finished loop writes none), bit for bit."""
    for name in ("model.safetensors", "checkpoints/step-0000016/model.safetensors"):
        a, b = load_file(str(expected / name)), load_file(str(got / name))
        assert a.keys() == b.keys()
        different = [key for key in a if not torch.equal(a[key], b[key])]
        assert not different, f"{name}: weights differ after resume: {different[:5]}"


def last_state(out: Path) -> dict:
    return json.loads((list_checkpoints(out / "checkpoints")[-1] / "state.json").read_text())["state"]


def assert_killed_unfinished(out: Path, result: subprocess.CompletedProcess, capsys) -> None:
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert not (out / "metrics.json").exists() and not (out / "model.safetensors").exists()
    assert main(["predict", str(out), "a lovely film"]) == 2  # an unfinished folder is never taken for a model
    assert "did not finish" in capsys.readouterr().err


@pytest.fixture(scope="module")
def reference(workspace):
    folder, data, model = workspace
    out = folder / "uninterrupted"
    result = run(train_command(data, model, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_killed_runs_resume_to_bitwise_identical_weights(workspace, reference, capsys):
    """One run interrupted four times, each resume picking up the last: each interruption is
    exact, or the final weights and the per-step losses could not match."""
    folder, data, model = workspace
    out = folder / "killed"
    command = train_command(data, model, out)

    # 1. SIGKILL inside step 7 (after backward, before the update): resumes from step 6
    result = run(command, "kill-at=step:7")
    assert_killed_unfinished(out, result, capsys)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000004", "step-0000006"]

    # the same command without --resume refuses instead of overwriting, and names --resume
    assert main(command[3:]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "unfinished run (last checkpoint: step 6)" in error and "--resume" in error

    # 2. SIGKILL halfway through writing the step-12 checkpoint: the partial folder is ignored
    result = run(command + ["--resume"], "kill-at=checkpoint-write:12")
    assert_killed_unfinished(out, result, capsys)
    assert list(out.glob("checkpoints/.tmp-step-0000012-*/model.safetensors")), "the kill did not land inside the write"
    assert list_checkpoints(out / "checkpoints")[-1].name == "step-0000008"

    # 3. SIGTERM from outside while step 14 runs: the step finishes and is checkpointed
    code, stderr = run_with_signal(command + ["--resume"], "step:14", signal.SIGTERM)
    assert code == 130 and "Stopped by SIGTERM at step 14/18" in stderr and "Traceback" not in stderr
    assert list_checkpoints(out / "checkpoints")[-1].name == "step-0000014"

    # 4. SIGKILL during the validation pass after step 18 (the last): resumes from step 16
    result = run(command + ["--resume"], "kill-at=evaluate:18")
    assert_killed_unfinished(out, result, capsys)
    assert list_checkpoints(out / "checkpoints")[-1].name == "step-0000016"

    # 5. resumed to the end
    result = run(command + ["--resume"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "run.json").read_text())["status"] == "done"

    assert_same_weights(reference, out)
    expected, got = (json.loads((p / "metrics.json").read_text()) for p in (reference, out))
    assert got["curves"]["losses"] == expected["curves"]["losses"] and len(got["curves"]["losses"]) == 18  # every step's loss, too
    assert not list(out.glob("checkpoints/.tmp-*"))  # leftovers of the killed write were cleared
    assert json.loads((out / "metrics.json").read_text())["validation"] == json.loads((reference / "metrics.json").read_text())["validation"]


def test_sigint_finishes_the_step_and_writes_a_checkpoint(workspace, capsys):
    folder, data, model = workspace
    out = folder / "interrupted"
    code, stderr = run_with_signal(train_command(data, model, out), "step:3", signal.SIGINT)  # arrives while step 3 runs
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    message = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(message) == 1 and "Stopped by SIGINT at step 3/18" in message[0] and "--resume" in message[0]
    # step 3 was finished and checkpointed, not thrown away
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-0000003"]
    assert last_state(out)["step"] == 3 and len(last_state(out)["losses"]) == 3
    assert json.loads((out / "run.json").read_text())["status"] == "running"
    assert main(["predict", str(out), "a lovely film"]) == 2


def test_a_run_killed_during_its_refit_resumes_the_refit_to_identical_weights(workspace):
    """--refit on: 86 train / 10 validation at batch 10 make 9 steps an epoch, 18 in 2 epochs; the
    refit on all 96 makes 10 an epoch, so step 19 exists only in the refit. Killed there, the
    resume skips the finished selection phase (selection.json) and continues the refit."""
    folder, data, model = workspace
    refit = ["--refit", "on", "--batch-size", "10", "--epochs", "2", "--precision", "bf16"]  # bf16 autocast resumes exactly too
    reference = folder / "refit-uninterrupted"
    result = run(train_command(data, model, reference, *refit))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((reference / "metrics.json").read_text())["refit"]["steps"] >= 19

    out = folder / "refit-killed"
    result = run(train_command(data, model, out, *refit), "kill-at=step:19")
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert (out / "selection.json").is_file() and list_checkpoints(out / "refit" / "checkpoints")
    result = run(train_command(data, model, out, *refit, "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    expected, got = (json.loads((p / "metrics.json").read_text()) for p in (reference, out))
    assert got["validation"] == expected["validation"] and got["refit"]["steps"] == expected["refit"]["steps"]
