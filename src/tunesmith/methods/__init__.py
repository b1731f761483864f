"""Fine-tuning methods: one module each, registered by name, all with the same small interface.

A method module defines `apply(model, cfg, groups, task) -> model`, which decides which weights train
(setting requires_grad, or wrapping the model with adapters), and is registered with
`@register_method(name, summary, lr=...)`, lr being the method's default peak learning rate
(methods that train few weights from small initial values want a far higher rate than a full
fine-tune). It may also define `callbacks(model, cfg, groups, plan)`
returning loop-event callbacks (gradual unfreezing uses this). The task head always trains.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import TunesmithError, did_you_mean


@dataclass
class Method:
    name: str
    summary: str
    apply: Callable
    adapter: bool = False  # saves only the adapter weights (PEFT format)
    lr: float = 5e-5        # default peak learning rate when --lr is not given
    callbacks: Callable | None = None


METHODS: dict[str, Method] = {}


def register_method(name: str, summary: str, adapter: bool = False, lr: float = 5e-5):
    def wrap(apply):
        METHODS[name] = Method(name, summary, apply, adapter, lr)
        return apply

    return wrap


def register_callbacks(name: str):
    """Attach a callbacks(model, cfg, groups, plan) factory to an already registered method."""
    def wrap(factory):
        METHODS[name].callbacks = factory
        return factory

    return wrap


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise TunesmithError(f"Unknown method '{name}'.{did_you_mean(name, METHODS)} Choose one of: {', '.join(METHODS)}.")
    return METHODS[name]


def method_for(setting: str, task=None) -> str:
    """--method, or when it is auto the task's default (`default_method`: lora for chat, else full)."""
    return getattr(task, "default_method", "full") if setting == "auto" else setting


def resolve_method(cfg, task=None):
    """cfg with --method auto replaced by the task's default method; returns cfg."""
    cfg.method.method = method_for(cfg.method.method, task)
    return cfg


def resolve_learning_rate(cfg, model=None):
    """--lr when it was given, else the model family's default for the method (architectures/: a conv net's
    own weights need a larger one than a transformer's), else the method's default; returns cfg."""
    resolve_method(cfg)  # a direct caller's auto: full
    if cfg.train.lr is None:
        from ..architectures import architecture_of

        family = architecture_of(model) if model is not None else None
        cfg.train.lr = (family.lr if family else {}).get(cfg.method.method, get_method(cfg.method.method).lr)
    return cfg


def adapt_model(model, method_cfg, task=None):
    """Apply the configured method for `task` (None: a sequence classifier, for direct callers); returns
    the model and its parameter groups. A new task head always trains, except PEFT's frozen
    `original_module` copy of it (PEFT trains its own copy); a causal LM's pretrained output layer
    (trains_output_head False) trains only where the method trains it."""
    from ..architectures import parameter_groups, set_trainable

    model = get_method(method_for(method_cfg.method, task)).apply(model, method_cfg, parameter_groups(model), task)
    groups = parameter_groups(model)
    if task is None or task.trains_output_head:
        set_trainable([(n, p) for n, p in groups.head if "original_module" not in n], True)
    set_trainable(groups.fixed, False)  # a fixed table (Whisper's sinusoidal positions) stays as it is under every method
    return model, groups


# each import registers a method; `tunesmith methods` lists them in this order
from . import full, freeze, head, bitfit, gradual, lora, dora, ia3, adapter  # noqa: E402,F401
