"""fit(): the one training loop. Read it top to bottom: it is the whole of training.

Data order, loss normalisation, optimizer step, evaluation, early stopping and checkpoints are all
visible here; callbacks only observe (progress, gradual unfreezing) through train/events.py.
"""
from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..data.batching import length_grouped_batches, move
from ..errors import RunInterrupted, TunesmithError
from ..metrics import is_better
from ..tasks.protocol import metric_named
from . import checkpoint as ckpt
from .events import Events, LoopContext, TrainState
from .fast_dropout import cheaper_dropout
from .faults import fault_point, poison_loss
from .first_token import first_token_forward
from .infer import predict_outputs
from .optim import build_optimizer, build_scheduler
from .plan import resolve_training_choices
from .precision import autocast_for


@dataclass
class FitResult:
    model: torch.nn.Module
    state: TrainState
    best_eval: dict | None
    best_scores: dict | None = None  # every metric of the validation pass that picked the returned weights


def make_accelerator(train_cfg):
    """Device placement comes from accelerate (several processes will, too, in a later round).

    Mixed precision does not: accelerate fixes it once per process, and one process may train
    several runs (the API, tests); bf16 autocast is train/precision.py's autocast_for instead."""
    from accelerate import Accelerator

    cuda = torch.cuda.is_available() and train_cfg.device != "cpu"
    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        raise TunesmithError("--device cuda was asked for, but no CUDA GPU is visible; use --device auto or cpu.")
    return Accelerator(cpu=not cuda, mixed_precision="no")


def chunk(indices: list[int], parts: int) -> list[list[int]]:
    size = math.ceil(len(indices) / parts)
    return [indices[i:i + size] for i in range(0, len(indices), size)]


