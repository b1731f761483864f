"""Partial fine-tuning: the embeddings and the bottom N transformer layers stay frozen, the rest trains."""
from __future__ import annotations

from ..errors import TunesmithError
from . import register_method
from ..architectures import set_trainable


def layers_to_freeze(cfg, num_layers: int) -> int:
    """--freeze-layers, default half the layers (rounded down); more layers than the model has is an error."""
    if num_layers == 0:
        raise TunesmithError("--method freeze found no transformer layers in this model; use --method full or head.")
    n = cfg.freeze_layers if cfg.freeze_layers is not None else num_layers // 2
    if n > num_layers:
        raise TunesmithError(f"--freeze-layers {n} is more than the model's {num_layers} transformer layers; choose 0 to {num_layers} "
                             f"({num_layers} leaves only the head training, like --method head).")
    return n


@register_method("freeze", "freeze the embeddings and the bottom --freeze-layers layers (default half); train the rest")
def apply(model, cfg, groups, task):
    groups.require_layers("--method freeze")
    n = layers_to_freeze(cfg, groups.num_layers)
    model.requires_grad_(True)
    set_trainable(groups.embeddings, False)
    for layer in groups.layers[:n]:
        set_trainable(layer, False)
    return model
