"""Text regression: one text (or a text pair) -> a number (a crowd score, a similarity: STS-B).

The head has one output and learns the target standardised with the training mean and standard
deviation, so the loss and the learning rate mean the same whether scores run from -4 to 4 or
from 0 to 10,000. Everything a person sees (metrics, predictions, the API) is in the original
units. The mean and deviation are stored in run.json and in the model's config.json
(`label_mean`, `label_std`), so a plain transformers model maps its raw output back:
`score = logit * label_std + label_mean` (`pipeline('text-classification', function_to_apply='none')`
returns the logit, as problem_type "regression" asks).
"""
from __future__ import annotations

from numbers import Number

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data.columns import LABEL_NAMES, bad_rows, is_missing, names_matching
from ..errors import TunesmithError
from . import register_task
from .protocol import Metric, Splits
from .text_classification import PROBE_TEXTS, Features, collate_texts, encode_texts, load_tokenizer, set_dropout, texts_table

SCORE_NAMES = LABEL_NAMES + ("score", "scores", "value", "similarity", "relatedness")
MIN_DISTINCT_SCORES = 20  # fewer distinct values are more likely classes (ratings 1-5), which text classification learns
NEAR_CONSTANT = 0.1  # predictions whose spread is below this share of the labels' have not learned the scores
WEAK_CORRELATION = 0.1


# -- reading scores ----------------------------------------------------------------------------

