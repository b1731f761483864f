"""(IA)^3 (Liu et al. 2022) through PEFT: learned vectors rescale keys, values and feed-forward activations."""
from __future__ import annotations

from . import register_method
from .peft_adapters import wrap_with_peft
from ..architectures import architecture_of, user_targets


@register_method("ia3", "learned vectors that rescale keys, values and feed-forward activations (PEFT); tiny adapter", adapter=True, lr=3e-3)
def apply(model, cfg, groups, task):
    from peft import IA3Config

    architecture = architecture_of(model)
    known = architecture if architecture and architecture.ia3 else None
    targets = user_targets(cfg.target_modules) or (known.ia3 if known else None)
    # Which targets are feed-forward (scaled on their input) follows the architecture's description; for
    # other families PEFT's own table when it picks the targets too, and none when the user names them.
    feedforward = known.ia3_feedforward if known else ([] if targets else None)
    return wrap_with_peft(model, IA3Config, groups, "ia3", task, target_modules=targets, feedforward_modules=feedforward)
