"""The Python API: finetune() trains and returns a Run; load() opens a finished run folder.

Errors raised to Python callers name keyword arguments (overwrite=True), not the CLI's flags
(--overwrite): api_message translates them at this boundary. The CLI opens runs with for_cli=True
and keeps its flags.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import torch

from .config import SECTIONS, RunConfig, base_type, fields_of
from .atomic import atomic_file
from .errors import TunesmithError
from .job import finished_record, run_training
from .rundir import RUN_LOCK
from .tasks import get_task
from .tasks.protocol import pad_id_of
from .train.infer import predict_outputs
from .train.precision import autocast_for, choose_precision


# -- errors in Python terms ------------------------------------------------------------------------

# '--flag' and the value after it, if any: 'quoted', a number, a METAVAR or a bare word
FLAG = re.compile(r"--(?P<flag>[a-z][a-z0-9-]*)(?: (?P<value>'[^']*'|-?[0-9][0-9.e+-]*|[A-Z]+\b|[a-z][a-z0-9_]*\b))?")
BACKTICKED = re.compile(r"(`[^`]*`)")


def keyword_options() -> dict[str, tuple[type, set]]:
    """Keyword name -> (its type, the bare words it takes as values): RunConfig's fields and Run.export's merge."""
    from .methods import METHODS

    options = {name: (base_type(f), set(f.metadata.get("choices") or ())) for cls in SECTIONS.values() for name, f in fields_of(cls).items()}
    return dict(options, method=(str, set(METHODS)), merge=(bool, set()))


def api_message(message: str) -> str:
    """A CLI-worded message in keyword-argument terms: '--overwrite' -> 'overwrite=True', '--lr' -> 'lr=...',
    '--text-column' -> "text_column='...'", '--batch-size 32' -> 'batch_size=32', '--method lora' ->
    "method='lora'". Flags that are no keyword argument and commands in backticks (they still work in a
    shell) stay as they are."""
    options = keyword_options()
    return "".join(part if BACKTICKED.fullmatch(part) else FLAG.sub(lambda m: as_keyword(m, options), part)
                   for part in BACKTICKED.split(message))


def as_keyword(match: re.Match, options: dict) -> str:
    name, value = match["flag"].replace("-", "_"), match["value"]
    if name not in options:
        return match[0]
    kind, words = options[name]
    placeholder = "True" if kind is bool else "'...'" if kind is str else "..."
    if value is None or value.isupper():  # no value, or a metavar such as FILE
        return f"{name}={placeholder}"
    if kind is bool or (value[0].isalpha() and value not in words):  # the word after the flag is prose
        return f"{name}={placeholder} {value}"
    as_written = value.startswith("'") or kind is not str  # 'quoted' already, or a number
    return f"{name}={value if as_written else repr(value)}"


@contextlib.contextmanager
def python_terms():
    """Re-raise a TunesmithError with its message in keyword-argument terms (also a decorator)."""
    try:
        yield
    except TunesmithError as exc:
        translated = copy.copy(exc)
        translated.args = (api_message(str(exc)),)
        raise translated.with_traceback(exc.__traceback__) from None


def keyword_errors(method):
    """A Run method whose errors are in keyword-argument terms, unless the CLI opened the run."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with contextlib.nullcontext() if self.for_cli else python_terms():
            return method(self, *args, **kwargs)

    return wrapper


# -- runs -------------------------------------------------------------------------------------------

