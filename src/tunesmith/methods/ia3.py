"""(IA)^3 (Liu et al. 2022) through PEFT: learned vectors rescale keys, values and feed-forward activations."""
from __future__ import annotations

from . import register_method
from .peft_adapters import wrap_with_peft
from .targets import family_of, user_targets


@register_method("ia3", "learned vectors that rescale keys, values and feed-forward activations (PEFT); tiny adapter", adapter=True, lr=3e-3)
def apply(model, cfg, groups, task):
    from peft import IA3Config

    family = family_of(model)
    targets = user_targets(cfg.target_modules) or (family.ia3 if family else None)
    # Which targets are feed-forward (scaled on their input) follows the family table; for other families
    # PEFT's own table when it picks the targets too, and none when the user names them.
    feedforward = family.ia3_feedforward if family else ([] if targets else None)
    return wrap_with_peft(model, IA3Config, groups, "ia3", task, target_modules=targets, feedforward_modules=feedforward)
