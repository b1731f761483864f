"""DoRA (Liu et al. 2024) through PEFT: LoRA on the direction of each weight plus a trainable magnitude."""
from __future__ import annotations

from . import register_method
from .lora import lora_options
from .peft_adapters import wrap_with_peft


@register_method("dora", "LoRA on weight directions plus trainable magnitudes (PEFT); saves a small adapter", adapter=True, lr=1e-3)
def apply(model, cfg, groups, task):
    from peft import LoraConfig

    return wrap_with_peft(model, LoraConfig, groups, "dora", task, use_dora=True, **lora_options(model, cfg))
