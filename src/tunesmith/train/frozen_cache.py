"""Frozen bottom layers as a fixed feature extractor: eval mode, and outputs computed once.

When the embeddings and the bottom N transformer layers are frozen (methods `freeze` and `head`),
they are a fixed function of the input. Two things follow, both implemented here once:

1. They run in eval mode (no dropout) while the rest trains, whoever calls model.train(): a
   forward pre-hook sets the modes before every forward, so this holds on the cached and the
   uncached path alike (and follows gradual unfreezing as groups thaw).
2. Their outputs do not change between epochs, so `prepare_fit_inputs` computes them once for the
   training and validation examples (in memory, or in an unlinked memory-mapped file when large)
   and hands fit() a `TopOfModel` that runs only the remaining layers, pooler and classifier of
   the real model from those hidden states. The real model shares every parameter with it and is
   what gets saved; checkpoints carry the real model's parameter names, so a run can resume with
   the cache on or off.

Where a model can be split is its architecture's business (architectures/: BERT-family sequence
classifiers, MobileNetV2 image classifiers, Whisper audio classifiers); other models train uncached, with
one line saying so. Inputs that training augments (images) are cached as evaluation sees them: the cached
layers see no augmentation, and the run says so.
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data.batching import length_sorted_batches, move
from ..architectures import frozen_prefix_length, frozen_split


# -- which groups are frozen, and keeping them in eval mode -----------------------------------

def owning_module(model: nn.Module, params) -> nn.Module | None:
    """The smallest submodule holding exactly these parameters ('bert.encoder.layer.3'), or None."""
    if not params:
        return None
    common = os.path.commonprefix([name.split(".")[:-1] for name, _ in params])
    try:
        module = model.get_submodule(".".join(common))
    except AttributeError:
        return None
    return module if {id(p) for p in module.parameters()} == {id(p) for _, p in params} else None


class FrozenPrefixInEvalMode:
    """Forward pre-hook: the frozen prefix runs in eval mode, every other group in the model's mode; and a
    BatchNorm layer whose weights are all frozen keeps its running statistics (LoRA and the other adapters
    freeze them in every block: updating them would change the base model, which an adapter does not save)."""

    def __init__(self, real_model: nn.Module, groups):
        self.groups = groups
        self.modules = [owning_module(real_model, params) for _, params in groups.ordered()[:-1]]
        self.norms = [m for m in real_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __call__(self, model: nn.Module, args) -> None:
        frozen = frozen_prefix_length(self.groups)
        for depth, module in enumerate(self.modules):
            wanted = model.training and depth >= frozen
            if module is not None and module.training != wanted:
                module.train(wanted)
        for norm in self.norms:
            if model.training and norm.training and not any(p.requires_grad for p in norm.parameters()):
                norm.eval()


# -- the cache --------------------------------------------------------------------------------

@dataclass
class CachedFeatures:
    """Hidden states after the frozen layers: example i's rows are states[offsets[i]:offsets[i + 1]].

    `lengths` stay the token counts of the text, so batching (length grouping) and token counts
    are exactly those of the uncached run. Text keeps a row per token below the top layer and only the
    first token above it (the heads read nothing else); images and audio keep the same rows for every
    example (positions of a feature map, frames).
    """

    states: torch.Tensor | np.ndarray  # (total rows, width) float32; np.memmap when on disk
    offsets: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    per_token: bool

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, i: int) -> torch.Tensor:
        block = self.states[self.offsets[i]:self.offsets[i + 1]]
        return torch.from_numpy(np.ascontiguousarray(block)) if isinstance(block, np.ndarray) else block

    def collate(self, indices: list[int]) -> dict:
        counts = self.offsets[np.asarray(indices) + 1] - self.offsets[indices]
        hidden = torch.zeros(len(indices), int(counts.max()), self.states.shape[1])
        for row, i in enumerate(indices):
            hidden[row, :counts[row]] = self.rows(i)
        lengths = torch.as_tensor(self.lengths[indices])
        mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).long()
        batch = {"hidden_states": hidden, "attention_mask": mask}
        if self.labels is not None:
            batch["labels"] = torch.as_tensor(self.labels[indices])
        return batch


class CachedFeaturesTask:
    """The real task, with batches read from cached hidden states (loss, metrics, decoding unchanged)."""

    def __init__(self, task):
        self.task = task

    def collate(self, features: CachedFeatures, indices: list[int], pad_id: int) -> dict:
        return features.collate(indices)

    def __getattr__(self, name):
        return getattr(self.task, name)


def in_memory_limit_bytes() -> int:
    """Caches up to an eighth of the machine's memory stay in RAM; larger ones go to disk."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 8
    except (ValueError, OSError, AttributeError):
        return 2 << 30


def allocate(rows: int, width: int, disk_dir: Path, memory_limit: int):
    """A (rows, width) float32 array: a tensor in memory, or a memory-mapped file when above the limit."""
    if rows * width * 4 <= memory_limit:
        return torch.empty(rows, width, dtype=torch.float32)
    # unlinked at once: the mapping lives until the process ends, and a crash leaves no file behind
    fd, path = tempfile.mkstemp(prefix=".frozen-cache-", suffix=".f32", dir=disk_dir)
    os.close(fd)
    states = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, width))
    try:
        os.unlink(path)
    except OSError:  # Windows cannot delete a mapped file; it stays until the run folder is removed
        pass
    return states


def unaugmented(features):
    """The features as evaluation sees them: the cache holds one output per example, so no augmentation."""
    without = getattr(features, "without_augmentation", None)
    return without() if without is not None else features


