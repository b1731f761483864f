"""Shared fixtures: a tiny random-initialised BERT (seconds to train) and small labeled files."""
from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

# Tests never reach a model hub; embedded assets are fetched into a test-wide cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNESMITH_CACHE", str(Path.home() / ".cache" / "tunesmith"))

POSITIVE = ["good", "great", "lovely", "warm", "funny", "brilliant", "moving", "superb"]
NEGATIVE = ["bad", "dull", "boring", "awful", "flat", "tedious", "lifeless", "weak"]
FILLER = ["the", "film", "movie", "plot", "actors", "story", "was", "is", "a", "and", "very", "quite", "this", "it"]


def toy_reviews(n: int = 120, seed: int = 0, labels=("neg", "pos")) -> pd.DataFrame:
    """Short synthetic reviews whose label is given by a sentiment word: learnable in a few steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, rng.randint(2, 8))
        cue = rng.choice(POSITIVE if labels.index(label) % 2 else NEGATIVE)
        words.insert(rng.randint(0, len(words)), cue)
        rows.append({"review": " ".join(words), "sentiment": label})
    return pd.DataFrame(rows)


def build_tiny_model(folder: Path, layers: int = 2) -> Path:
    """A 2-layer BERT with hidden size 32 and a word-level vocabulary, saved as an HF folder."""
    from transformers import BertConfig, BertModel, BertTokenizerFast
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(POSITIVE + NEGATIVE + FILLER)) + list("abcdefghijklmnopqrstuvwxyz")
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def reviews_csv(tmp_path) -> Path:
    path = tmp_path / "reviews.csv"
    toy_reviews(160).to_csv(path, index=False)
    return path


@pytest.fixture
def tiny_options(tiny_model) -> dict:
    """Options for a run that takes seconds on the tiny model."""
    return {"model": str(tiny_model), "epochs": 8, "batch_size": 16, "lr": 3e-3, "eval_batch_size": 64,
            "early_stopping": 0, "checkpoint_every": 0, "threads": 2, "refit": "off",
            "precision": "fp32"}  # exact arithmetic checks; bf16 runs are tested on their own
