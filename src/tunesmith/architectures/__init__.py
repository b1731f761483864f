"""Architectures: one description per model family, the only place that knows parameter and module names.

A description (timm's `group_matcher` idea) says, as regular expressions over dotted parameter names,
which parameters are the input stage (embeddings, a conv stem), which are the stacked layers from input
to output, and which are the head that a task adds and always trains (with what trains beside it: BERT's
pooler, Llama's final norm). It also names the modules LoRA, IA3 and bottleneck adapters adapt, and how a
BERT-family classifier head reads the last layer (for the frozen-layer cache and the first-token forward).

`parameter_groups(model)` sorts every parameter into embeddings, layer 0..L-1 and head. A parameter that a
known description does not match, and every model of an unknown family, leaves the groups incomplete:
methods that only need the head (full, head, bitfit, LoRA with --target-modules) still work, since a
task's head is whatever lies outside the transformers base model; methods that need the layers
(freeze, gradual, layer-wise learning rates) call `require_layers` and get one sentence instead of
treating unknown blocks as the head.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import TunesmithError

Params = list[tuple[str, torch.nn.Parameter]]


@dataclass(frozen=True)
class Architecture:
    name: str
    model_types: tuple[str, ...]     # config.model_type values this description covers
    embeddings: str                  # the input stage; patterns match at a name boundary (".{pattern}" or the start)
    layers: tuple[str, ...]          # input to output; a pattern with a (\d+) group gives one group per index
    head: str                        # the task head and what trains with it
    # LoRA/DoRA targets as PEFT takes them: names a module name ends with, or one full-name regex; or a
    # function of the model that returns them (or refuses the model in one sentence)
    lora: tuple[str, ...] | str | Callable = ()
    ia3: str | None = None           # IA3: the keys, values and feed-forward projections it rescales (full-name regex) ...
    ia3_feedforward: str | None = None  # ... of which these are scaled on their input
    attention_output: str | None = None  # bottleneck adapters sit after the attention output (Houlsby) ...
    feedforward_output: str | None = None  # ... and after the feed-forward output (Houlsby and Pfeiffer)
    head_style: str | None = None    # BERT-family sequence classifiers: "pooler" (BERT) or "first_token" (RoBERTa, ELECTRA)
    # The frozen-prefix split for the frozen-layer cache: split(model) -> an object with num_layers,
    # per_token(depth), bottom(batch, depth) -> (batch, rows, width) and top(hidden, mask, depth) -> logits
    # (train/frozen_cache.py), or None for a model of this family it cannot split (a QA head, ...)
    split: Callable | None = None
    # default learning rates of the methods that update this family's own weights, where the method's
    # default (a transformer's: 5e-5 for full) is wrong for it; --lr overrides
    lr: dict = field(default_factory=dict)
    # parameters that are a fixed table, not learned (Whisper's sinusoidal positions): no method trains them
    fixed: str | None = None

    def compiled(self) -> tuple[re.Pattern, list[re.Pattern], re.Pattern]:
        at_boundary = lambda pattern: re.compile(r"(?:^|\.)(?:" + pattern + ")")  # noqa: E731
        return at_boundary(self.embeddings), [at_boundary(p) for p in self.layers], at_boundary(self.head)


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(architecture: Architecture) -> Architecture:
    ARCHITECTURES[architecture.name] = architecture
    return architecture


def model_type_of(model) -> str:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(getattr(inner, "config", None), "model_type", None) or type(inner).__name__


def architecture_of(model) -> Architecture | None:
    model_type = model_type_of(model)
    return next((a for a in ARCHITECTURES.values() if model_type in a.model_types), None)


def lora_targets(architecture: Architecture, model):
    """The architecture's default LoRA targets for this model (a list of names or one regex), or None."""
    targets = architecture.lora(model) if callable(architecture.lora) else architecture.lora
    return list(targets) if isinstance(targets, tuple) else targets or None


def frozen_split(model):
    """The architecture's frozen-prefix split of this model (see Architecture.split), or None."""
    architecture = architecture_of(model)
    return architecture.split(model) if architecture is not None and architecture.split is not None else None


def known_model_types(having: str | None = None) -> str:
    """The model types described, or those whose description sets the field `having` ('lora', ...)."""
    return ", ".join(t for a in ARCHITECTURES.values() if having is None or getattr(a, having) for t in a.model_types)


# -- parameter groups ---------------------------------------------------------------------------