@torch.no_grad()
def cache_hidden_states(split, task, features, num_layers: int, batch_size: int, pad_id: int, device,
                        autocast=None, disk_dir: Path | None = None, memory_limit: int | None = None) -> CachedFeatures:
    """Run the embeddings and the bottom `num_layers` layers once over every example."""
    per_token = split.per_token(num_layers)
    limit = in_memory_limit_bytes() if memory_limit is None else memory_limit
    source = unaugmented(features)
    states = offsets = rows = None
    was_training = split.model.training
    split.model.eval()
    for indices in length_sorted_batches(features.lengths, batch_size):
        batch = move(task.collate(source, indices, pad_id), device)
        with autocast() if autocast else torch.autocast("cpu", enabled=False):
            hidden = split.bottom(batch, num_layers).float().cpu()
        if states is None:  # the first batch tells the width, and the rows of models that keep the same rows for all
            rows = np.asarray(features.lengths, dtype=np.int64) if per_token else np.full(len(features), hidden.shape[1], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(rows)])
            states = allocate(int(offsets[-1]), hidden.shape[2], Path(disk_dir or tempfile.gettempdir()), limit)
        for row, i in enumerate(indices):
            block = hidden[row, :rows[i]]
            if isinstance(states, np.ndarray):
                states[offsets[i]:offsets[i + 1]] = block.numpy()
            else:
                states[offsets[i]:offsets[i + 1]] = block
    split.model.train(was_training)
    return CachedFeatures(states, offsets, np.asarray(features.lengths), features.labels, per_token)


class TopOfModel(nn.Module):
    """The real model above its cached frozen layers: layers start.., and the head.

    It takes {'hidden_states', 'attention_mask'} from CachedFeatures and returns an object with
    `.logits`, as the real model does. The real model is a submodule (so .to() moves it whole) and
    `named_parameters` gives its names unprefixed, so checkpoints match an uncached run's.
    """

    def __init__(self, split, groups, start: int):
        super().__init__()
        self.model = split.model
        self.split, self.start = split, start
        self.cached_parameters = [p for _, params in groups.ordered()[:start + 1] for _, p in params]  # embeddings + start layers
        self.train(split.model.training)  # a new Module starts in training mode; take the real model's

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        return self.model.named_parameters(prefix, recurse, remove_duplicate)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **unused):
        from transformers.modeling_outputs import SequenceClassifierOutput

        # a cached layer may be thawed after the last step (gradual), but it must not train
        if self.training and any(p.requires_grad for p in self.cached_parameters):
            raise RuntimeError("a layer whose outputs were cached was unfrozen during training; train with --cache-frozen off")
        return SequenceClassifierOutput(logits=self.split.top(hidden_states, attention_mask, self.start))


# -- wiring: what fit() gets ------------------------------------------------------------------

@dataclass
class FitInputs:
    """The model, task and features fit() trains on: the real ones, or their cached stand-ins."""

    model: nn.Module
    task: object
    train: object
    validation: object
    cached: bool = False
    cache_seconds: float = 0.0  # computing the cache is part of what training costs


def prepare_fit_inputs(model, task, train, validation, groups, cfg, pad_id: int, console, device, autocast=None,
                       frozen_throughout: int | None = None, disk_dir: Path | None = None) -> FitInputs:
    """Cache the frozen layers' outputs when that is possible, and keep frozen layers in eval mode.

    `frozen_throughout` is how many bottom groups stay frozen for the whole run (a method whose
    callbacks unfreeze groups must say; by default the groups frozen now stay frozen).
    """
    depth = frozen_prefix_length(groups) if frozen_throughout is None else min(frozen_throughout, frozen_prefix_length(groups))
    inputs = FitInputs(model, task, train, validation)
    # one pass over the data costs what the cache costs to build: it pays from the second epoch on
    wanted = depth >= 2 and cfg.train.cache_frozen == "auto" and (cfg.train.epochs is None or cfg.train.epochs > 1)
    split = frozen_split(model) if wanted else None
    if wanted and split is None:
        console.print(f"Frozen layers: outputs are not cached for {type(model).__name__} (only sequence classifiers of the BERT "
                      f"family, MobileNetV2 image and Whisper audio classifiers); they run every step.")
    if split is not None:
        layers = depth - 1  # the embeddings are group 0
        started = time.perf_counter()
        model.to(device)
        budget = in_memory_limit_bytes()  # shared by the training and validation caches

        def cache(features):
            nonlocal budget
            if features is None:
                return None
            cached = cache_hidden_states(split, task, features, layers, cfg.train.eval_batch_size, pad_id, device, autocast, disk_dir, budget)
            if isinstance(cached.states, torch.Tensor):
                budget -= cached.states.numel() * 4
            return cached

        inputs = FitInputs(TopOfModel(split, groups, layers), CachedFeaturesTask(task), cache(train), cache(validation), cached=True)
        inputs.cache_seconds = time.perf_counter() - started
        size = sum(f.states.shape[0] * f.states.shape[1] * 4 for f in (inputs.train, inputs.validation) if f is not None)
        where = "in memory" if isinstance(inputs.train.states, torch.Tensor) else "on disk"
        examples = len(train) + (len(validation) if validation is not None else 0)
        top = split.num_layers - 1
        rest = "the head" if layers > top else f"layer {top} and the head" if layers == top else f"layers {layers}-{top} and the head"
        augmented = " (without training augmentation: the cache holds each input once)" if unaugmented(train) is not train else ""
        console.print(f"Frozen layers: embeddings + {layers} layer{'s' * (layers > 1)} computed once for {examples:,} examples{augmented} "
                      f"({inputs.cache_seconds:.1f} s, {size / 2**20:,.0f} MB {where}); training runs {rest}.")
    inputs.model.register_forward_pre_hook(FrozenPrefixInEvalMode(model, groups))
    return inputs