def within_tokens(indices: list[int], lengths, budget: int | None) -> list[list[int]]:
    """`indices` cut into runs of at most `budget` tokens (one example at least each); unchanged without a budget.
    On a CPU the kernel kills a process that runs out of memory before torch can raise, so a task whose
    examples vary a lot in length (conversations) bounds each micro-batch by tokens, not only by examples."""
    if not budget:
        return [indices]
    parts, current, used = [], [], 0
    for i in indices:
        if current and used + int(lengths[i]) > budget:
            parts.append(current)
            current, used = [], 0
        current.append(i)
        used += int(lengths[i])
    return parts + [current] if current else parts


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop finishes the step, checkpoints, then exits."""

    def __init__(self):
        self.signal_name = None
        self.previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self.request)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def request(self, signum, frame):
        if self.signal_name is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def fit(model, task, train, validation, cfg, run_dir: Path, groups, callbacks=(), resume_from: Path | None = None,
        pad_id: int = 0, precision: str = "fp32") -> FitResult:
    """Train `model` on `train` as cfg says; `precision` is 'bf16' (autocast) or 'fp32', chosen by the caller."""
    from ..methods import resolve_learning_rate, resolve_method

    tc = resolve_learning_rate(resolve_method(cfg, task), model).train
    if tc.epochs is None or tc.metric == "auto":  # job.py resolves these from the data; direct callers get the same rule
        resolve_training_choices(cfg, len(train), validation_from_split=False, metric=(task.metrics[0].name, None))
    higher_is_better = metric_named(task, tc.metric).higher_is_better
    torch.manual_seed(tc.seed)
    accelerator = make_accelerator(tc)
    autocast = autocast_for(precision, accelerator.device)
    optimizer = build_optimizer(groups, tc, cfg.method.layer_lr_decay)
    steps_per_epoch = math.ceil(len(train) / tc.batch_size)
    total_steps = max(1, math.ceil(tc.epochs * steps_per_epoch))
    scheduler = build_scheduler(optimizer, total_steps, tc.warmup_ratio)
    model, optimizer = accelerator.prepare(model, optimizer)
    folder = Path(run_dir) / "checkpoints"

    state = TrainState(total_steps=total_steps, steps_per_epoch=steps_per_epoch, grad_accum=tc.grad_accum)
    if resume_from is not None:
        state = ckpt.load_checkpoint(resume_from, model, optimizer, scheduler)
    loop = LoopContext(model, optimizer, state, cfg, groups)
    events = Events(callbacks)
    eval_points = {round(steps_per_epoch * k / tc.evals_per_epoch) for k in range(1, tc.evals_per_epoch + 1)}
    params = list(model.parameters())
    # BERT-family classifiers: the last layer for [CLS] only, the one position the head reads (exact, ~13% less work)
    forward = (first_token_forward(model, groups) if accelerator.num_processes == 1 else None) or model
    best_scores = None  # every metric of the best validation pass so far

    def evaluate() -> None:
        """Validation pass, early-stopping bookkeeping, best weights to disk."""
        nonlocal best_scores
        if validation is None:
            return
        outputs, loss = predict_outputs(model, task, validation, tc.eval_batch_size, pad_id, accelerator.device, autocast)
        result = task.score(outputs, validation, loss)
        fault_point("evaluate", state.step)
        loop.last_eval = result
        value = result[tc.metric]
        state.history.append({"step": state.step, "epoch": state.step / steps_per_epoch, "val": {m.name: result[m.name] for m in task.metrics if m.name in result}})
        if is_better(value, state.best_metric, higher_is_better, result.get("loss"), state.best_loss):
            state.best_metric, state.best_step, state.bad_evals, state.best_loss = value, state.step, 0, result.get("loss")
            best_scores = result
            ckpt.save_best_weights(folder, model, state)
        else:
            state.bad_evals += 1
            if tc.early_stopping and state.bad_evals >= tc.early_stopping:
                state.should_stop, state.stop_reason = True, f"early stopping: no better {tc.metric} in {state.bad_evals} evaluations"
        events.emit("evaluate", loop)

    def save_checkpoint() -> None:
        ckpt.save_checkpoint(folder, model, optimizer, scheduler, state)
        ckpt.prune_checkpoints(folder, tc.keep_checkpoints)

    def train_step(indices: list[int]) -> float | None:
        """Forward and backward over micro-batches; the loss is summed then divided by the targets
        (examples, or tokens) of the whole step, so gradient accumulation gives the same update as one batch."""
        optimizer.zero_grad(set_to_none=True)
        total = torch.zeros((), device=accelerator.device)  # summed on the device: no host sync per micro-batch
        budget = getattr(task, "micro_batch_tokens", None)
        micro_batches = [(micro, task.collate(train, micro, pad_id)) for part in chunk(indices, state.grad_accum)
                         for micro in within_tokens(part, train.lengths, budget)]
        targets = sum(task.target_count(batch["labels"]) for _, batch in micro_batches)
        for micro, batch in micro_batches:
            fault_point("micro-batch", len(micro))
            batch = move(batch, accelerator.device)
            labels = batch.pop("labels")
            with autocast():
                output = forward(**batch)
            loss = poison_loss(task.loss(output, labels)[0] / max(targets, 1), state.step + 1)
            accelerator.backward(loss)
            total += loss.detach().float()
            state.tokens += int(train.lengths[micro].sum())
        # with clipping off, an infinite max norm still returns the norm (and scales by exactly 1)
        norm = accelerator.clip_grad_norm_([p for p in params if p.grad is not None], tc.max_grad_norm or math.inf)
        total, norm = torch.stack([total, norm.float().to(total.device)]).tolist()  # the step's one host sync
        if not math.isfinite(total) or not math.isfinite(norm):
            return None
        fault_point("step", state.step + 1)
        optimizer.step()
        scheduler.step()
        return total

    model.train()  # from_pretrained returns a model in eval mode: dropout must be on while training
    events.emit("train_start", loop)
    started = time.perf_counter() - state.train_seconds
    # on a CPU, dropout masks from fewer random draws (train/fast_dropout.py): ~8% a step on minilm-l6
    with StopRequest() as stop, cheaper_dropout(accelerator.unwrap_model(model), accelerator.device):
        while state.step < total_steps and not state.should_stop:
            events.emit("epoch_start", loop)
            epoch = state.epoch  # the inner loop ends with the epoch, so the next one gets its own order
            batches = length_grouped_batches(train.lengths, tc.batch_size, tc.seed, epoch)
            while state.epoch == epoch and state.step < total_steps and not state.should_stop:
                indices = batches[state.steps_in_epoch]
                try:
                    loss = train_step(indices)
                except RuntimeError as exc:
                    if not is_out_of_memory(exc):
                        raise
                    if len(indices) <= state.grad_accum:
                        raise TunesmithError(f"Out of memory at step {state.step + 1} even with one example per micro-batch; lower --max-length "
                                             f"(now {cfg.model.max_length}), choose a smaller --model or a lighter --method such as lora.") from None
                    # halve the micro-batch, double accumulation: the effective batch is unchanged
                    optimizer.zero_grad(set_to_none=True)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    state.grad_accum *= 2
                    accelerator.print(f"Out of memory: micro-batch halved, gradient accumulation now {state.grad_accum}.")
                    continue
                if loss is None:
                    state.skipped_batches += 1
                    if tc.on_nan == "stop" or state.skipped_batches > max(3, state.step // 10):
                        kept = ckpt.list_checkpoints(folder)
                        kept = f"the last good checkpoint is {kept[-1]}" if kept else "no checkpoint had been written yet"
                        why = "pass --on-nan skip to skip such batches" if tc.on_nan == "stop" else f"{state.skipped_batches} batches were skipped, too many to be isolated"
                        raise TunesmithError(f"The loss or its gradient became NaN/infinite at step {state.step + 1} ({kept}); likely causes: too high a "
                                             f"learning rate (--lr {tc.lr}) or bad labels. Lower --lr and start again with --overwrite, or {why}.")
                else:
                    loop.last_loss = loss
                    state.losses.append([state.step + 1, round(loss, 5)])
                state.step += 1
                state.steps_in_epoch += 1
                state.train_seconds = time.perf_counter() - started
                events.emit("step_end", loop)
                if state.steps_in_epoch in eval_points or state.step == total_steps:
                    evaluate()
                end_of_epoch = state.steps_in_epoch == len(batches)
                if end_of_epoch:
                    state.epoch, state.steps_in_epoch = state.epoch + 1, 0
                    events.emit("epoch_end", loop)
                # a finished loop writes no checkpoint: nothing is left to resume, and at ~3x the weights it cost 1.4 s a job
                finished = state.step == total_steps or state.should_stop
                if stop.signal_name or (not finished and (end_of_epoch or (tc.checkpoint_every and state.step % tc.checkpoint_every == 0))):
                    save_checkpoint()
                if stop.signal_name:
                    raise RunInterrupted(f"Stopped by {stop.signal_name} at step {state.step}/{total_steps}; a checkpoint was written. "
                                         f"Resume with the same command plus --resume.")
    state.train_seconds = time.perf_counter() - started
    if state.best_step is not None and state.best_step != state.step:
        ckpt.load_best_weights(folder, accelerator.unwrap_model(model))
    events.emit("train_end", loop)
    best = next((h["val"] for h in state.history if h["step"] == state.best_step), None)
    return FitResult(accelerator.unwrap_model(model), state, best, best_scores if state.best_step is not None else None)
