"""Tasks: one module each, registered by name, all with the shape of text_classification.

A task knows how to build the model head, turn tables into token features, batch them,
compute the loss, score predictions and decode them into labels.
"""
from __future__ import annotations

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
        raise TunesmithError(f"Unknown task '{name}'.{did_you_mean(name, TASKS)} Known tasks: {', '.join(TASKS)}.")
    return TASKS[name]


from . import text_classification  # noqa: E402,F401  (registers the task)
