"""What the three language-model tasks (chat, preference, causal-lm) share: the causal LM and its tokenizer as
training wants them, the per-row loss outputs and the loss/perplexity scores of the two that score text, and
the sampled, held-out splits of their one-table-per-role data."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..assets.resolve import load_pretrained
from ..data.packing import shifted_loss_rows
from ..methods.quantize import prepare_quantized, quantization_options
from .text_classification import set_dropout


def lm_tokenizer(source: str, model_cfg):
    """The tokenizer, its pad token the eos where it has none (padded positions are masked and carry no label)."""
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, source, model_cfg)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def build_causal_lm(source: str, model_cfg, dropout: float | None):
    """AutoModelForCausalLM with the given dropout (None: the model's own), no key/value cache in training forwards
    (generation turns it back on), and the base weights quantised under --quantize."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = load_pretrained(AutoConfig, source, model_cfg)
    set_dropout(config, dropout)
    config.use_cache = False
    model = load_pretrained(AutoModelForCausalLM, source, model_cfg, config=config, **quantization_options(model_cfg))
    return prepare_quantized(model, model_cfg)


def loss_rows(output, batch: dict) -> torch.Tensor:
    """(summed loss, target tokens) of each row of an evaluation batch."""
    sums, counts = shifted_loss_rows(output.logits, batch["labels"])
    return torch.stack([sums, counts.float()], 1)


def perplexity_scores(outputs: np.ndarray) -> dict:
    """Loss per target token and perplexity over every row of loss_rows' outputs."""
    total, targets = float(outputs[:, 0].sum()), float(outputs[:, 1].sum())
    mean = total / max(targets, 1.0)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "examples": int(len(outputs)), "target_tokens": int(targets)}


def sampled_held_out_splits(train, sources: dict, cfg, seed: int, read, unit: str):
    """(train, validation, test, notes): --max-train-examples sampled at random, then the --validation file or a random
    share of training (--val-fraction), and the --test file; `read(role)` reads a role's file in the task's columns."""
    from ..data.text_tables import sample_rows, split_off_random_validation

    notes = []
    if cfg.data.max_train_examples and len(train) > cfg.data.max_train_examples:
        rows, train = len(train), sample_rows(train, cfg.data.max_train_examples, seed)
        notes.append(f"Sampled {len(train):,} of {rows:,} training {unit} at random.")
    validation = test = None
    if sources.get("validation"):
        validation = read("validation")
    elif cfg.data.val_fraction != 0:
        train, validation, split_notes = split_off_random_validation(train, cfg.data.val_fraction, seed)
        notes += split_notes
    if sources.get("test"):
        test = read("test")
    return train, validation, test, notes
