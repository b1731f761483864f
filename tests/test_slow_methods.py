"""Issue 3, point 7: the methods' quality on the real embedded model (minilm-l6) and real data
(rotten-tomatoes, the fixed 1,000 validation / 2,000 test split).

All runs share one reduced but real setting (3,000 training examples, 2 epochs) so that the slow
suite stays short on 2 cores; each method trains at its own default learning rate (adapters and
probes train few weights from small initial values and want a far higher rate than a full
fine-tune), so these tests also check those defaults.
The `full` run is shared by the tests through a module-scoped fixture.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import tunesmith

SETTING = {"max_train_examples": 3000, "epochs": 2}


def finetune(method: str, folder):
    return tunesmith.finetune("rotten-tomatoes", out=str(folder / method), method=method, **SETTING)


def accuracy_of(run) -> float:
    return run.metrics["test"]["accuracy"]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return finetune("full", tmp_path_factory.mktemp("slow-methods"))


@pytest.mark.slow
def test_lora_is_within_two_points_of_full_and_merges_exactly(full_run, tmp_path):
    lora = finetune("lora", tmp_path)
    print(f"\nfull {accuracy_of(full_run):.4f}, lora {accuracy_of(lora):.4f}")
    assert accuracy_of(lora) >= accuracy_of(full_run) - 0.02, (accuracy_of(lora), accuracy_of(full_run))
    # the adapter alone is saved, and it is small next to the model
    adapter_bytes = (lora.path / "adapter_model.safetensors").stat().st_size
    assert not (lora.path / "model.safetensors").exists()
    assert adapter_bytes < 0.1 * (full_run.path / "model.safetensors").stat().st_size
    # merged into a plain model, it gives the adapter model's outputs on real text
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    lora.export(tmp_path / "merged", merge=True)
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    texts = pd.read_csv(lora.path / "test_predictions.csv")["text"].head(64).tolist()
    batch = AutoTokenizer.from_pretrained(tmp_path / "merged")(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        merged_logits = plain(**batch).logits.numpy()
    adapter = tunesmith.load(lora.path, precision="fp32")  # the plain model above ran in float32 too
    np.testing.assert_allclose(merged_logits, adapter._outputs(pd.DataFrame({"text": texts}))[0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_head_only_is_clearly_above_chance_and_below_full(full_run, tmp_path):
    head = finetune("head", tmp_path)
    print(f"\nfull {accuracy_of(full_run):.4f}, head {accuracy_of(head):.4f}")
    assert 0.6 < accuracy_of(head) < accuracy_of(full_run), (accuracy_of(head), accuracy_of(full_run))
    assert head.metrics["parameters"]["trainable"] < 0.01 * head.metrics["parameters"]["total"]
