"""LoRA (Hu et al. 2021) through PEFT: a trainable low-rank update B·A beside each targeted linear layer."""
from __future__ import annotations

from . import register_method
from .peft_adapters import wrap_with_peft
from ..architectures import architecture_of, lora_targets, user_targets


def lora_options(model, cfg) -> dict:
    """LoraConfig arguments shared by LoRA and DoRA: rank, alpha (default 2 x rank), dropout, targets."""
    architecture = architecture_of(model)
    targets = user_targets(cfg.target_modules) or (lora_targets(architecture, model) if architecture else None)
    alpha = cfg.lora_alpha if cfg.lora_alpha is not None else 2 * cfg.lora_rank
    return {"r": cfg.lora_rank, "lora_alpha": alpha, "lora_dropout": cfg.lora_dropout, "target_modules": targets}


@register_method("lora", "low-rank updates beside the attention and feed-forward weights (PEFT); saves a small adapter", adapter=True, lr=1e-3)
def apply(model, cfg, groups, task):
    from peft import LoraConfig

    return wrap_with_peft(model, LoraConfig, groups, "lora", task, **lora_options(model, cfg))
