"""Text classification: one text (or a text pair) -> one of N labels."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data.batching import pad_batch
from ..metrics import classification_metrics
from . import register_task

DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                  "attention_dropout", "seq_classif_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


@dataclass
class Features:
    """Token ids per example (unpadded), their lengths, optional segment ids, and label ids."""

    input_ids: list[list[int]]
    lengths: np.ndarray
    labels: np.ndarray | None
    token_type_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


@register_task("text-classification")
class TextClassification:
    pipeline_task = "text-classification"

    def __init__(self, label_names: list[str]):
        self.label_names = list(label_names)

    # -- model ------------------------------------------------------------------------------
    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=len(self.label_names),
                                 id2label=dict(enumerate(self.label_names)),
                                 label2id={n: i for i, n in enumerate(self.label_names)})
        if model_cfg.dropout is not None:
            for name in DROPOUT_FIELDS:
                if hasattr(config, name):
                    setattr(config, name, model_cfg.dropout)
        config.problem_type = "single_label_classification"
        return load_pretrained(AutoModelForSequenceClassification, source, model_cfg, config=config)

    # -- data -------------------------------------------------------------------------------
    def encode(self, tokenizer, table, max_length: int) -> Features:
        pair = table["text_pair"].tolist() if "text_pair" in table else None
        encoded = tokenizer(table["text"].tolist(), pair, truncation=True, max_length=max_length)
        ids = encoded["input_ids"]
        labels = table["label"].to_numpy(dtype=np.int64) if "label" in table else None
        types = encoded.get("token_type_ids") if pair is not None else None
        return Features(ids, np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), labels, types)

    def collate(self, features: Features, indices: list[int], pad_id: int) -> dict:
        ids, mask = pad_batch([features.input_ids[i] for i in indices], pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if features.token_type_ids is not None:
            batch["token_type_ids"], _ = pad_batch([features.token_type_ids[i] for i in indices], 0)
        if features.labels is not None:
            batch["labels"] = torch.as_tensor(features.labels[indices])
        return batch

    # -- loss and metrics -------------------------------------------------------------------
    def loss_sum(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Summed (not averaged) loss: the loop divides by the examples in the optimizer step."""
        return F.cross_entropy(logits.float(), labels, reduction="sum")

    def score(self, logits: np.ndarray, labels: np.ndarray, loss: float | None = None) -> dict:
        return classification_metrics(labels, logits.argmax(-1), self.label_names, loss)

    def decode(self, logits: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Label names and the probability of every label, per example."""
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1).numpy()
        return [self.label_names[i] for i in probs.argmax(-1)], probs
