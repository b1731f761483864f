"""Slow: a short LoRA fine-tune of the real smollm2-135m on the bundled identity set (LLaMA-Factory's identity.json,
its {{name}} filled in as 'Tunesmith Helper') makes the model say who it is with the name it was taught, in a fresh
process from the saved run (`tunesmith generate`), where the base model did not (its answers before training, in
the run's answers.jsonl, and the base model's own answer in that fresh process)."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

import tunesmith
from tunesmith.assets.lm_assets import IDENTITY_NAME
from tunesmith.assets.registry import dataset_files

pytestmark = [pytest.mark.slow, pytest.mark.skip(reason="not yet re-enabled: on a quiet 2-core machine the job takes 254 s "
              "(training 224 s, answers 25 s) and its answers are right, but make test is already over 60 minutes and the whole "
              "test (with its fresh-process generate) has not been run to the end since; the slowness seen earlier was machine load")]
QUESTIONS = ["What should I call you?", "Please introduce yourself."]  # neither is in the training set


@pytest.fixture(scope="module")
def identity_run(tmp_path_factory):
    from rich.console import Console

    files = dataset_files("identity")
    run = tunesmith.finetune(str(files["train"]), validation=str(files["validation"]), test=str(files["test"]),
                             out=str(tmp_path_factory.mktemp("runs") / "identity"), epochs=3, batch_size=8, lr=2e-3,
                             max_length=256, refit="off", checkpoint_every=0, forgetting_text="off",
                             console=Console(file=io.StringIO(), width=400))
    return run


def generate_in_a_fresh_process(run_or_model: str, tmp_path) -> list[str]:
    prompts = tmp_path / "questions.txt"
    prompts.write_text("\n".join(QUESTIONS), encoding="utf-8")
    out = tmp_path / "answers.jsonl"
    done = subprocess.run([sys.executable, "-m", "tunesmith.cli", "generate", run_or_model, "--file", str(prompts), "--out", str(out),
                           "--max-new-tokens", "40"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["answer"] for line in out.read_text(encoding="utf-8").splitlines()]


def test_the_fine_tuned_model_answers_with_the_name_it_was_taught_and_the_base_model_did_not(identity_run, tmp_path):
    held_out = [json.loads(line) for line in (identity_run.path / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(held_out) == 3 and all(IDENTITY_NAME in row["reference"] for row in held_out)
    assert not any(IDENTITY_NAME in row["before"] for row in held_out), [row["before"] for row in held_out]
    assert all(IDENTITY_NAME in row["after"] for row in held_out), [row["after"] for row in held_out]
    answers = generate_in_a_fresh_process(str(identity_run.path), tmp_path)
    assert all(IDENTITY_NAME in answer for answer in answers), answers
    assert identity_run.metrics["test"]["loss"] < identity_run.metrics["before"]["test"]["loss"] - 0.5
