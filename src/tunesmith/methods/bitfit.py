"""BitFit (Ben Zaken et al. 2022): only the bias terms of the base model train, with the task head."""
from __future__ import annotations

from . import register_method
from ..architectures import set_trainable


@register_method("bitfit", "train only the bias terms of the base model, and the task head", lr=1e-3)
def apply(model, cfg, groups, task):
    for name, param in model.named_parameters():
        param.requires_grad_(name.endswith(".bias"))
    set_trainable(groups.head, True)
    return model
