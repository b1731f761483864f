"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2021): small down-project, GELU,
up-project blocks with a residual, inserted after a transformer block's sublayers; only they and
the task head train.

Placement: 'houlsby' puts one after the attention output projection and one after the feed-forward
output projection of every layer; 'pfeiffer' only after the feed-forward one. PEFT 0.21 offers no
such adapters (and AdapterHub's package cannot sit beside transformers 5), hence this small module.

Saved format (beside the tokenizer in the run folder): bottleneck_adapter.json (size and
the wrapped sublayers) and bottleneck_adapter.safetensors (adapter and head weights); the base
model comes from the run's base_model, as for PEFT adapters.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import TunesmithError
from . import register_method
from ..architectures import architecture_of, known_model_types, model_type_of, parameter_groups, set_trainable

ADAPTER_CONFIG = "bottleneck_adapter.json"
ADAPTER_WEIGHTS = "bottleneck_adapter.safetensors"
FORMAT = "tunesmith-bottleneck-adapter/1"


class Bottleneck(nn.Module):
    """x + up(gelu(down(x))); up starts at zero, so a new adapter is the identity and training starts
    from the base model's own function."""

    def __init__(self, hidden: int, size: int):
        super().__init__()
        self.down = nn.Linear(hidden, size)
        self.up = nn.Linear(size, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(nn.functional.gelu(self.down(x)))


class AdaptedSublayer(nn.Module):
    """A sublayer (a linear output projection) followed by its adapter."""

    def __init__(self, base: nn.Module, size: int):
        super().__init__()
        self.base = base
        self.adapter = Bottleneck(base.out_features, size).to(base.weight.device, base.weight.dtype)

    def forward(self, *args, **kwargs):
        return self.adapter(self.base(*args, **kwargs))


def sublayers_to_adapt(model, placement: str) -> list[str]:
    architecture = architecture_of(model)
    if architecture is None or architecture.feedforward_output is None:
        raise TunesmithError(f"--method adapter knows where to put adapters in {known_model_types('feedforward_output')} models, not in '{model_type_of(model)}'; "
                             f"use --method lora, which takes --target-modules.")
    patterns = [architecture.feedforward_output] + ([architecture.attention_output] if placement == "houlsby" else [])
    names = [name for name, module in model.named_modules()
             if isinstance(module, nn.Linear) and any(re.fullmatch(p, name) for p in patterns)]
    if not names:
        raise TunesmithError(f"--method adapter found none of the expected sublayers in this '{model_type_of(model)}' model; use --method lora instead.")
    return names


def insert_adapters(model, names: list[str], size: int) -> None:
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, AdaptedSublayer(getattr(parent, child), size))


def adapted_sublayers(model) -> dict[str, AdaptedSublayer]:
    return {name: m for name, m in model.named_modules() if isinstance(m, AdaptedSublayer)}


@register_method("adapter", "bottleneck adapters after feed-forward (pfeiffer) or also after attention (houlsby); saves a small adapter", adapter=True, lr=1e-3)
def apply(model, cfg, groups, task):
    names = sublayers_to_adapt(model, cfg.adapter_placement)
    model.requires_grad_(False)
    insert_adapters(model, names, cfg.adapter_size)
    set_trainable(groups.head, True)
    return model


# -- saved format ----------------------------------------------------------------------------
def adapter_weight_names(model) -> set[str]:
    return {f"{sublayer}.adapter.{name}" for sublayer, module in adapted_sublayers(model).items() for name, _ in module.adapter.named_parameters()}


def saved_weights(model) -> dict[str, torch.Tensor]:
    """Adapter weights and the head's: everything that differs from the base model."""
    keep = adapter_weight_names(model) | {name for name, _ in parameter_groups(model).head}
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if name in keep}


def save_bottleneck_adapter(model, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sublayers = adapted_sublayers(model)
    sizes = {m.adapter.down.out_features for m in sublayers.values()}
    config = {"format": FORMAT, "size": sizes.pop(), "sublayers": list(sublayers), "base_model_type": model_type_of(model)}
    save_file(saved_weights(model), str(folder / ADAPTER_WEIGHTS))
    (folder / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2))


def load_bottleneck_adapter(base_model, folder: Path):
    """The base model with the saved adapters inserted and the saved adapter and head weights loaded."""
    folder = Path(folder)
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("format") != FORMAT:
        raise TunesmithError(f"'{folder / ADAPTER_CONFIG}' is not a bottleneck adapter this version of tunesmith can read (format {config.get('format')!r}).")
    insert_adapters(base_model, config["sublayers"], config["size"])
    weights = load_file(str(folder / ADAPTER_WEIGHTS))
    params = dict(base_model.named_parameters())
    unknown = [name for name in weights if name not in params]
    missing = sorted(adapter_weight_names(base_model) - set(weights))
    if unknown or missing:
        raise TunesmithError(f"The adapter in '{folder}' does not fit its base model ({len(unknown)} unknown and {len(missing)} missing weights); "
                             f"was the base model changed since training?")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    return base_model
