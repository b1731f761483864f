"""The Task protocol: everything that differs between tasks, so that nothing else has to know.

The loop (train/fit.py), inference (train/infer.py), the job, the API, the CLI, compare and export
call only what is written here; a new task is one module in tasks/ that implements it (no base
class: each task writes its few methods out, as text_classification.py does) and registers
itself with `@register_task(name)`.

Data flows through a task in one direction:

    raw tables --prepare--> Splits (tables in the task's own columns)
               --encode---> features (len(), `lengths` in tokens: the cost unit of batching)
               --collate--> a batch of tensors; `labels` padded with -100 where per-token
               --model----> the model's output --loss--> (sum, count); --outputs--> per example
               --score----> metrics, on the raw examples (QA windows -> questions, sub-tokens -> words)
               --decode---> predictions a person reads (predictions_table, predict_records)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd
import torch


@dataclass(frozen=True)
class Metric:
    """A metric a task reports; `title` is how tables and sentences name it."""

    name: str
    higher_is_better: bool = True
    title: str = ""

    @property
    def label(self) -> str:
        return self.title or self.name


@dataclass
class Splits:
    """A task's prepared data: train/validation/test tables in the task's own columns, and what was
    decided on the way (one sentence per note, printed before training)."""

    train: pd.DataFrame
    validation: pd.DataFrame | None
    test: pd.DataFrame | None
    sources: dict = field(default_factory=dict)  # role -> file path
    notes: list[str] = field(default_factory=list)
    validation_from_split: bool = False  # held out of the training file (refit may then train on it)
    summary: str = ""  # "9,808 train / 1,000 validation / 2,000 test examples, 2 labels (...)"
    columns: str = ""  # "text column 'review', label column 'sentiment'"


@runtime_checkable
class Task(Protocol):
    # -- identity ----------------------------------------------------------------------------
    name: ClassVar[str]               # registry name, the value of --task and of run.json's "task"
    pipeline_task: ClassVar[str]      # transformers.pipeline(...) name that loads a run folder
    default_model: ClassVar[str]      # the embedded base model --model auto picks (tunesmith models)
    model_class: ClassVar[str]        # the transformers AutoModelFor... class that loads a run folder
    peft_task_type: ClassVar[str | None]  # peft.TaskType the adapter methods use ("SEQ_CLS", "TOKEN_CLS", ...); None: a plain PeftModel
    trains_output_head: ClassVar[bool]  # a new head on top of the base model, always trained (False for causal LM)
    metrics: ClassVar[tuple[Metric, ...]]  # the first is the default --metric; "loss" is lower-is-better
    tunes_on_validation: ClassVar[bool]  # a decision (a threshold) is tuned on the best weights' validation outputs
    # Optional class attributes, read with getattr and a default where a task has none:
    #   default_method ("full"), default_max_length (128 tokens), throughput_unit ("tokens"), predict_example,
    #   inference_tokens (tokens of an evaluation batch, data/batching.INFERENCE_TOKENS), micro_batch_tokens
    #   (a token budget per training micro-batch, none) -- chat sets all of them (tasks/chat.py); scores_before_training
    #   (the base model's held-out scores are measured and stored), writes_answers (held-out prompts answered before and
    #   after, answers.py), needs_base_outputs (the job stores the base model's outputs of each split as
    #   features.base_outputs before the first step: DPO's reference log-probs, tasks/preference.py)

    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        """Why this file looks like data of this task ('a list of tags per row'), or None (for --task auto)."""

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["Task", Splits]:
        """The task (with its label space) and its validated splits, from the raw training table."""

    @classmethod
    def from_record(cls, record: dict) -> "Task":
        """The task of a finished run, from its run.json."""

    def record(self) -> dict:
        """What from_record needs, written into run.json (label names, columns, thresholds)."""

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        """The selection metric for --metric auto, and why when it is not the first."""

    # -- model -------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        """What turns the task's inputs into model inputs, from a base model or a run folder: a tokenizer for
        text (AutoTokenizer), an image processor for images (AutoImageProcessor), a feature extractor for
        audio. `encode` receives it; the run folder saves it beside the model (save_pretrained)."""

    def build_model(self, source: str, model_cfg) -> torch.nn.Module:
        """The task model from a base model (training) or from a saved run folder (loading)."""

    # -- tensors -----------------------------------------------------------------------------
    def encode(self, preprocessor, table: pd.DataFrame, max_length: int):
        """Features of a split: len(), `lengths` (the cost unit per example: tokens, 1 for an image) and
        `labels` (None unlabeled). `preprocessor` is what load_preprocessor returned."""

    def collate(self, features, indices: list[int], pad_id: int) -> dict:
        """Model inputs of these examples, plus 'labels' when the features have them. `pad_id` is
        pad_id_of(preprocessor). Training steps collate with gradients enabled; evaluation and prediction
        under torch.inference_mode (so a task can tell a training view, such as an augmented image, apart)."""

    def target_count(self, labels: torch.Tensor) -> int:
        """What a loss sum covers: examples, or tokens not marked -100."""

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(summed loss, target_count): the loop divides by the whole optimizer step's count."""

    def outputs(self, output, batch: dict) -> torch.Tensor | list[np.ndarray]:
        """Per-example outputs of a batch: one (B, ...) tensor, or one array per example (ragged)."""

    # -- scoring and predictions -------------------------------------------------------------
    def score(self, outputs, features, loss: float | None = None) -> dict:
        """Every metric of `metrics` (and details such as per-class scores) on labeled features."""

    def tune(self, outputs, features) -> dict:
        """When tunes_on_validation: set the decision from validation outputs (the multi-label
        threshold, the QA null-score threshold) and return it as {name: number}, for selection.json, run.json and the printout."""

    def use_tuned(self, tuned: dict) -> None:
        """Take back what `tune` returned (a resumed refit run reads it from selection.json)."""

    def warnings(self, scores: dict, split: str) -> list[str]:
        """Sentences about results that look wrong although they ran (one class predicted, ...)."""

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        """Lines printed under the results after training (per-label recall on imbalanced data, ...)."""

    def predictions_table(self, outputs, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        """Predictions a person reads, one row per example: the inputs and gold labels (when
        with_inputs) then the predictions; `predict --file` adds the prediction columns to the file's own."""

    def predict_records(self, outputs, table: pd.DataFrame) -> list[dict]:
        """The API's predictions: one dict per example ({'label', 'score', 'scores'}, entity spans, ...)."""

    def describe_prediction(self, record: dict) -> str:
        """One predict_records item as the CLI prints it before the input ('fresh<TAB>0.973')."""

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """A table to encode from what a Python caller passes to Run.predict (texts, pairs, ...)."""

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(table in the task's columns, the file's raw rows) of a predict/eval file, its columns found
        as training found them; with_labels checks the gold labels against the run's label space."""

    def probe_table(self) -> pd.DataFrame:
        """A few inputs to check that an export (a merged adapter) predicts as the run did."""


def metric_named(task, name: str) -> Metric:
    """The task's metric of that name, or a clear error listing the ones it has."""
    from ..errors import TunesmithError, did_you_mean

    for metric in task.metrics:
        if metric.name == name:
            return metric
    names = [m.name for m in task.metrics]
    raise TunesmithError(f"--metric {name} is not a metric of the {task.name} task; choose one of {', '.join(names)}.{did_you_mean(name, names)}")


def pad_id_of(preprocessor) -> int:
    """The padding token id of a tokenizer; 0 for preprocessors that pad nothing (image processors) or have no pad token."""
    pad = getattr(preprocessor, "pad_token_id", None)
    return pad if pad is not None else 0
