"""Adapter run folders (lora, dora, ia3) load directly in plain transformers and peft, with their
labels: pipeline(...), AutoModelFor... and AutoPeftModelFor... give tunesmith's own answers
(issue 16, point 6). Before, a 5-label LoRA run fell back to a bare encoder with 2 labels."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import tunesmith
from conftest import toy_reviews

LABELS = ("a", "b", "c", "d", "e")
TEXTS = ["a great film", "the plot was dull", "lovely warm and funny", "awful and flat"]


@pytest.fixture(scope="module")
def five_label_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("five") / "five.csv"
    toy_reviews(200, labels=LABELS).to_csv(path, index=False)
    return path


@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_an_adapter_run_folder_loads_with_its_labels_in_transformers_and_peft(tmp_path, five_label_file, tiny_options, method):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run = tunesmith.finetune(str(five_label_file), out=str(tmp_path / "run"), method=method, **dict(tiny_options, epochs=2))
    assert (run.path / "adapter_config.json").is_file() and not (run.path / "model.safetensors").exists()
    ours = run.predict(TEXTS)
    found = pipeline("text-classification", model=str(run.path), top_k=None)(TEXTS)
    for mine, theirs in zip(ours, found):
        scores = {item["label"]: item["score"] for item in theirs}
        assert set(scores) == set(LABELS)
        np.testing.assert_allclose([scores[n] for n in LABELS], [mine["scores"][n] for n in LABELS], atol=1e-4)  # DoRA: see below
    batch = AutoTokenizer.from_pretrained(run.path)(TEXTS, padding=True, return_tensors="pt")
    expected = run._outputs(pd.DataFrame({"text": TEXTS}))[0]
    # peft's loader rebuilds what tunesmith saved exactly; transformers' own PEFT integration differs by
    # ~1e-4 in the logits under DoRA (it loads the magnitude vector its own way), exactly for LoRA and IA3
    for loader, atol in ((AutoPeftModelForSequenceClassification, 1e-6), (AutoModelForSequenceClassification, 1e-3 if method == "dora" else 1e-6)):
        model = loader.from_pretrained(str(run.path)).eval()
        assert model.config.num_labels == 5 and model.config.id2label[4] == "e"
        with torch.inference_mode():
            np.testing.assert_allclose(model(**batch).logits.numpy(), expected, atol=atol)


def test_an_exported_adapter_loads_without_the_run_folder(tmp_path, five_label_file, tiny_options):
    import shutil

    from transformers import pipeline

    run = tunesmith.finetune(str(five_label_file), out=str(tmp_path / "run"), method="lora", **dict(tiny_options, epochs=2))
    ours = [p["label"] for p in run.predict(TEXTS)]
    run.export(tmp_path / "exported")
    shutil.rmtree(run.path)
    config = json.loads((tmp_path / "exported" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((tmp_path / "exported" / "base").resolve())
    assert [p["label"] for p in pipeline("text-classification", model=str(tmp_path / "exported"))(TEXTS)] == ours
