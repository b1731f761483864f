"""Tasks: one module each, registered by name, each implementing tasks/protocol.py's Task.

`--task auto` asks every registered task, in registration order, whether the training file looks
like its data (`detect`); the first that says yes wins, and its reason is printed. Register the
most specific tasks first (a file with token and tag lists is also a table with two columns);
text classification, which takes any table, is always asked last.
"""
from __future__ import annotations

from .protocol import Metric, Splits, Task, metric_named  # noqa: F401  (the protocol's public names)

TASKS: dict[str, type] = {}


def register_task(name: str):
    def wrap(cls):
        cls.name = name
        TASKS[name] = cls
        return cls

    return wrap


def get_task(name: str):
    from ..errors import TunesmithError, did_you_mean

    if name not in TASKS:
        raise TunesmithError(f"Unknown task '{name}'; choose one of {', '.join(TASKS)} or auto.{did_you_mean(name, TASKS)}")
    return TASKS[name]


def choose_task(setting: str, raw, data_cfg) -> tuple[type, str]:
    """(task class, why) for --task `setting` ('auto' or a task name) and the raw training table."""
    if setting != "auto":
        return get_task(setting), f"--task {setting}"
    ordered = [cls for name, cls in TASKS.items() if name != FALLBACK] + [TASKS[FALLBACK]]
    for cls in ordered:
        reason = cls.detect(raw, data_cfg)
        if reason:
            return cls, reason
    raise AssertionError(f"{FALLBACK} detects every table")


DEFAULT_MAX_LENGTH = 128  # tokens, for a task that names no default_max_length of its own


def resolve_max_length(cfg, task_cls) -> int:
    """--max-length, or the task's default when it was left automatic (set on cfg, so config.yaml records it)."""
    if cfg.model.max_length is None:
        cfg.model.max_length = getattr(task_cls, "default_max_length", DEFAULT_MAX_LENGTH)
    return cfg.model.max_length


FALLBACK = "text-classification"  # detects any table (text and label columns are checked in prepare), so asked last

# each import registers its task; --task auto asks them in this order, text classification last (image and
# audio classification first: a folder of class folders, or a column of image or audio file names, is nothing else's data)
from . import (image_classification, audio_classification, preference, causal_lm, chat, token_classification, question_answering,  # noqa: E402,F401
               multi_label, regression, text_classification)
