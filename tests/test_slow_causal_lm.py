"""Slow: continued pre-training of the real smollm2-135m on the bundled general-text (Botchan): one LoRA pass over part
of the training chapters (I-IX) lowers the perplexity of the validation chapter (X), which the run never trains on,
below the base model's, measured by the same run before it trains.

The test chapter (XI) is the text forgetting is measured on for every task, so it is not trained on here either;
forgetting is left off to keep the scoring passes short on 2 cores (the chat slow test measures it).
"""
from __future__ import annotations

import io

import pytest

import tunesmith
import tunesmith.tasks.causal_lm  # noqa: F401  (registers the task until tasks/__init__.py imports it)
from tunesmith.assets.registry import dataset_files

pytestmark = pytest.mark.slow
# after / before perplexity of chapter X: measured 47.3 / 59.0 = 0.80 for this run (LoRA, 13,611 training tokens in 14 steps)
THRESHOLD = 0.9


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory):
    from rich.console import Console

    files = dataset_files("general-text")
    printed = io.StringIO()
    run = tunesmith.finetune(str(files["train"]), validation=str(files["validation"]), out=str(tmp_path_factory.mktemp("runs") / "botchan"),
                             max_train_examples=60, max_length=256, epochs=1, batch_size=4, early_stopping=0, refit="off",
                             checkpoint_every=0, forgetting_text="off", console=Console(file=printed, width=400))
    return run, printed.getvalue()


def test_continued_pre_training_lowers_the_held_out_perplexity_of_the_real_model(domain_run):
    run, printed = domain_run
    assert run.record["task"] == "causal-lm" and run.record["method"] == "lora" and run.record["base_model"] == "smollm2-135m"
    before, after = run.metrics["before"]["validation"], run.metrics["validation"]
    assert after["target_tokens"] == before["target_tokens"] > 5000  # chapter X, the same blocks before and after
    assert after["perplexity"] < THRESHOLD * before["perplexity"], (before["perplexity"], after["perplexity"])
    assert "Task: causal-lm (a plain-text file)" in printed and "Before fine-tuning, validation: loss" in printed


def test_the_run_scores_texts_and_the_book_reads_likelier_than_shuffled_words(domain_run):
    run, _ = domain_run
    sentence = "I went to the school in the morning, and the teachers were waiting for me in the hall."
    shuffled = "hall teachers in morning the waiting school, me the were and the for I went to in the."
    plain, scrambled = run.predict([sentence, shuffled])
    assert plain["tokens"] > 15 and plain["perplexity"] < 0.2 * scrambled["perplexity"]