@dataclass
class ParameterGroups:
    embeddings: Params = field(default_factory=list)
    layers: list[Params] = field(default_factory=list)
    head: Params = field(default_factory=list)
    unmatched: Params = field(default_factory=list)  # below the head, in no group: an unknown family, or one the description misses
    fixed: Params = field(default_factory=list)  # never trained (Architecture.fixed), in no group
    architecture: str | None = None
    model_type: str = ""

    def ordered(self) -> list[tuple[str, Params]]:
        """[('embeddings', ...), ('layer.0', ...), ..., ('head', ...)], bottom to top; parameters in no
        group sit just below the head (they train or freeze with the model as a whole)."""
        groups = [("embeddings", self.embeddings)] + [(f"layer.{i}", p) for i, p in enumerate(self.layers)]
        return groups + ([("unmatched", self.unmatched)] if self.unmatched else []) + [("head", self.head)]

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def complete(self) -> bool:
        return self.architecture is not None and not self.unmatched and bool(self.layers)

    def require_layers(self, what: str) -> None:
        """One sentence for `what` (a method, an option) on a model whose layers are not known."""
        if self.complete:
            return
        if self.architecture is None:
            raise TunesmithError(f"{what} needs the model's layers from input to output, and tunesmith has no description of "
                                 f"'{self.model_type}' models (it knows {known_model_types()}); use --method full, head, bitfit, "
                                 f"or lora with --target-modules.")
        names = ", ".join(name for name, _ in self.unmatched[:3])
        raise TunesmithError(f"{what} needs every weight of this '{self.model_type}' model in a layer group, and tunesmith's "
                             f"{self.architecture} description matches none for {len(self.unmatched)} of them ({names}); "
                             f"use --method full, head, bitfit or lora, and report the model name so the description can cover it.")


def head_parameter_ids(model) -> set[int]:
    """The parameters outside the transformers base model: the head a task's AutoModelFor... class adds."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    base = getattr(inner, getattr(inner, "base_model_prefix", ""), None)
    if not isinstance(base, torch.nn.Module) or base is inner:
        return set()
    inside = {id(p) for p in base.parameters()}
    return {id(p) for p in model.parameters() if id(p) not in inside}


def parameter_groups(model: torch.nn.Module) -> ParameterGroups:
    architecture = architecture_of(model)
    groups = ParameterGroups(architecture=architecture.name if architecture else None, model_type=model_type_of(model))
    if architecture is None:
        outside = head_parameter_ids(model)
        for name, param in model.named_parameters():
            (groups.head if id(param) in outside else groups.unmatched).append((name, param))
        return groups
    embeddings, layers, head = architecture.compiled()
    fixed = re.compile(r"(?:^|\.)(?:" + architecture.fixed + ")") if architecture.fixed else None
    by_layer: dict[tuple[int, int], Params] = {}
    for name, param in model.named_parameters():
        key = layer_key(name, layers)
        if fixed is not None and fixed.search(name):
            groups.fixed.append((name, param))
        elif key is not None:
            by_layer.setdefault(key, []).append((name, param))
        elif head.search(name):
            groups.head.append((name, param))
        elif embeddings.search(name):
            groups.embeddings.append((name, param))
        else:
            groups.unmatched.append((name, param))
    groups.layers = [by_layer[key] for key in sorted(by_layer)]
    return groups


def layer_key(name: str, layers: list[re.Pattern]) -> tuple[int, int] | None:
    """(which layer pattern, block index) of a parameter, or None outside the layers."""
    for position, pattern in enumerate(layers):
        match = pattern.search(name)
        if match:
            return position, int(match.group(1)) if match.groups() else 0
    return None


def set_trainable(params, trainable: bool) -> None:
    for _, param in params:
        param.requires_grad_(trainable)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for param in model.parameters():
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
    return trainable, total


def frozen_prefix_length(groups: ParameterGroups) -> int:
    """How many groups, bottom up (embeddings, layer.0, layer.1, ...), have no trainable weight.

    Only a prefix that spans the embeddings and at least one layer counts as a feature extractor: with
    the embeddings alone frozen (LoRA, IA3, ...) nothing is returned, so those methods keep the usual
    dropout everywhere. Incomplete groups have no known prefix.
    """
    if not groups.complete:
        return 0
    length = 0
    for _, params in groups.ordered()[:-1]:  # the head always trains
        if not params or any(p.requires_grad for _, p in params):
            break
        length += 1
    return length if length >= 2 else 0


def user_targets(option: str | None) -> list[str] | None:
    """--target-modules 'query,value' -> ['query', 'value']; None when not given."""
    if not option:
        return None
    names = [n.strip() for n in option.split(",") if n.strip()]
    if not names:
        raise TunesmithError("--target-modules is empty; give comma-separated module names such as 'query,value'.")
    return names


# each import registers its families
from . import bert, distilbert, llama, mobilenet_v2, efficientnet_lite, whisper  # noqa: E402,F401
