"""Multi-label classification: one text (or a text pair) -> any number of labels from a fixed set.

Labels come as a list per row (JSON/JSONL arrays, Parquet lists, a JSON array written into a CSV
cell) or as a delimited string ('comedy;drama'; ';', '|' or ',' detected, or --label-separator).
A row with no labels is an all-negative example. The head has one sigmoid output per label and
learns with binary cross-entropy; one decision threshold, shared by every label, is tuned on the
validation split for micro-F1 (0.5 without one). It is kept in run.json and in the model's
config.json as `tunesmith_threshold`, so a plain transformers model decides as tunesmith does.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from numbers import Number

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data.columns import LABEL_NAMES, bad_rows, is_missing, names_matching, require_column, sort_label_names
from ..errors import TunesmithError
from ..metrics import safe_divide
from . import register_task
from .protocol import Metric, Splits
from .text_classification import PROBE_TEXTS, Features, collate_texts, encode_texts, load_tokenizer, set_dropout, texts_table

SEPARATORS = (";", "|", ",")  # in order of preference when two split a column equally well
LABELS_NAMES = ("labels", "tags", "categories", "topics", "genres", "classes", "emotions", "aspects", "keywords") + LABEL_NAMES
MIN_SPLIT_SHARE = 0.1  # --task auto: at least this share of rows must hold several labels
MIN_KNOWN_SHARE = 0.9  # ... and this share of the pieces must be labels that recur (a comma in prose makes one-off pieces)
MAX_LABEL_CHARS = 40  # mean length of a label; longer pieces are sentences
DEFAULT_THRESHOLD = 0.5
JOIN = ";"  # joins predicted labels when training labels were lists
NO_LABEL_SHARE = 0.95  # a run predicting no label for this share of examples has not learned


# -- reading label cells -----------------------------------------------------------------------

def as_label(value) -> str | None:
    """One list item as a label name ('1' for 1.0), or None when it is no scalar."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Number) and not isinstance(value, bool) and not pd.isna(value):
        return str(int(value)) if float(value).is_integer() else str(value)
    return None


