"""Text classification: one text (or a text pair) -> one of N labels. The fallback of --task auto."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data.batching import pad_batch
from ..errors import TunesmithError
from ..metrics import classification_metrics
from . import register_task
from .protocol import Metric, Splits

DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout", "dropout",
                  "attention_dropout", "seq_classif_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop",
                  "classifier_dropout_prob")  # the last: ALBERT, and image models (MobileNetV2, ...)
PROBE_TEXTS = ["a warm, funny and moving film", "the plot was dull and the acting flat", "an ordinary movie, neither good nor bad"]


@dataclass
class Features:
    """Token ids per example (unpadded), their lengths, optional segment ids, and label ids."""

    input_ids: list[list[int]]
    lengths: np.ndarray
    labels: np.ndarray | None
    token_type_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def texts_table(inputs, pairs, text_column: str, pair_column: str | None) -> pd.DataFrame:
    """The `text` (and `text_pair`) table of what a caller passes to predict: one text or a list,
    with the second texts of a pair run in `pairs`, one per text."""
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    table = pd.DataFrame({"text": [str(t) for t in texts]})
    if pair_column and pairs is None:
        raise TunesmithError(f"This run reads text pairs ('{text_column}' with '{pair_column}'); give each text its second text "
                             f"(pairs=[...] in Python, --pair TEXT once per text on the command line).")
    if pairs is not None and not pair_column:
        raise TunesmithError(f"This run reads one text ('{text_column}'), not pairs; drop the second texts.")
    if pairs is not None:
        seconds = [pairs] if isinstance(pairs, str) else list(pairs)
        if len(seconds) != len(texts):
            raise TunesmithError(f"{len(texts)} texts but {len(seconds)} second texts; give one second text per text.")
        table["text_pair"] = [str(t) for t in seconds]
    return table


def load_tokenizer(source: str, model_cfg):
    """The text tasks' preprocessor: the model's tokenizer, loaded with the safety settings of its weights."""
    from transformers import AutoTokenizer

    return load_pretrained(AutoTokenizer, source, model_cfg)


def set_dropout(config, dropout: float | None) -> None:
    """--dropout: every dropout rate the architecture's config names (the base model's own when None)."""
    if dropout is not None:
        for name in DROPOUT_FIELDS:
            if hasattr(config, name):
                setattr(config, name, dropout)


def encode_texts(tokenizer, table: pd.DataFrame, max_length: int, labels) -> Features:
    """Token ids of the `text` column (and `text_pair`, encoded as a pair), truncated to max_length."""
    pair = table["text_pair"].tolist() if "text_pair" in table else None
    encoded = tokenizer(table["text"].tolist(), pair, truncation=True, max_length=max_length)
    ids = encoded["input_ids"]
    types = encoded.get("token_type_ids") if pair is not None else None
    return Features(ids, np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids)), labels, types)


def collate_texts(features: Features, indices: list[int], pad_id: int) -> dict:
    ids, mask = pad_batch([features.input_ids[i] for i in indices], pad_id)
    batch = {"input_ids": ids, "attention_mask": mask}
    if features.token_type_ids is not None:
        batch["token_type_ids"], _ = pad_batch([features.token_type_ids[i] for i in indices], 0)
    if features.labels is not None:
        batch["labels"] = torch.as_tensor(features.labels[indices])
    return batch


@register_task("text-classification")
class TextClassification:
    pipeline_task = "text-classification"
    default_model = "minilm-l6"
    model_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    trains_output_head = True
    tunes_on_validation = False
    metrics = (Metric("accuracy"), Metric("macro_f1", title="macro-F1"), Metric("mcc", title="MCC"), Metric("loss", higher_is_better=False))

    def __init__(self, label_names: list[str], text_column: str = "text", label_column: str = "label",
                 text_pair_column: str | None = None, imbalance_ratio: float = 1.0):
        self.label_names = list(label_names)
        self.text_column, self.label_column, self.text_pair_column = text_column, label_column, text_pair_column
        self.imbalance_ratio = imbalance_ratio  # of the training labels; known only while training

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        return "a text column and a label column"  # any table: the columns are checked in prepare

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["TextClassification", Splits]:
        from ..data.prepare import prepare_labeled_data

        data = prepare_labeled_data(raw, sources, cfg.data, seed)
        task = cls(data.label_names, data.text_column, data.label_column, data.text_pair_column, data.imbalance_ratio)
        return task, Splits(data.train, data.validation, data.test, data.sources, data.notes, data.validation_from_split,
                            summary=data.describe(), columns=f"text column '{data.text_column}', label column '{data.label_column}'")

    @classmethod
    def from_record(cls, record: dict) -> "TextClassification":
        return cls(record["label_names"], record.get("text_column", "text"), record.get("label_column", "label"),
                   record.get("text_pair_column"))

    def record(self) -> dict:
        return {"label_names": self.label_names, "text_column": self.text_column, "label_column": self.label_column,
                "text_pair_column": self.text_pair_column}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        from ..train.plan import choose_metric

        return choose_metric(self.imbalance_ratio)

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        return load_tokenizer(source, model_cfg)

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=len(self.label_names),
                                 id2label=dict(enumerate(self.label_names)),
                                 label2id={n: i for i, n in enumerate(self.label_names)})
        set_dropout(config, model_cfg.dropout)
        config.problem_type = "single_label_classification"
        return load_pretrained(AutoModelForSequenceClassification, source, model_cfg, config=config)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> Features:
        labels = table["label"].to_numpy(dtype=np.int64) if "label" in table else None
        return encode_texts(tokenizer, table, max_length, labels)

    def collate(self, features: Features, indices: list[int], pad_id: int) -> dict:
        return collate_texts(features, indices, pad_id)

    def target_count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed (not averaged) cross-entropy: the loop divides by the examples in the optimizer step."""
        return F.cross_entropy(output.logits.float(), labels, reduction="sum"), len(labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        return output.logits.float()

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        return classification_metrics(features.labels, outputs.argmax(-1), self.label_names, loss)

    def tune(self, outputs, features) -> dict:
        return {}  # the arg-max label: nothing to tune

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        from ..diagnostics import prediction_warnings

        return prediction_warnings(scores, split)

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        from ..diagnostics import per_class_recall
        from ..train.plan import IMBALANCE_RATIO

        return [f"Per-label recall ({split}): {per_class_recall(scores)}."] if self.imbalance_ratio >= IMBALANCE_RATIO else []

    def decode(self, logits: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Label names and the probability of every label, per example."""
        probs = torch.softmax(torch.as_tensor(logits, dtype=torch.float32), -1).numpy()
        return [self.label_names[i] for i in probs.argmax(-1)], probs

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        labels, probs = self.decode(outputs)
        out = pd.DataFrame(index=range(len(labels)))
        if with_inputs:
            out["text"] = table["text"].to_numpy()
            if "text_pair" in table:
                out["text_pair"] = table["text_pair"].to_numpy()
            if "label" in table:
                out["label"] = [self.label_names[i] for i in table["label"]]
        out["prediction"] = labels
        out["confidence"] = probs.max(-1).round(5)
        for i, name in enumerate(self.label_names):
            out[f"p({name})"] = probs[:, i].round(5)
        return out

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        labels, probs = self.decode(outputs)
        return [{"label": label, "score": float(p.max()), "scores": dict(zip(self.label_names, map(float, p)))}
                for label, p in zip(labels, probs)]

    def describe_prediction(self, record: dict) -> str:
        return f"{record['label']}\t{record['score']:.3f}"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        return texts_table(inputs, pairs, self.text_column, self.text_pair_column)

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        from ..data.columns import clean_labels, clean_text, input_columns, match_training_spellings
        from ..data.sources import read_data_file

        raw = read_data_file(path, data_cfg.encoding, role="input")
        text, pair, label = input_columns(raw, path, self.text_column, self.text_pair_column, self.label_column, column,
                                          data_cfg.label_column, with_labels)
        table = pd.DataFrame({"text": clean_text(raw, text, path)})
        if pair:
            table["text_pair"] = clean_text(raw, pair, path)
        if with_labels:
            names = clean_labels(raw, label, path, keep_spelling=data_cfg.keep_label_spelling)
            if not data_cfg.keep_label_spelling:
                names = match_training_spellings(names, self.label_names)
            unseen = sorted(set(names) - set(self.label_names))
            if unseen:
                raise TunesmithError(f"'{path}' has labels this model never saw in training ({', '.join(map(repr, unseen[:5]))}); "
                                     f"it knows {', '.join(map(repr, self.label_names[:10]))}.")
            table["label"] = names.map({n: i for i, n in enumerate(self.label_names)}).astype("int64")
        return table, raw

    def probe_table(self) -> pd.DataFrame:
        table = pd.DataFrame({"text": PROBE_TEXTS})
        if self.text_pair_column:
            table["text_pair"] = list(reversed(PROBE_TEXTS))
        return table
