"""Tasks: one module each, registered by name, each implementing tasks/protocol.py's Task.

`--task auto` asks every registered task, in registration order, whether the training file looks
like its data (`detect`); the first that says yes wins, and its reason is printed. Register the
most specific tasks first: a file with token and tag lists is also a table with two columns.
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
    for cls in TASKS.values():
        reason = cls.detect(raw, data_cfg)
        if reason:
            return cls, reason
    raise AssertionError("text-classification detects every table")  # it is the fallback: any text and label columns


from . import text_classification  # noqa: E402,F401  (registers the task; the fallback of --task auto, so last)