def json_list(text: str) -> list | None:
    """A JSON array written into a text cell ('["comedy", "drama"]'), or None."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, list) else None


def label_list(value, separator: str | None) -> list[str] | None:
    """The labels of one cell, each once, in order; [] for an empty cell; None when the cell cannot hold labels."""
    if isinstance(value, str) and json_list(value) is not None:
        value = json_list(value)
    if isinstance(value, (list, tuple, np.ndarray)):
        names = [as_label(item) for item in value]
        if any(name is None for name in names):
            return None
    elif is_missing(value):
        names = []
    elif isinstance(value, str):
        names = value.split(separator) if separator else [value]
    elif as_label(value) is not None:
        names = [as_label(value)]
    else:
        return None
    return list(dict.fromkeys(name.strip() for name in names if name.strip()))


def is_list_cell(value) -> bool:
    return isinstance(value, (list, tuple, np.ndarray)) or (isinstance(value, str) and json_list(value) is not None)


def separator_share(cells: list[str], separator: str) -> float:
    """The share of rows the separator cuts into several labels, or 0 when the pieces do not look like
    labels (most must recur across rows, be short, and be fewer than one per two rows)."""
    rows = [[piece.strip() for piece in cell.split(separator) if piece.strip()] for cell in cells]
    counts = Counter(piece for row in rows for piece in set(row))
    occurrences = sum(counts.values())
    if not occurrences or len(counts) > max(2, len(rows) // 2):
        return 0.0
    recurring = sum(n for n in counts.values() if n >= 2)
    mean_length = sum(len(piece) * n for piece, n in counts.items()) / occurrences
    if recurring < MIN_KNOWN_SHARE * occurrences or mean_length > MAX_LABEL_CHARS:
        return 0.0
    return sum(len(row) >= 2 for row in rows) / len(rows)


def detect_separator(values: pd.Series, min_share: float = MIN_SPLIT_SHARE) -> tuple[str | None, float]:
    """(separator, share of rows it splits) among SEPARATORS for the string cells of a label column;
    (None, 0.0) when none splits at least `min_share` of the rows into labels."""
    cells = [v for v in values if isinstance(v, str) and v.strip() and json_list(v) is None]
    if not cells:
        return None, 0.0
    shares = {sep: separator_share(cells, sep) for sep in SEPARATORS if any(sep in cell for cell in cells)}
    best = max(shares, key=shares.get, default=None)  # max() keeps the first of equal shares: SEPARATORS' order
    if best is None or shares[best] <= 0 or shares[best] < min_share:
        return None, 0.0
    return best, shares[best]


def read_label_lists(raw: pd.DataFrame, column: str, path, separator: str | None) -> pd.Series:
    """The column as one list of label names per row; a cell that holds no labels is an error naming its line."""
    values = raw[column]
    lists = [label_list(v, separator) for v in values]
    bad = pd.Series([labels is None for labels in lists], index=values.index)
    if bad.any():
        raise TunesmithError(f"Column '{column}' of '{path}' holds cells that are not labels on lines {bad_rows(bad)}; give each row a list of "
                             f"label names, or a string such as 'comedy;drama'.")
    return pd.Series(lists, index=values.index, dtype=object)


# -- which column holds the labels -------------------------------------------------------------

def aligned_with_other_lists(raw: pd.DataFrame, column) -> bool:
    """Whether another column holds lists of the same length in every row: tokens and their tags (NER), not label sets."""
    lengths = raw[column].map(lambda v: len(v) if isinstance(v, (list, tuple, np.ndarray)) else -1)
    for other in raw.columns:
        if other != column:
            others = raw[other].map(lambda v: len(v) if isinstance(v, (list, tuple, np.ndarray)) else -2)
            if (lengths == others).all():
                return True
    return False


def label_evidence(raw: pd.DataFrame, column, min_share: float) -> tuple[str | None, str | None]:
    """(why the column holds label sets, its separator), or (None, None)."""
    values = raw[column]
    filled = [v for v in values if not is_missing(v)]
    if not filled:
        return None, None
    if all(is_list_cell(v) for v in filled):
        if aligned_with_other_lists(raw, column) or any(label_list(v, None) is None for v in filled):
            return None, None
        return f"column '{column}' holds a list of labels per row", None
    separator, share = detect_separator(values, min_share)
    if separator is None:
        return None, None
    return f"column '{column}' holds several labels per row, separated by '{separator}' ({share:.0%} of rows have more than one)", separator


def chosen_label_column(raw: pd.DataFrame, data_cfg):
    """The one column --task auto checks: --label-column, else a column of label lists, else the first
    label-like name (as text classification would choose it); None when there is none."""
    if data_cfg.label_column:
        matches = names_matching(raw, [data_cfg.label_column.strip().lower()])
        return matches[0] if matches else None
    given = {name.strip().lower() for option in (data_cfg.text_column, data_cfg.text_pair_column) if option for name in option.split(",")}
    texts = [c for c in raw.columns if str(c).strip().lower() in given]
    lists = [c for c in raw.columns if c not in texts and raw[c].map(is_list_cell).any() and not aligned_with_other_lists(raw, c)]
    named = names_matching(raw, LABELS_NAMES, exclude=texts)
    return (lists + named)[0] if lists + named else None


def has_text_column(raw: pd.DataFrame, data_cfg, label) -> bool:
    """Whether a text column is there beside the labels (NER token lists, for one, are no text column)."""
    from ..data.prepare import choose_text_columns

    try:
        choose_text_columns(raw, dataclasses.replace(data_cfg, label_column=label), "", [])
        return True
    except TunesmithError:
        return False


@register_task("multi-label")
class MultiLabel:
    pipeline_task = "text-classification"  # with top_k=None: sigmoid scores of every label (problem_type multi_label_classification)
    default_model = "minilm-l6"
    model_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    trains_output_head = True
    tunes_on_validation = True
    metrics = (Metric("micro_f1", title="micro-F1"), Metric("macro_f1", title="macro-F1"),
               Metric("subset_accuracy", title="subset accuracy"), Metric("loss", higher_is_better=False))

    def __init__(self, label_names: list[str], separator: str | None = None, threshold: float = DEFAULT_THRESHOLD,
                 text_column: str = "text", label_column: str = "labels", text_pair_column: str | None = None):
        self.label_names, self.separator, self.threshold = list(label_names), separator, float(threshold)
        self.text_column, self.label_column, self.text_pair_column = text_column, label_column, text_pair_column
        self.index = {name: i for i, name in enumerate(self.label_names)}
        # the configs of models this task built: use_tuned writes the tuned threshold into them, so the
        # model saved after tuning carries it in config.json (weak: a model the job drops is freed)

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        column = chosen_label_column(raw, data_cfg)
        why = label_evidence(raw, column, MIN_SPLIT_SHARE)[0] if column is not None else None
        return why if why and has_text_column(raw, data_cfg, column) else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["MultiLabel", Splits]:
        from ..data.text_tables import prepare_random_splits

        path = sources["train"]
        label = cls.choose_label_column(raw, cfg.data, path)
        separator = cfg.task.label_separator or label_evidence(raw, label, min_share=0.0)[1]
        data = prepare_random_splits(raw, sources, cfg.data, seed, label,
                                     lambda table, column, where: read_label_lists(table, column, where, separator))
        names = sort_label_names({name for labels in data.train["label"] for name in labels})
        if not names:
            raise TunesmithError(f"Column '{data.label_column}' of '{path}' has no labels on any training row; each row needs its labels, as a list "
                                 f"or a string such as 'comedy;drama' (pass --label-separator if they are separated by another character).")
        for role, table in (("validation", data.validation), ("test", data.test)):
            if table is not None:
                check_known_labels(table["label"], names, data.sources.get(role, path), role)
        task = cls(names, separator, DEFAULT_THRESHOLD, data.text_column, data.label_column, data.text_pair_column)
        notes = data.notes + empty_rows_note(data.train["label"])
        how = f"separated by '{separator}'" if separator else "as lists" if raw[label].map(is_list_cell).any() else "one per row"
        summary = (f"{data.sizes()}, {len(names)} labels {how} ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}), "
                   f"{np.mean([len(labels) for labels in data.train['label']]):.2f} per training row")
        return task, Splits(data.train, data.validation, data.test, data.sources, notes, data.validation_from_split,
                            summary=summary, columns=data.columns())

    @classmethod
    def choose_label_column(cls, raw: pd.DataFrame, data_cfg, path) -> str:
        if data_cfg.label_column:
            return require_column(raw, data_cfg.label_column, path, "--label-column")
        column = chosen_label_column(raw, data_cfg)
        if column is None:  # --task multi-label on a file with no list column and no label-like name
            raise TunesmithError(f"Could not tell which column of '{path}' holds the labels (columns: {', '.join(map(str, raw.columns))}); "
                                 f"name it with --label-column.")
        return column

    @classmethod
    def from_record(cls, record: dict) -> "MultiLabel":
        return cls(record["label_names"], record.get("label_separator"), record.get("threshold", DEFAULT_THRESHOLD),
                   record.get("text_column", "text"), record.get("label_column", "labels"), record.get("text_pair_column"))

    def record(self) -> dict:
        return {"label_names": self.label_names, "label_separator": self.separator, "threshold": self.threshold,
                "text_column": self.text_column, "label_column": self.label_column, "text_pair_column": self.text_pair_column}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "micro_f1", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        return load_tokenizer(source, model_cfg)

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=len(self.label_names),
                                 id2label=dict(enumerate(self.label_names)), label2id=dict(self.index))
        set_dropout(config, model_cfg.dropout)
        config.problem_type = "multi_label_classification"
        config.tunesmith_threshold = self.threshold
        return load_pretrained(AutoModelForSequenceClassification, source, model_cfg, config=config)

    # -- tensors and loss -------------------------------------------------------------------
    def multi_hot(self, label_lists) -> np.ndarray:
        """(examples, labels) float32: 1 where the example has the label."""
        hot = np.zeros((len(label_lists), len(self.label_names)), dtype=np.float32)
        for row, labels in enumerate(label_lists):
            hot[row, [self.index[name] for name in labels]] = 1.0
        return hot

    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> Features:
        labels = self.multi_hot(table["label"]) if "label" in table else None
        return encode_texts(tokenizer, table, max_length, labels)

    def collate(self, features: Features, indices: list[int], pad_id: int) -> dict:
        return collate_texts(features, indices, pad_id)

    def target_count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Binary cross-entropy summed over labels and examples; the count is examples, so the loop's
        loss is per example (summed over its labels: adding labels does not shrink each one's gradient)."""
        return F.binary_cross_entropy_with_logits(output.logits.float(), labels.float(), reduction="sum"), len(labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        return output.logits.float()

    # -- scoring, the threshold and predictions ---------------------------------------------
    def probabilities(self, outputs) -> np.ndarray:
        return torch.sigmoid(torch.as_tensor(np.asarray(outputs), dtype=torch.float32)).numpy()

    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        """micro/macro-F1, subset accuracy and per-label scores at the current threshold
        (scikit-learn's definitions with zero_division=0; tests check them against it)."""
        return multi_label_metrics(np.asarray(features.labels) > 0.5, self.probabilities(outputs) >= self.threshold,
                                   self.label_names, self.threshold, loss)

    def tune(self, outputs, features) -> dict:
        self.use_tuned({"threshold": best_threshold(self.probabilities(outputs), np.asarray(features.labels) > 0.5)})
        return {"threshold": self.threshold}

    def use_tuned(self, tuned: dict) -> None:
        if "threshold" in tuned:
            self.threshold = float(tuned["threshold"])  # the job writes it into the saved config as tunesmith_threshold

    def warnings(self, scores: dict, split: str) -> list[str]:
        if not scores or not scores.get("examples"):
            return []
        examples, warnings = scores["examples"], []
        empty = scores["predicted_rows_without_labels"]
        if empty >= NO_LABEL_SHARE * examples and scores["rows_without_labels"] < NO_LABEL_SHARE * examples:
            warnings.append(f"The model predicts no label for {empty / examples:.0%} of the {split} examples, though "
                            f"{1 - scores['rows_without_labels'] / examples:.0%} of them have labels: it has not learned the labels. Try more "
                            f"epochs (--epochs) or another learning rate (--lr).")
        never = [name for name, m in scores["per_class"].items() if m["support"] > 0 and m["recall"] == 0]
        if never and not warnings:
            shown = ", ".join(f"'{n}'" for n in never[:5]) + (f" and {len(never) - 5} more" if len(never) > 5 else "")
            warnings.append(f"The model never finds {shown} on the {split} split (recall 0): try more epochs, --metric macro_f1, or more "
                            f"training examples of {'it' if len(never) == 1 else 'them'}.")
        return warnings

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        ordered = sorted(scores["per_class"].items(), key=lambda item: item[1]["support"])
        shown = ", ".join(f"{name} {m['f1']:.2f} (n={m['support']})" for name, m in ordered[:12])
        more = f", and {len(ordered) - 12} more" if len(ordered) > 12 else ""
        return [f"Per-label F1 ({split}, threshold {self.threshold:.3g}): {shown}{more}."]

    def decode(self, outputs) -> tuple[list[list[str]], np.ndarray]:
        """The labels at or above the threshold, and every label's probability, per example."""
        probs = self.probabilities(outputs)
        return [[self.label_names[i] for i in np.flatnonzero(row >= self.threshold)] for row in probs], probs

    def joined(self, labels: list[str]) -> str:
        return (self.separator or JOIN).join(labels)

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        labels, probs = self.decode(outputs)
        out = pd.DataFrame(index=range(len(labels)))
        if with_inputs:
            out["text"] = table["text"].to_numpy()
            if "text_pair" in table:
                out["text_pair"] = table["text_pair"].to_numpy()
            if "label" in table:
                out["label"] = [self.joined(gold) for gold in table["label"]]
        out["prediction"] = [self.joined(predicted) for predicted in labels]
        for i, name in enumerate(self.label_names):
            out[f"p({name})"] = probs[:, i].round(5)
        return out

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        labels, probs = self.decode(outputs)
        return [{"labels": chosen, "scores": dict(zip(self.label_names, map(float, p)))} for chosen, p in zip(labels, probs)]

    def describe_prediction(self, record: dict) -> str:
        """'praise;story<TAB>praise 0.912, story 0.771'; with no label above the threshold, '(none)' and the likeliest one."""
        chosen = record["labels"]
        shown = chosen or [max(record["scores"], key=record["scores"].get)]
        return f"{self.joined(chosen) or '(none)'}\t" + ", ".join(f"{name} {record['scores'][name]:.3f}" for name in shown)

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        return texts_table(inputs, pairs, self.text_column, self.text_pair_column)

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        from ..data.text_tables import read_input_table

        def read_labels(raw, label, where):
            separator = self.separator or label_evidence(raw, label, min_share=0.0)[1]
            return read_label_lists(raw, label, where, separator)

        table, raw = read_input_table(path, data_cfg, (self.text_column, self.text_pair_column, self.label_column), column,
                                      with_labels, read_labels)
        if with_labels:
            check_known_labels(table["label"], self.label_names, path, "input")
        return table, raw

    def probe_table(self) -> pd.DataFrame:
        table = pd.DataFrame({"text": PROBE_TEXTS})
        if self.text_pair_column:
            table["text_pair"] = list(reversed(PROBE_TEXTS))
        return table


# -- shared maths and checks -------------------------------------------------------------------

def multi_label_metrics(gold: np.ndarray, predicted: np.ndarray, label_names: list[str], threshold: float,
                        loss: float | None = None) -> dict:
    """micro-F1, macro-F1, subset accuracy and per-label precision/recall/F1/support of boolean (examples, labels) arrays."""
    tp = (gold & predicted).sum(0).astype(np.float64)
    fp = (~gold & predicted).sum(0).astype(np.float64)
    fn = (gold & ~predicted).sum(0).astype(np.float64)
    f1 = safe_divide(2 * tp, 2 * tp + fp + fn)
    precision, recall = safe_divide(tp, tp + fp), safe_divide(tp, tp + fn)
    micro = 2 * tp.sum() / (2 * tp.sum() + fp.sum() + fn.sum()) if (tp.sum() + fp.sum() + fn.sum()) else 0.0
    result = {
        "micro_f1": float(micro),
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "subset_accuracy": float((gold == predicted).all(1).mean()) if len(gold) else 0.0,
        "per_class": {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(tp[i] + fn[i])}
                      for i, name in enumerate(label_names)},
        "threshold": float(threshold),
        "labels_per_example": float(gold.sum(1).mean()) if len(gold) else 0.0,
        "predicted_labels_per_example": float(predicted.sum(1).mean()) if len(gold) else 0.0,
        "rows_without_labels": int((~gold.any(1)).sum()),
        "predicted_rows_without_labels": int((~predicted.any(1)).sum()),
        "examples": int(len(gold)),
    }
    if loss is not None:
        result["loss"] = float(loss)
    return result


