"""Test-only fault injection: does nothing unless the TUNESMITH_FAULT environment variable is set.

The reliability tests use it to hit exact points of a real run: a SIGKILL inside a step, halfway
through a checkpoint write or during evaluation; a pause to send a signal into; a NaN loss or
gradient; an out-of-memory error. TUNESMITH_FAULT holds ';'-separated `action=argument` items:

    kill-at=step:7               SIGKILL inside optimizer step 7 (after backward, before the update)
    kill-at=checkpoint-write:12  SIGKILL halfway through writing the step-12 checkpoint
    kill-at=evaluate:18          SIGKILL in the middle of the validation pass after step 18
    pause-at=step:3              print 'tunesmith-fault: paused at step:3' on stderr, sleep 3 s
    nan-at=3,5                   the loss of optimizer steps 3 and 5 becomes NaN
    nan-grad-at=4                step 4 keeps a finite loss but gets NaN gradients
    oom-above=8                  a CUDA-style out-of-memory error for micro-batches over 8 examples

A point without ':N' fires the first time it is reached.
"""
from __future__ import annotations

import os
import signal
import sys
import time

ENV = "TUNESMITH_FAULT"
PAUSE_SECONDS = 3.0


def parse(spec: str) -> dict[str, str]:
    return dict(item.strip().split("=", 1) for item in spec.split(";") if "=" in item)


def matches(target: str | None, point: str, value: int) -> bool:
    """'step:7' matches point 'step' at value 7; a bare 'step' matches any value."""
    if not target:
        return False
    name, _, at = target.partition(":")
    return name == point and (not at or int(at) == value)


def fault_point(point: str, value: int) -> None:
    """Called by the loop at `point` ('step', 'checkpoint-write', 'evaluate', 'micro-batch')."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    actions = parse(spec)
    if matches(actions.get("kill-at"), point, value):
        os.kill(os.getpid(), signal.SIGKILL)
    if matches(actions.get("pause-at"), point, value):
        print(f"tunesmith-fault: paused at {point}:{value}", file=sys.stderr, flush=True)
        time.sleep(PAUSE_SECONDS)
    if point == "micro-batch" and "oom-above" in actions and value > int(actions["oom-above"]):
        raise RuntimeError(f"CUDA out of memory. Tried to allocate 2.00 GiB (simulated for a micro-batch of {value})")


def poison_loss(loss, step: int):
    """The loss, made NaN (or given NaN gradients) in the steps TUNESMITH_FAULT names."""
    spec = os.environ.get(ENV)
    if not spec:
        return loss
    actions = parse(spec)
    if str(step) in actions.get("nan-at", "").split(","):
        return loss * float("nan")
    if str(step) in actions.get("nan-grad-at", "").split(","):
        # value unchanged (sqrt(0) = 0) but d sqrt/dx at 0 is infinite, so every gradient is NaN
        return loss + (loss * 0).sqrt()
    return loss
