"""Linear probe: the base model is frozen and only the task head (pooler and classifier) trains."""
from __future__ import annotations

from . import register_method
from ..architectures import set_trainable


@register_method("head", "train only the task head on top of the frozen base model (linear probe)", lr=3e-3)
def apply(model, cfg, groups, task):
    model.requires_grad_(False)
    set_trainable(groups.head, True)
    return model
