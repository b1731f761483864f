"""Named parameter groups, bottom to top: embeddings, layer 0..L-1, head.

Freezing the bottom N layers, gradual unfreezing and layer-wise learning-rate decay are small
functions over these groups, so they work on every architecture family listed here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

# Where each family keeps its stacked blocks; the first pattern that matches a name wins.
LAYER_PATTERNS = (
    re.compile(r"(?:^|\.)encoder\.layers?\.(\d+)\."),    # BERT, RoBERTa, ELECTRA, Whisper encoder
    re.compile(r"(?:^|\.)transformer\.layer\.(\d+)\."),  # DistilBERT
    re.compile(r"(?:^|\.)layers\.(\d+)\."),              # Llama, Mistral, Gemma, Qwen
    re.compile(r"(?:^|\.)h\.(\d+)\."),                   # GPT-2, GPT-J
    re.compile(r"(?:^|\.)blocks?\.(\d+)\."),             # vision transformers, conv stages
)
EMBEDDING_PATTERN = re.compile(r"(?:^|\.)(embeddings|embed_tokens|wte|wpe|word_embeddings|embed_positions|shared)(?:\.|$)")


@dataclass
class ParameterGroups:
    embeddings: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)
    layers: list[list[tuple[str, torch.nn.Parameter]]] = field(default_factory=list)
    head: list[tuple[str, torch.nn.Parameter]] = field(default_factory=list)

    def ordered(self) -> list[tuple[str, list[tuple[str, torch.nn.Parameter]]]]:
        """[('embeddings', ...), ('layer.0', ...), ..., ('head', ...)], bottom to top."""
        return [("embeddings", self.embeddings)] + [(f"layer.{i}", p) for i, p in enumerate(self.layers)] + [("head", self.head)]

    @property
    def num_layers(self) -> int:
        return len(self.layers)


def layer_index(name: str) -> int | None:
    for pattern in LAYER_PATTERNS:
        match = pattern.search(name)
        if match:
            return int(match.group(1))
    return None


def parameter_groups(model: torch.nn.Module) -> ParameterGroups:
    groups = ParameterGroups()
    by_layer: dict[int, list] = {}
    for name, param in model.named_parameters():
        index = layer_index(name)
        if index is not None:
            by_layer.setdefault(index, []).append((name, param))
        elif EMBEDDING_PATTERN.search(name):
            groups.embeddings.append((name, param))
        else:
            groups.head.append((name, param))
    groups.layers = [by_layer[i] for i in sorted(by_layer)]
    return groups


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


def frozen_prefix_length(groups) -> int:
    """How many groups, bottom up (embeddings, layer.0, layer.1, ...), have no trainable weight.

    Only a prefix that spans the embeddings and at least one transformer layer counts as a
    feature extractor: with the embeddings alone frozen (LoRA, IA3, ...) nothing is returned, so
    those methods keep the usual dropout everywhere.
    """
    length = 0
    for _, params in groups.ordered()[:-1]:  # the head always trains
        if not params or any(p.requires_grad for _, p in params):
            break
        length += 1
    return length if length >= 2 else 0
