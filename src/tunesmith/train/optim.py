"""AdamW parameter groups (weight decay, layer-wise learning rates) and the warmup/decay schedule."""
from __future__ import annotations

import math

import torch

from ..architectures import ParameterGroups

NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "layernorm.weight", "norm.weight", "ln_")


def group_learning_rates(groups: ParameterGroups, lr: float, decay: float | None) -> dict[str, float]:
    """Learning rate per named group: the head gets lr, each group below gets `decay` times more."""
    if decay:
        groups.require_layers("--layer-lr-decay")
    ordered = groups.ordered()
    top = len(ordered) - 1
    return {name: lr * (decay ** (top - depth) if decay else 1.0) for depth, (name, _) in enumerate(ordered)}


def optimizer_groups(groups: ParameterGroups, lr: float, weight_decay: float, layer_decay: float | None) -> list[dict]:
    """Every parameter of the model, trainable now or later (gradual unfreezing), in AdamW groups."""
    rates = group_learning_rates(groups, lr, layer_decay)
    result = []
    for name, params in groups.ordered():
        decay = [p for n, p in params if not any(k in n for k in NO_DECAY)]
        no_decay = [p for n, p in params if any(k in n for k in NO_DECAY)]
        for subset, wd in ((decay, weight_decay), (no_decay, 0.0)):
            if subset:
                result.append({"params": subset, "lr": rates[name], "weight_decay": wd, "group": name})
    return result


def fused_adamw_supported(param_groups: list[dict]) -> bool:
    """Fused AdamW (one kernel reading each weight, gradient and moment once) needs float weights on CPU or CUDA."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in param_groups for p in g["params"])


def build_optimizer(groups: ParameterGroups, train_cfg, layer_decay: float | None) -> torch.optim.Optimizer:
    param_groups = optimizer_groups(groups, train_cfg.lr, train_cfg.weight_decay, layer_decay)
    # fused: one pass over memory per step where foreach makes about ten (about 20% of a MiniLM step on
    # CPU, see bench/levers.py); foreach otherwise. Parameters frozen now have no gradient and are
    # skipped until they are unfrozen.
    fused = fused_adamw_supported(param_groups)
    return torch.optim.AdamW(param_groups, lr=train_cfg.lr, betas=(0.9, 0.999), eps=1e-8, fused=fused or None, foreach=None if fused else True)


def linear_warmup_decay(total_steps: int, warmup_steps: int):
    """Multiplier on the peak lr: 0 -> 1 over warmup, then 1 -> 0 linearly (BERT's schedule)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def build_scheduler(optimizer, total_steps: int, warmup_ratio: float):
    warmup = math.floor(total_steps * warmup_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(total_steps, warmup))