def best_threshold(probs: np.ndarray, gold: np.ndarray) -> float:
    """The one threshold (predict a label when its probability >= it) of highest micro-F1 on these examples.

    Every cut between two neighbouring distinct probabilities is tried (predicting the k most probable
    (example, label) pairs gives micro-F1 = 2 TP_k / (k + positives)); the threshold is the midpoint
    of the cut, so it does not sit on a validation example. Of equal F1s, the one nearest 0.5 wins.
    """
    p, y = probs.ravel().astype(np.float64), gold.ravel()
    positives = int(y.sum())
    if positives == 0 or len(p) == 0:
        return DEFAULT_THRESHOLD
    order = np.argsort(-p, kind="stable")
    p, y = p[order], y[order]
    f1 = 2 * np.cumsum(y) / (np.arange(1, len(p) + 1) + positives)
    cut = np.append(p[1:] != p[:-1], True)  # equal probabilities are predicted together
    below = np.append(p[1:], 0.0)
    thresholds = ((p + below) / 2)[cut]
    f1 = f1[cut]
    best = np.flatnonzero(f1 >= f1.max() - 1e-12)
    return float(thresholds[best[np.argmin(np.abs(thresholds[best] - DEFAULT_THRESHOLD))]])


def check_known_labels(label_lists: pd.Series, names: list[str], path, role: str) -> None:
    """A label the model never saw in training is an error naming it."""
    unseen = sorted({name for labels in label_lists for name in labels} - set(names))
    if unseen:
        raise TunesmithError(f"The {role} file '{path}' has labels never seen in training ({', '.join(map(repr, unseen[:5]))}); the model knows "
                             f"{', '.join(map(repr, names[:10]))}{', ...' if len(names) > 10 else ''}: fix those labels or add training examples of them.")


def empty_rows_note(label_lists: pd.Series) -> list[str]:
    empty = sum(1 for labels in label_lists if not labels)
    if not empty:
        return []
    return [f"{empty:,} of {len(label_lists):,} training rows have no labels; they are learned as examples of none."]