class Run:
    """A finished fine-tune: its folder, metrics, and a model ready to predict.

    for_cli=True (the `tunesmith` command) keeps the CLI's flags in error messages."""

    def __init__(self, path: str | Path, device: str = "cpu", for_cli: bool = False, precision: str | None = None):
        self.path, self.for_cli = Path(path), for_cli
        self.precision_setting = precision  # None: the run's own --precision (auto: measured on this machine)
        self.device = torch.device(device)
        self._model = self._tokenizer = None
        self._open()

    @keyword_errors
    def _open(self) -> None:
        self.record = finished_record(self.path)  # also refuses a folder a live run is still training in
        self.config = RunConfig.from_yaml(self.path / "config.yaml")
        self.task = get_task(self.record["task"]).from_record(self.record)

    @property
    def metrics(self) -> dict:
        return json.loads((self.path / "metrics.json").read_text())

    @property
    def label_names(self) -> list[str]:
        return list(self.record.get("label_names") or [])

    def _load(self):
        if self._model is None:
            from .methods.loading import load_run_model

            self._tokenizer = self.task.load_preprocessor(str(self.path), self.config.model)  # the tokenizer, image processor or feature extractor saved with the model
            self._model = load_run_model(self.path, self.task, self.record, self.config).to(self.device).eval()
            # prediction runs in the precision training would pick on this machine (the same cached measurement)
            self._precision, _ = choose_precision(self.precision_setting or self.config.train.precision, self.device, self._model)
        return self._model, self._tokenizer

    @keyword_errors
    def predict(self, inputs, pairs=None) -> list[dict]:
        """One prediction per input, in the task's form: [{'label': 'fresh', 'score': 0.97, 'scores': {...}}, ...]
        for text classification (`pairs`: the second text of each pair); an image run takes image files, folders of
        them, PIL images or uint8 arrays, an audio run audio files, folders of them, {'array', 'sampling_rate'} dicts
        or arrays at the model's rate (a folder gives one prediction per file, each with its `path`)."""
        table = self.task.inputs_table(inputs, pairs)
        return self.task.predict_records(self._outputs(table)[0], table)

    def _outputs(self, table: pd.DataFrame):
        """(the task's outputs for the table's rows, the features they were computed from)."""
        if len(table) == 0:
            raise TunesmithError("Nothing to predict: give at least one text.")
        model, tokenizer = self._load()
        features = self.task.encode(tokenizer, table, self.config.model.max_length)
        pad_id = pad_id_of(tokenizer)
        outputs, _ = predict_outputs(model, self.task, features, self.config.train.eval_batch_size, pad_id, self.device,
                                     autocast_for(self._precision, self.device))
        return outputs, features

    @keyword_errors
    def read(self, path, text_column: str | None = None, with_labels: bool = False,
             label_column: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(the file's inputs [and labels] in the task's columns, its raw rows), columns found as in training."""
        data_cfg = dataclasses.replace(self.config.data, label_column=label_column)  # the file's own, not training's flag
        return self.task.read_inputs(path, data_cfg, text_column, with_labels)

    @keyword_errors
    def predict_file(self, path, out=None, text_column: str | None = None) -> pd.DataFrame:
        """The input rows with the task's prediction columns added (text classification: prediction,
        confidence and per-label probabilities)."""
        table, raw = self.read(path, text_column)
        predictions = self.task.predictions_table(self._outputs(table)[0], table, with_inputs=False)
        result = raw.copy()
        for column in predictions.columns:
            result[column] = predictions[column].to_numpy()
        if out is not None:
            with atomic_file(Path(out)) as tmp:
                result.to_csv(tmp, index=False)
        return result

    @keyword_errors
    def evaluate(self, path, text_column: str | None = None, label_column: str | None = None) -> dict:
        """Metrics on a labeled file (its columns: as given, else the training names, else inferred)."""
        table, _ = self.read(path, text_column, with_labels=True, label_column=label_column)
        outputs, features = self._outputs(table)
        return self.task.score(outputs, features)

    # -- generation: chat, causal-lm and preference runs --------------------------------------------------
    def _generator(self):
        """The model and tokenizer of a run that writes text, or one sentence saying this run does not."""
        if self.task.model_class != "AutoModelForCausalLM":
            raise TunesmithError(f"The run in '{self.path}' is a {self.task.name} run, which labels inputs and writes no text; generate "
                                 f"and chat need a run of a language model (chat, causal-lm or preference): use `tunesmith predict` here.")
        return self._load()

    @keyword_errors
    def generate(self, prompts, batch_size: int = 8, **settings) -> list[str]:
        """The model's answer to each prompt: a string (one user message) or a list of role/content messages ending with
        the user's. Settings: temperature (0: greedy), top_p, max_new_tokens, repetition_penalty, seed (generation.py)."""
        from .generation import generate_batch, settings_from

        if isinstance(prompts, (str, dict)):
            raise TunesmithError("generate takes a list of prompts; wrap a single prompt in a list: generate(['...']).")
        conversations = [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]
        if not conversations:
            raise TunesmithError("Nothing to generate: give at least one prompt.")
        model, tokenizer = self._generator()
        return generate_batch(model, tokenizer, conversations, settings_from(settings), batch_size)

    @keyword_errors
    def generate_file(self, path, out, text_column: str | None = None, batch_size: int = 8, **settings) -> int:
        """Answer every prompt of a file (.txt lines, or JSONL/JSON/CSV of prompts or conversations) into a JSONL file:
        each row as read plus its `answer` (and the file's own answer as `reference`, when it has one). Returns the count."""
        from .prompts import read_prompts

        prompts = read_prompts(path, self.config.data.encoding, text_column)
        answers = self.generate(prompts.conversations, batch_size, **settings)
        with atomic_file(Path(out)) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                for row, answer, reference in zip(prompts.rows, answers, prompts.references):
                    extra = {"reference": reference} if reference is not None else {}
                    f.write(json.dumps({**row, "answer": answer, **extra}, ensure_ascii=False) + "\n")
        return len(answers)

    def chat_session(self, system_prompt: str | None = None, write=print, **settings):
        """An interactive ChatSession (chat_session.py) on this run's model: `.run()` reads from the keyboard."""
        from .chat_session import ChatSession
        from .generation import settings_from

        model, tokenizer = self._generator()
        return ChatSession(model, tokenizer, settings_from(settings), system_prompt, write)

    @keyword_errors
    def save(self, path: str | Path) -> Path:
        """Copy the run folder (model, config, metrics, plots) to path."""
        target = Path(path)
        if target.exists():
            raise TunesmithError(f"'{target}' already exists; choose a new folder to save the run to.")
        shutil.copytree(self.path, target, ignore=shutil.ignore_patterns("checkpoints", RUN_LOCK))
        return target

    @keyword_errors
    def export(self, out: str | Path, merge: bool = False) -> dict:
        """Write the model to a new folder; merge=True folds a LoRA/DoRA/IA3 adapter into a plain model."""
        from .export import export_run

        return export_run(self.path, out, merge)

    def __repr__(self) -> str:
        metric = self.task.metrics[0].name
        test = (self.metrics.get("test") or self.metrics.get("validation") or {}).get(metric)
        return f"Run('{self.path}', method={self.record['method']}, {metric}={test})"


@python_terms()
def finetune(data: str, console=None, **options) -> Run:
    """Fine-tune on a file or bundled dataset name; options are RunConfig fields (lr=..., method=...)."""
    from rich.console import Console

    cfg = RunConfig.from_dict(dict(options, data=str(data)), source="finetune() arguments")
    run_dir, _ = run_training(cfg, console or Console())
    return Run(run_dir)


def load(path: str | Path, device: str = "cpu", precision: str | None = None) -> Run:
    """Open a finished run folder; precision 'fp32' or 'bf16' overrides the run's own (auto: measured on this machine)."""
    return Run(path, device, precision=precision)
