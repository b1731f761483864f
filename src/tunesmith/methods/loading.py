"""Load the model of a finished run folder: a plain model, or a base model plus a PEFT adapter."""
from __future__ import annotations

from pathlib import Path

from ..assets.resolve import load_pretrained, resolve_model_source


def load_run_model(run_dir: Path, record: dict, cfg):
    from transformers import AutoModelForSequenceClassification

    run_dir = Path(run_dir)
    if not (run_dir / "adapter_config.json").is_file():
        return load_pretrained(AutoModelForSequenceClassification, str(run_dir), cfg.model)
    from peft import PeftModel

    names = record["label_names"]
    base = load_pretrained(AutoModelForSequenceClassification, resolve_model_source(record["base_model"]), cfg.model,
                           num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    return PeftModel.from_pretrained(base, str(run_dir))
