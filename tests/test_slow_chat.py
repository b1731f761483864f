"""Slow: LoRA instruction tuning of the real smollm2-135m (SmolLM2-135M-Instruct) on the bundled alpaca-demo
(LLaMA-Factory's Alpaca sample): the held-out loss falls below the base model's, and the perplexity on a
general text the run never saw (Botchan's held-out chapter) is measured before and after.

Held-out sets are the first 30 conversations of alpaca-demo's own validation and test files, to keep the
scoring passes short on 2 cores.
"""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

import tunesmith
from tunesmith.assets.registry import dataset_files

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    from rich.console import Console

    folder = tmp_path_factory.mktemp("alpaca")
    files = dataset_files("alpaca-demo")
    for role in ("validation", "test"):
        rows = pd.read_json(files[role]).head(30)
        (folder / f"{role}.json").write_text(json.dumps(rows.to_dict("records"), ensure_ascii=False), encoding="utf-8")
    printed = io.StringIO()
    run = tunesmith.finetune(str(files["train"]), validation=str(folder / "validation.json"), test=str(folder / "test.json"),
                             out=str(tmp_path_factory.mktemp("runs") / "helper"), max_train_examples=128, epochs=1, batch_size=16,
                             max_length=512, refit="off", checkpoint_every=0, answer_prompts=0,  # answers: tests/test_generate_chat.py
                             console=Console(file=printed, width=400))
    return run, printed.getvalue()


def test_lora_on_alpaca_lowers_the_held_out_loss_of_the_real_model(chat_run):
    run, printed = chat_run
    assert run.record["task"] == "chat" and run.record["method"] == "lora" and run.record["base_model"] == "smollm2-135m"
    before, after = run.metrics["before"]["test"], run.metrics["test"]
    assert after["examples"] == 30 and after["target_tokens"] == before["target_tokens"] > 1000
    assert after["loss"] < before["loss"] - 0.02, (before["loss"], after["loss"])
    forgot = run.metrics["forgetting"]
    assert forgot["tokens"] > 5000 and forgot["perplexity_before"] > 1
    assert abs(forgot["change_percent"]) < 50  # a light LoRA pass changes the general text's perplexity little
    assert "Before fine-tuning, test: loss" in printed and "Forgetting: perplexity on general-text" in printed
