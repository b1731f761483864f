"""Continued pre-training (causal-lm): raw text in, every token a target, a language model that knows the text's domain.

The data are documents of plain text (data/raw_text.py: a .txt/.md file, a folder of them, or a text column of
any table), kept as passages of about one block each so that validation can hold out whole stretches of text.

Tokens are laid out as Hugging Face's run_clm.py lays them out (its `group_texts`): each split is one stream (its
documents in order, an end-of-text token after each, and the model's begin token before each where its tokenizer
writes one), cut into blocks of --max-length tokens. Every block is full but the last, so nothing is padded and
no mask is needed (the fast attention kernels apply), and attention runs across a document boundary inside a
block as in GPT-style pre-training: the end-of-text token is what tells the model a new text starts. Blocks
overlap by one token (block k starts with the last token of block k-1), so every token of the stream but its
first is a target exactly once; the last block holds what is left (at least one target, or it is dropped: its
one token was the previous block's last target). Packing documents apart (data/packing.py, a block-diagonal
mask) would keep each document's attention to itself, at the cost of an (L, L) mask per row and the fast
kernels; for continued pre-training on prose the standard concatenation is the better trade.

`predict` scores texts one by one instead (a table without the passage columns): each text's tokens up to
--max-length, its loss and perplexity. Default method: LoRA, as for chat: it adapts the attention and MLP
projections and leaves the pretrained embeddings and output layer (trains_output_head False), which is the
safe default on a CPU (a small, fast update and a small run folder) and forgets less of the model's general
language (Biderman et al. 2024, "LoRA Learns Less and Forgets Less"); --method full learns the domain more
deeply, and the forgetting measure (chat's: perplexity on a held-out general text before and after) shows what
that costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.packing import collate_unpacked, shifted_loss_sum, target_tokens
from ..data.raw_text import RAW_TEXT, documents_of, passage_chars, passages
from ..errors import TunesmithError
from . import register_task
from .language_model import build_causal_lm, lm_tokenizer, loss_rows, perplexity_scores, sampled_held_out_splits
from .protocol import Metric, Splits

STREAM_COLUMNS = ("document", "piece", "ends_document")  # a table with these is a stream of passages; without, texts scored alone
PROBE_TEXTS = ["The quick brown fox jumps over the lazy dog.", "Paris is the capital and largest city of France."]


@dataclass
class Block:
    """A run of token ids, every one a target (the model's shift leaves the first unpredicted)."""

    input_ids: list[int]

    @property
    def labels(self) -> list[int]:
        return self.input_ids


@dataclass
class TextFeatures:
    examples: list  # Blocks (or, for the forgetting text, chat's windows): anything with input_ids and labels
    lengths: np.ndarray  # tokens per example: the cost unit
    labels: np.ndarray  # target tokens per example

    def __len__(self) -> int:
        return len(self.examples)


def features_of(sequences: list[list[int]]) -> TextFeatures:
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    return TextFeatures([Block(list(s)) for s in sequences], lengths, np.maximum(lengths - 1, 0))


def begin_token(tokenizer) -> int | None:
    """The begin-of-text id when the model's tokenizer writes one before a text of its own accord (Llama 2 does, GPT-2 and SmolLM2 do not)."""
    bos = tokenizer.bos_token_id
    return bos if bos is not None and tokenizer("a")["input_ids"][:1] == [bos] else None


def token_stream(tokenizer, table: pd.DataFrame) -> list[int]:
    """The passages' tokens in document order: a begin token before each document where the model has one, the
    end-of-text token after each (a passage that ends it); passages of one document join as they were cut."""
    ordered = table.sort_values(["document", "piece"], kind="stable")  # a refit's training + validation back in order
    encoded = tokenizer(list(ordered["text"]), add_special_tokens=False)["input_ids"] if len(ordered) else []
    bos, eos = begin_token(tokenizer), tokenizer.eos_token_id
    ids: list[int] = []
    for piece, ends, tokens in zip(ordered["piece"], ordered["ends_document"], encoded):
        if piece == 0 and bos is not None:
            ids.append(bos)
        ids.extend(tokens)
        if ends and eos is not None:
            ids.append(eos)
    return ids


def cut_blocks(ids: list[int], max_length: int) -> list[list[int]]:
    """Blocks of max_length tokens, each starting with the previous block's last token: every token but the
    first is a target exactly once; the last block is what is left, dropped when it holds no target."""
    step = max_length - 1
    return [ids[start:start + max_length] for start in range(0, len(ids) - 1, step)]


def read_documents(path, encoding, role: str, trained_column: str | None, given_column: str | None) -> pd.Series:
    """The documents of a validation or test file: from --text-column when given, else the training file's text column
    when this file has one of that name, else the column found as training found its own."""
    from ..data.sources import read_data_file

    raw = read_data_file(path, encoding, role=role)
    return documents_of(raw, given_column or (trained_column if trained_column in raw.columns else None), path)[0]


def forgetting_path(setting: str) -> Path | None:
    if setting == "off":
        return None
    if setting == "auto":
        from ..assets.lm_assets import forgetting_text_file

        return forgetting_text_file()
    return Path(setting)


def refuse_training_on_forgetting_text(sources: dict, setting: str) -> None:
    """The general text forgetting is measured on must not be trained on (a refit trains on validation too)."""
    measured = forgetting_path(setting)
    for role in ("train", "validation"):
        given = sources.get(role)
        if measured is not None and given and Path(given).is_file() and Path(given).resolve() == measured.resolve():
            raise TunesmithError(f"The {role} file '{given}' is the text forgetting is measured on (--forgetting-text {setting}), so the "
                                 f"measure would mean nothing; train on another text, or pass --forgetting-text off or another file.")


@register_task("causal-lm")
class CausalLM:
    pipeline_task = "text-generation"
    default_model = "smollm2-135m"
    default_method = "lora"  # see the module docstring
    default_max_length = 1024
    inference_tokens = 2048  # an evaluation batch's logits span the vocabulary (chat's measurement: tasks/chat.py)
    micro_batch_tokens = 1024  # a training micro-batch, as chat's (about 6 MB a token of activations on smollm2-135m)
    model_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    trains_output_head = False
    tunes_on_validation = False
    metrics = (Metric("loss", higher_is_better=False, title="loss"), Metric("perplexity", higher_is_better=False))
    predict_example = '"a sentence in the style of your text"'
    scores_before_training = True  # the base model's held-out perplexity, printed and stored beside the trained one's

    def __init__(self, text_column: str | None = None, forgetting_text: str = "off"):
        self.text_column, self.forgetting_text = text_column, forgetting_text

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        """Plain text only (a table of one text column may be anything: --task causal-lm says so). A .txt that holds
        a delimited table is refused rather than trained on as prose: it is likelier a CSV under the wrong name."""
        if not raw.attrs.get(RAW_TEXT):
            return None
        source, table = raw.attrs.get("raw_text_source"), raw.attrs.get("raw_text_table")
        if table:
            raise TunesmithError(f"'{source}' looks like a table saved under an unknown format ('{Path(source).suffix}'): {table}; rename it "
                                 f"to .csv (or .tsv) to train on its columns, or pass --task causal-lm to train a language model on it as plain text.")
        files = raw.attrs.get("raw_text_files", 1)
        return f"plain text ({files:,} text files)" if Path(source).is_dir() else "a plain-text file"

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["CausalLM", Splits]:
        path = sources["train"]
        refuse_training_on_forgetting_text(sources, cfg.task.forgetting_text)
        documents, column, notes = documents_of(raw, cfg.data.text_column, path)
        max_chars = passage_chars(documents, cfg.model.max_length)
        train = passages(documents, max_chars)
        if len(train) > len(documents):
            notes.append(f"Cut the {len(documents):,} document{'s' if len(documents) != 1 else ''} into {len(train):,} passages of about "
                         f"{max_chars:,} characters at paragraph, line or sentence ends, so that validation holds out whole passages.")
        # cut as training is (only the counts differ: a split's passages join into one stream again)
        read = lambda role: passages(read_documents(sources[role], cfg.data.encoding, role, column, cfg.data.text_column), max_chars)  # noqa: E731
        train, validation, test, split_notes = sampled_held_out_splits(train, sources, cfg, seed, read, "passages")
        notes += split_notes
        sizes = [f"{len(train):,} train"] + [f"{len(t):,} {n}" for n, t in (("validation", validation), ("test", test)) if t is not None]
        chars, docs = int(train["text"].str.len().sum()), train["document"].nunique()
        layout = "plain text, documents split at two or more blank lines" if column is None else f"text column '{column}', one document a row"
        return cls(column, cfg.task.forgetting_text), Splits(
            train, validation, test, {k: v for k, v in sources.items() if v}, notes,
            validation_from_split=validation is not None and not sources.get("validation"),
            summary=f"{' / '.join(sizes)} passages, {chars:,} characters of {docs:,} document{'s' if docs != 1 else ''} in training",
            columns=layout)

    @classmethod
    def from_record(cls, record: dict) -> "CausalLM":
        return cls(record.get("text_column"), record.get("forgetting_text", "off"))

    def record(self) -> dict:
        return {"text_column": self.text_column, "forgetting_text": self.forgetting_text}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "loss", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        return lm_tokenizer(source, model_cfg)  # only the last block of a split is short; its padding carries no label

    def build_model(self, source: str, model_cfg):
        return build_causal_lm(source, model_cfg, model_cfg.dropout)

    def reference_features(self, tokenizer, max_length: int):
        """(what it is, features) of the general text forgetting is measured on, windowed as chat windows it (the same
        numbers for both tasks); None with --forgetting-text off."""
        from .chat import Chat

        return Chat(forgetting_text=self.forgetting_text).reference_features(tokenizer, max_length)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> TextFeatures:
        """A stream of passages (training, validation, test, eval: the columns of STREAM_COLUMNS) as blocks; any other
        table of texts (predict) one example per text, cut to max_length tokens."""
        if all(c in table.columns for c in STREAM_COLUMNS):
            ids = token_stream(tokenizer, table)
            blocks = cut_blocks(ids, max_length)
            if not blocks:
                raise TunesmithError(f"A split holds {len(ids)} token{'s' if len(ids) != 1 else ''} of text, too few to learn or score (a block "
                                     f"needs two); give it more text.")
            return features_of(blocks)
        begin = [] if begin_token(tokenizer) is None else [begin_token(tokenizer)]
        texts = list(table["text"])
        encoded = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length - len(begin))["input_ids"] if texts else []
        return features_of([begin + list(ids) for ids in encoded])

    def collate(self, features: TextFeatures, indices: list[int], pad_id: int) -> dict:
        """Rows of one example each: blocks are all --max-length long but a split's last, so only that one pads."""
        return collate_unpacked(features.examples, indices, pad_id)

    def target_count(self, labels: torch.Tensor) -> int:
        return target_tokens(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of every next token; the loop divides by the step's targets."""
        return shifted_loss_sum(output.logits, labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        """(summed loss, target tokens) of each row: a block, or a text scored alone."""
        return loss_rows(output, batch)

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        return perplexity_scores(outputs)

    def tune(self, outputs, features) -> dict:
        return {}

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        return []

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        return [f"Held-out {split} loss {scores['loss']:.4f} per token (perplexity {scores['perplexity']:.2f}) over "
                f"{scores['target_tokens']:,} tokens in {scores['examples']:,} blocks."]

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        """A stream's rows are its blocks (test_predictions.csv); texts scored alone are one row each."""
        stream = all(c in table.columns for c in STREAM_COLUMNS)
        out = pd.DataFrame(index=range(len(outputs)))
        if stream:
            out["block"] = np.arange(1, len(outputs) + 1)
        elif with_inputs:
            out["text"] = list(table["text"])
        losses = outputs[:, 0] / np.maximum(outputs[:, 1], 1)
        out["loss"] = np.where(outputs[:, 1] > 0, losses, np.nan).round(5)
        out["perplexity"] = np.exp(np.minimum(out["loss"], 50.0)).round(4)
        out["tokens"] = outputs[:, 1].astype(int)
        return out

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        """Each text's loss per token, perplexity and the tokens scored (all but its first, up to --max-length); a
        one-token text has nothing to score: loss and perplexity None."""
        records = []
        for total, count in outputs:
            loss = float(total / count) if count else None
            records.append({"loss": loss, "perplexity": math.exp(min(loss, 50.0)) if count else None, "tokens": int(count)})
        return records

    def describe_prediction(self, record: dict) -> str:
        if record["loss"] is None:
            return "too short to score (one token)"
        return f"perplexity {record['perplexity']:.2f} (loss {record['loss']:.4f} over {record['tokens']} tokens)"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        if pairs is not None or not all(isinstance(x, str) and x.strip() for x in inputs):
            raise TunesmithError("A causal-lm run's predict scores texts by their perplexity: give it non-empty strings (no pairs).")
        return pd.DataFrame({"text": list(inputs)})

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """predict --file: one text per document (a row of a table, a document of a text file), scored alone; eval: the
        file as one stream of blocks, as validation is scored (with_labels: every token is its own label)."""
        from ..data.sources import read_data_file

        raw = read_data_file(path, data_cfg.encoding, role="input")
        given = column or (self.text_column if self.text_column in raw.columns else None) or data_cfg.text_column
        documents, _, _ = documents_of(raw, given, path)
        table = passages(list(documents), None) if with_labels else pd.DataFrame({"text": list(documents)})
        return table, raw.loc[documents.index].reset_index(drop=True)

    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame({"text": PROBE_TEXTS})
