"""Where the time of a training step goes, measured the same way in tunesmith and in the Trainer.

Hooks only, no change to either loop: the embedding layer's forward pre-hook marks the start of
the forward, the classifier's forward hook its end, the last gradient accumulated the end of the
backward, and the optimizer's step hooks the update. So a step splits into

    data    : from the previous update to the next forward (collate, zero_grad, scheduler, loop)
    forward : embeddings to logits
    backward: loss and backward, to the last gradient
    clip    : gradient-norm clipping (and anything else between backward and the update)
    optimizer: AdamW's step

Optionally a torch.profiler table of the busiest operators over the same steps.
"""
from __future__ import annotations

import json
import time

import torch
import torch.optim.optimizer as optimizer_hooks

PHASES = ("data", "forward", "backward", "clip", "optimizer")


class StepPhaseTimer:
    def __init__(self, model: torch.nn.Module, warmup: int, steps: int, ops: bool = False, on_done=None):
        self.warmup, self.steps, self.on_done = warmup, steps, on_done
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.step, self.last_update = 0, None
        self.forward_start = self.forward_end = self.last_grad = self.update_start = None
        self.wall_started = self.tokens = None
        self.ops, self.profiler, self.op_table = ops, None, None
        model.get_input_embeddings().register_forward_pre_hook(self._forward_pre)
        head = getattr(model, "classifier", None) or getattr(model, "score", None)
        head.register_forward_hook(self._forward_post)
        for param in model.parameters():
            if param.requires_grad:
                param.register_post_accumulate_grad_hook(self._grad)
        self.handles = [optimizer_hooks.register_optimizer_step_pre_hook(self._update_pre),
                        optimizer_hooks.register_optimizer_step_post_hook(self._update_post)]

    @property
    def measuring(self) -> bool:
        return self.warmup <= self.step < self.warmup + self.steps

    def _forward_pre(self, module, args):
        if not torch.is_grad_enabled():
            return  # evaluation passes are not training steps
        now = time.perf_counter()
        if self.forward_start is None:  # the first micro-batch of a step
            if self.measuring and self.last_update is not None:
                self.totals["data"] += now - self.last_update
            self.forward_start = now

    def _forward_post(self, module, args, output):
        if torch.is_grad_enabled():
            self.forward_end = time.perf_counter()
            if self.measuring:
                self.totals["forward"] += self.forward_end - self.forward_start

    def _grad(self, param):
        self.last_grad = time.perf_counter()

    def _update_pre(self, optimizer, args, kwargs):
        self.update_start = time.perf_counter()
        if self.measuring and self.forward_end is not None and self.last_grad is not None:
            self.totals["backward"] += self.last_grad - self.forward_end
            self.totals["clip"] += self.update_start - self.last_grad

    def _update_post(self, optimizer, args, kwargs):
        now = time.perf_counter()
        if self.measuring:
            self.totals["optimizer"] += now - self.update_start
        self.step += 1
        self.forward_start = self.forward_end = self.last_grad = None
        self.last_update = now
        if self.step == self.warmup:
            self.wall_started = now
            if self.ops:
                self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                self.profiler.__enter__()
        if self.step == self.warmup + self.steps:
            self.wall = now - self.wall_started
            if self.profiler is not None:
                self.profiler.__exit__(None, None, None)
                self.op_table = self.profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
            for handle in self.handles:
                handle.remove()
            if self.on_done is not None:
                self.on_done()

    def report(self, name: str) -> dict:
        per_step = {k: round(v / self.steps * 1000, 1) for k, v in self.totals.items()}
        per_step["total"] = round(self.wall / self.steps * 1000, 1)
        return {"name": name, "steps": self.steps, "ms_per_step": per_step, "threads": torch.get_num_threads(), "ops": self.op_table}


def print_report(report: dict) -> None:
    print(json.dumps({k: v for k, v in report.items() if k != "ops"}))
    if report.get("ops"):
        print(report["ops"])
