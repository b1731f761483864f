"""The loop's fixed list of events, and the callbacks that observe them.

Events: train_start, epoch_start, step_end, evaluate, epoch_end, train_end. A callback is any
object with some of the matching `on_<event>(loop)` methods; `loop` is the LoopContext below.
Callbacks observe and may flip `loop.state.should_stop` or unfreeze weights; the loop owns the
forward, the loss and the optimizer.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

EVENTS = ("train_start", "epoch_start", "step_end", "evaluate", "epoch_end", "train_end")


@dataclass
class TrainState:
    """Everything about progress that a checkpoint must hold to resume exactly."""

    epoch: int = 0
    steps_in_epoch: int = 0       # optimizer steps done in the current epoch
    step: int = 0                 # optimizer steps done in all
    total_steps: int = 0
    steps_per_epoch: int = 0
    grad_accum: int = 1           # micro-batches per step (doubles after an out-of-memory error)
    best_metric: float | None = None
    best_step: int | None = None
    best_loss: float | None = None  # validation loss at the best step: breaks ties of the metric
    bad_evals: int = 0
    skipped_batches: int = 0
    tokens: int = 0               # real (unpadded) training tokens seen
    train_seconds: float = 0.0
    history: list = field(default_factory=list)   # one entry per validation pass
    losses: list = field(default_factory=list)    # [step, training loss] per optimizer step
    should_stop: bool = False
    stop_reason: str = ""


@dataclass
class LoopContext:
    model: Any
    optimizer: Any
    state: TrainState
    cfg: Any
    groups: Any = None
    last_loss: float | None = None
    last_eval: dict | None = None


class Events:
    def __init__(self, callbacks=()):
        self.callbacks = list(callbacks)

    def emit(self, event: str, loop: LoopContext) -> None:
        assert event in EVENTS, event
        for callback in self.callbacks:
            handler = getattr(callback, f"on_{event}", None)
            if handler is not None:
                handler(loop)


class ProgressPrinter:
    """A rich progress bar in a terminal (step, loss, metric, time left); plain lines otherwise."""

    def __init__(self, console, metric: str):
        self.console, self.metric, self.progress, self.task = console, metric, None, None
        self.started = time.perf_counter()

    def on_train_start(self, loop):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        if self.console.is_terminal:
            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                     TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(), console=self.console, transient=False)
            self.progress.start()
            self.task = self.progress.add_task("train", total=loop.state.total_steps, completed=loop.state.step, info="")

    def info(self, loop) -> str:
        parts = [f"epoch {loop.state.epoch + 1}"]
        if loop.last_loss is not None:
            parts.append(f"loss {loop.last_loss:.4f}")
        if loop.last_eval is not None:
            parts.append(f"val {self.metric} {loop.last_eval[self.metric]:.4f}")
        return "  ".join(parts)

    def on_step_end(self, loop):
        if self.progress is not None:
            self.progress.update(self.task, completed=loop.state.step, info=self.info(loop))

    def on_evaluate(self, loop):
        if self.progress is None:
            elapsed = time.perf_counter() - self.started
            self.console.print(f"step {loop.state.step}/{loop.state.total_steps}  {self.info(loop)}  ({elapsed:.0f} s)")

    def on_train_end(self, loop):
        if self.progress is not None:
            self.progress.update(self.task, completed=loop.state.step, info=self.info(loop))
            self.progress.stop()