def as_number(value) -> float | None:
    """The cell as a float (NaN and inf included, for the caller to refuse), or None when it is no number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, Number):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def looks_like_scores(values: pd.Series) -> int:
    """Distinct values of a column of numbers that are scores, not classes (0 when it is not one):
    every filled cell a finite number, at least MIN_DISTINCT_SCORES distinct values, some not whole."""
    parsed = [as_number(v) for v in values if not is_missing(v)]
    if not parsed or any(x is None for x in parsed):
        return 0
    values_ = np.asarray(parsed, dtype=np.float64)
    if not np.isfinite(values_).all() or np.all(values_ == np.round(values_)):
        return 0
    distinct = len(np.unique(values_))
    return distinct if distinct >= MIN_DISTINCT_SCORES else 0


def score_columns(raw: pd.DataFrame, data_cfg) -> list:
    """Columns that could hold the scores: --label-column, else the first label-like name, else every
    column of scores (the caller decides what several mean)."""
    if data_cfg.label_column:
        return names_matching(raw, [data_cfg.label_column.strip().lower()])
    given = {name.strip().lower() for option in (data_cfg.text_column, data_cfg.text_pair_column) if option for name in option.split(",")}
    texts = [c for c in raw.columns if str(c).strip().lower() in given]
    named = names_matching(raw, SCORE_NAMES, exclude=texts)
    if named:
        return named[:1]
    return [c for c in raw.columns if c not in texts and looks_like_scores(raw[c])]


def read_scores(raw: pd.DataFrame, column: str, path) -> pd.Series:
    """The column as float64; a missing, non-numeric or non-finite cell is an error naming its line."""
    values = raw[column]
    missing = values.map(is_missing)
    if missing.any():
        raise TunesmithError(f"Column '{column}' of '{path}' has no number on lines {bad_rows(missing)}; give every row a score or remove those rows.")
    parsed = [as_number(v) for v in values]
    not_number = pd.Series([x is None for x in parsed], index=values.index)
    if not_number.any():
        first = int(np.flatnonzero(not_number.to_numpy())[0])
        raise TunesmithError(f"Column '{column}' of '{path}' holds cells that are not numbers on lines {bad_rows(not_number)} (line {first + 2}: "
                             f"{values.iloc[first]!r}); a regression target must be a number in every row: fix those cells, or pass "
                             f"--task text-classification if the column holds classes.")
    scores = pd.Series(parsed, index=values.index, dtype=np.float64)
    infinite = ~np.isfinite(scores)
    if infinite.any():
        first = scores[infinite].iloc[0]
        raise TunesmithError(f"Column '{column}' of '{path}' holds {first} on lines {bad_rows(infinite)}; a regression target must be a finite number: "
                             f"fix those cells or remove those rows.")
    return scores


def correlation(kind: str, predicted: np.ndarray, labels: np.ndarray) -> float:
    """Pearson or Spearman r by scipy.stats; 0.0 where it is undefined (fewer than two values, or one side constant)."""
    if len(labels) < 2 or np.all(predicted == predicted[0]) or np.all(labels == labels[0]):
        return 0.0
    from scipy import stats

    return float((stats.pearsonr if kind == "pearson" else stats.spearmanr)(predicted, labels).statistic)


@register_task("regression")
class Regression:
    pipeline_task = "text-classification"  # with function_to_apply='none' (the default for problem_type regression)
    default_model = "minilm-l6"
    model_class = "AutoModelForSequenceClassification"
    peft_task_type = "SEQ_CLS"
    trains_output_head = True
    tunes_on_validation = False
    metrics = (Metric("pearson", title="Pearson r"), Metric("spearman", title="Spearman r"),
               Metric("rmse", higher_is_better=False, title="RMSE"), Metric("mae", higher_is_better=False, title="MAE"),
               Metric("loss", higher_is_better=False))

    def __init__(self, label_mean: float, label_std: float, text_column: str = "text", label_column: str = "score",
                 text_pair_column: str | None = None):
        self.label_mean, self.label_std = float(label_mean), float(label_std)
        self.text_column, self.label_column, self.text_pair_column = text_column, label_column, text_pair_column

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        columns = score_columns(raw, data_cfg)
        distinct = looks_like_scores(raw[columns[0]]) if len(columns) == 1 else 0
        return f"column '{columns[0]}' holds numbers with {distinct:,} distinct values, not classes" if distinct else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["Regression", Splits]:
        from ..data.text_tables import prepare_random_splits

        path = sources["train"]
        label = cfg.data.label_column or cls.choose_score_column(raw, cfg.data, path)
        data = prepare_random_splits(raw, sources, cfg.data, seed, label, read_scores)
        scores = data.train["label"].to_numpy()
        if np.all(scores == scores[0]):
            raise TunesmithError(f"Column '{data.label_column}' of '{path}' has the same value ({scores[0]:g}) on every training row; a regression "
                                 f"model needs scores that vary: check the column, or name another with --label-column.")
        task = cls(scores.mean(), scores.std(), data.text_column, data.label_column, data.text_pair_column)
        summary = (f"{data.sizes()}, scores {scores.min():.3g} to {scores.max():.3g} "
                   f"(training mean {task.label_mean:.4g}, standard deviation {task.label_std:.4g})")
        return task, Splits(data.train, data.validation, data.test, data.sources, data.notes, data.validation_from_split,
                            summary=summary, columns=data.columns())

    @classmethod
    def choose_score_column(cls, raw: pd.DataFrame, data_cfg, path) -> str:
        columns = score_columns(raw, data_cfg)
        if len(columns) == 1:
            return columns[0]
        if columns:
            raise TunesmithError(f"Several columns of '{path}' hold scores ({', '.join(map(repr, columns[:5]))}); name the one to predict with --label-column.")
        raise TunesmithError(f"Could not tell which column of '{path}' holds the numbers to predict (columns: {', '.join(map(str, raw.columns))}); "
                             f"name it with --label-column.")

    @classmethod
    def from_record(cls, record: dict) -> "Regression":
        return cls(record["label_mean"], record["label_std"], record.get("text_column", "text"), record.get("label_column", "score"),
                   record.get("text_pair_column"))

    def record(self) -> dict:
        return {"label_mean": self.label_mean, "label_std": self.label_std, "text_column": self.text_column,
                "label_column": self.label_column, "text_pair_column": self.text_pair_column}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "pearson", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        return load_tokenizer(source, model_cfg)

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForSequenceClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=1, id2label={0: self.label_column},
                                 label2id={self.label_column: 0})
        set_dropout(config, model_cfg.dropout)
        config.problem_type = "regression"
        config.label_mean, config.label_std = self.label_mean, self.label_std  # the head predicts (score - mean) / std
        return load_pretrained(AutoModelForSequenceClassification, source, model_cfg, config=config)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> Features:
        labels = table["label"].to_numpy(dtype=np.float64) if "label" in table else None  # original units
        return encode_texts(tokenizer, table, max_length, labels)

    def collate(self, features: Features, indices: list[int], pad_id: int) -> dict:
        return collate_texts(features, indices, pad_id)

    def target_count(self, labels: torch.Tensor) -> int:
        return len(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed squared error of the standardised target; the loop divides by the examples in the step."""
        target = (labels.float() - self.label_mean) / self.label_std
        return F.mse_loss(output.logits.float().view(-1), target, reduction="sum"), len(labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        """Predicted scores in the original units, one per example."""
        return output.logits.float()[:, 0] * self.label_std + self.label_mean

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        """Pearson and Spearman r, RMSE and MAE in the original units; `loss` is the standardised MSE."""
        predicted = np.asarray(outputs, dtype=np.float64)
        labels = np.asarray(features.labels, dtype=np.float64)
        errors = predicted - labels
        result = {
            "pearson": correlation("pearson", predicted, labels),
            "spearman": correlation("spearman", predicted, labels),
            "rmse": float(np.sqrt(np.mean(errors ** 2))),
            "mae": float(np.mean(np.abs(errors))),
            "mean_baseline_rmse": float(np.sqrt(np.mean((labels - self.label_mean) ** 2))),  # always predicting the training mean
            "prediction_mean": float(predicted.mean()), "prediction_std": float(predicted.std()),
            "label_mean": float(labels.mean()), "label_std": float(labels.std()),
            "examples": int(len(labels)),
        }
        if loss is not None:
            result["loss"] = float(loss)
        return result

    def tune(self, outputs, features) -> dict:
        return {}  # a score is read as it is: nothing to tune

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        if not scores or not scores.get("examples"):
            return []
        if scores["prediction_std"] < NEAR_CONSTANT * scores["label_std"]:
            return [f"The model predicts nearly the same score for every {split} example (about {scores['prediction_mean']:.3g}, spread "
                    f"{scores['prediction_std']:.3g} against {scores['label_std']:.3g} in the labels): it has not learned the scores. Try more "
                    f"epochs (--epochs), another learning rate (--lr), or check that the label column is the one you mean."]
        if abs(scores["pearson"]) < WEAK_CORRELATION:
            return [f"Pearson r on the {split} split is {scores['pearson']:.2f}: the predictions barely follow the scores. Check that the label "
                    f"column is the one you mean, then try more epochs or another --lr."]
        return []

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        return [f"RMSE ({split}): {scores['rmse']:.4g}, against {scores['mean_baseline_rmse']:.4g} for always predicting the training "
                f"mean {self.label_mean:.4g}."]

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        out = pd.DataFrame(index=range(len(outputs)))
        if with_inputs:
            out["text"] = table["text"].to_numpy()
            if "text_pair" in table:
                out["text_pair"] = table["text_pair"].to_numpy()
            if "label" in table:
                out["label"] = table["label"].to_numpy()
        out["prediction"] = np.asarray(outputs, dtype=np.float64).round(5)
        return out

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        return [{"score": float(value)} for value in outputs]

    def describe_prediction(self, record: dict) -> str:
        return f"{record['score']:.4g}"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        return texts_table(inputs, pairs, self.text_column, self.text_pair_column)

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        from ..data.text_tables import read_input_table

        return read_input_table(path, data_cfg, (self.text_column, self.text_pair_column, self.label_column), column, with_labels, read_scores)

    def probe_table(self) -> pd.DataFrame:
        table = pd.DataFrame({"text": PROBE_TEXTS})
        if self.text_pair_column:
            table["text_pair"] = list(reversed(PROBE_TEXTS))
        return table
