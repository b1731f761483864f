"""Token classification (NER): a tag per word in, entity spans out.

Data are sentences as word lists with one tag each (CoNLL files, or JSON/JSONL token and tag
lists: data/conll.py reads both into `tokens` / `tags` columns). The model labels sub-tokens, so
words are tokenized with `is_split_into_words=True` and each word's label sits on its first
sub-token; the other sub-tokens and the special tokens get -100, which the loss ignores (as
transformers' run_ner.py does with label_all_tokens=False). Predictions are read back the same
way: a word's tag is the arg-max at its first sub-token, which is what
`pipeline("token-classification", aggregation_strategy="first")` does, so a run folder gives
the same entities in plain transformers as through `tunesmith predict`.

Entity scores are seqeval's (tasks/entities.py, checked against seqeval 1.2.2), in the mode of
--entity-mode, on whole sentences: words cut off by --max-length are predicted O and count as missed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data.batching import pad_batch
from ..errors import TunesmithError
from . import register_task
from .entities import (check_tag_lists, detect_scheme, entity_scores, entity_spans, entity_types, label_space, repair_note,
                       repair_tag_lists, spans_with_offsets)
from .protocol import Metric, Splits
from .text_classification import load_tokenizer, set_dropout

IGNORE = -100  # the label of sub-tokens the loss and the scores skip
PROBE_SENTENCES = [["John", "Smith", "flew", "to", "Paris", "on", "Monday"], ["the", "film", "was", "great"]]


@dataclass
class TokenFeatures:
    """Sub-token ids per sentence (unpadded), their word index (None for special tokens), labels per
    sub-token (IGNORE off first sub-tokens; None unlabeled), and the gold word tags when labeled."""

    input_ids: list[list[int]]
    lengths: np.ndarray
    word_ids: list[list[int | None]]
    words: list[int]  # words in each sentence, those cut off by max_length included
    labels: list[np.ndarray] | None
    gold: list[list[str]] | None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_words(tokenizer, word_lists, max_length: int, truncation: bool = True):
    """The tokenizer's encoding of pre-split sentences; a tokenizer that cannot take words is one sentence."""
    if not getattr(tokenizer, "is_fast", False):
        raise TunesmithError("Token classification needs a fast (Rust) tokenizer, which maps sub-tokens back to words; this model's "
                             "tokenizer is a slow one: choose a --model with a tokenizer.json.")
    try:
        return tokenizer([list(words) for words in word_lists], is_split_into_words=True, truncation=truncation,
                         max_length=max_length if truncation else None)
    except (ValueError, TypeError) as exc:  # e.g. a BPE tokenizer without add_prefix_space=True
        raise TunesmithError(f"The tokenizer of this model cannot encode pre-split words ({str(exc).splitlines()[0][:120]}); "
                             f"choose a BERT-style --model such as minilm-l6.") from None


def text_words(tokenizer, text: str) -> dict[int, tuple[int, int]]:
    """Word index -> (start, end) characters of that word of raw text, as the tokenizer's own
    pre-tokenizer splits it (transformers' token-classification pipeline groups sub-tokens into the
    same words); a word that gives no sub-token is absent."""
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    spans: dict[int, tuple[int, int]] = {}
    for word, (start, end) in zip(encoding.word_ids(), encoding["offset_mapping"]):
        if word is not None:
            first, last = spans.get(word, (start, end))
            spans[word] = (min(first, start), max(last, end))
    return spans


def first_subtokens(word_ids: list[int | None]) -> dict[int, int]:
    """Word index -> position of its first sub-token (words cut off, or with no sub-token, are absent)."""
    first: dict[int, int] = {}
    for position, word in enumerate(word_ids):
        if word is not None and word not in first:
            first[word] = position
    return first


@register_task("token-classification")
class TokenClassification:
    pipeline_task = "token-classification"
    default_model = "minilm-l6"
    model_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    trains_output_head = True
    tunes_on_validation = False
    metrics = (Metric("f1", title="entity F1"), Metric("precision", title="entity precision"), Metric("recall", title="entity recall"),
               Metric("token_accuracy", title="token accuracy"), Metric("loss", higher_is_better=False))

    def __init__(self, label_names: list[str], scheme: str = "BIO", entity_mode: str = "default",
                 text_column: str = "tokens", label_column: str = "tags"):
        self.label_names = list(label_names)
        self.label_ids = {name: i for i, name in enumerate(self.label_names)}
        self.scheme, self.entity_mode = scheme, entity_mode
        self.text_column, self.label_column = text_column, label_column  # the token and tag list columns
        self.tokenizer = self.max_length = None  # remembered by encode: predictions map sub-tokens to words with them

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        from ..data.conll import token_columns

        columns = token_columns(raw, data_cfg.text_column, data_cfg.label_column)
        return f"a list of tokens ('{columns[0]}') and of tags ('{columns[1]}') per sentence" if columns else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["TokenClassification", Splits]:
        """Token and tag lists checked, tags repaired into one scheme, splits made, over-long sentences counted."""
        from ..data.conll import sample_sentences, split_sentences
        from . import resolve_max_length

        resolve_max_length(cfg, cls)  # a direct caller's automatic --max-length (the job resolves it first)
        path, notes = sources["train"], []
        token_col, tag_col = require_token_columns(raw, cfg.data, path)
        train = read_sentences(raw, token_col, tag_col, path)
        scheme = detect_scheme(chain.from_iterable(train["tags"]), path)
        types = entity_types(chain.from_iterable(train["tags"]))
        if not types:
            raise TunesmithError(f"Every tag in '{path}' is O, so there are no entities to learn; tag the entities' words "
                                 f"(B-TYPE on an entity's first word, I-TYPE on the rest, such as B-PER I-PER).")
        notes += repair_split(train, scheme, path)
        if cfg.data.max_train_examples and len(train) > cfg.data.max_train_examples:
            rows = len(train)
            train = sample_sentences(train, cfg.data.max_train_examples, seed)
            notes.append(f"Sampled {len(train):,} of {rows:,} training sentences.")
        validation = test = None
        if sources["validation"]:
            validation = read_other_split("validation", sources, (token_col, tag_col), cfg.data, scheme, types, notes)
        elif cfg.data.val_fraction != 0:
            train, validation, why = split_sentences(train, cfg.data.val_fraction, seed, path)
            notes += why
        if sources["test"]:
            test = read_other_split("test", sources, (token_col, tag_col), cfg.data, scheme, types, notes)
        task = cls(label_space(types, scheme), scheme, cfg.task.entity_mode, token_col, tag_col)
        notes += task.length_notes(cfg.model, {"train": train, "validation": validation, "test": test})
        splits = Splits(train, validation, test, {k: v for k, v in sources.items() if v}, notes,
                        validation_from_split=validation is not None and not sources["validation"],
                        columns=f"token column '{token_col}', tag column '{tag_col}'")
        splits.summary = describe_splits(splits, types, scheme, len(task.label_names))
        return task, splits

    def length_notes(self, model_cfg, tables: dict) -> list[str]:
        """Notes on sentences longer than --max-length in sub-tokens (truncated, words counted) and on
        words that give no sub-token at all; both are predicted O and, if entities, count as missed."""
        from transformers import AutoTokenizer

        from ..assets.resolve import resolve_model_source

        tokenizer = load_pretrained(AutoTokenizer, resolve_model_source(model_cfg.model), model_cfg)
        notes = []
        for role, table in tables.items():
            if table is None:
                continue
            full = encode_words(tokenizer, table["tokens"], model_cfg.max_length, truncation=False)
            cut = encode_words(tokenizer, table["tokens"], model_cfg.max_length)
            long_rows = [i for i, ids in enumerate(full["input_ids"]) if len(ids) > model_cfg.max_length]
            lost = sum(len(table["tokens"].iloc[i]) - len(first_subtokens(cut.word_ids(i))) for i in long_rows)
            if long_rows:
                longest = max(len(full["input_ids"][i]) for i in long_rows)
                notes.append(f"{len(long_rows):,} {role} sentence{'s are' if len(long_rows) > 1 else ' is'} longer than --max-length "
                             f"{model_cfg.max_length} sub-tokens (the longest has {longest:,}) and {'were' if len(long_rows) > 1 else 'was'} "
                             f"truncated: {lost:,} word{'s' * (lost != 1)} cut off, which the model never sees and which are predicted O (an entity among them "
                             f"counts as missed); raise --max-length to keep them.")
            empty = sum(len(tokens) - len(first_subtokens(full.word_ids(i))) for i, tokens in enumerate(table["tokens"]) if i not in set(long_rows))
            if empty:
                notes.append(f"{empty:,} {role} word{'s give' if empty > 1 else ' gives'} no sub-token with this model's tokenizer "
                             f"(invisible characters, for example) and {'are' if empty > 1 else 'is'} always predicted O.")
        return notes

    @classmethod
    def from_record(cls, record: dict) -> "TokenClassification":
        return cls(record["label_names"], record.get("scheme", "BIO"), record.get("entity_mode", "default"),
                   record.get("text_column", "tokens"), record.get("label_column", "tags"))

    def record(self) -> dict:
        return {"label_names": self.label_names, "scheme": self.scheme, "entity_mode": self.entity_mode,
                "text_column": self.text_column, "label_column": self.label_column}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "f1", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        return load_tokenizer(source, model_cfg)

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForTokenClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=len(self.label_names),
                                 id2label=dict(enumerate(self.label_names)), label2id=dict(self.label_ids))
        set_dropout(config, model_cfg.dropout)
        return load_pretrained(AutoModelForTokenClassification, source, model_cfg, config=config)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> TokenFeatures:
        """Sentences (`tokens`, or raw `text` split as the tokenizer splits it) -> sub-token ids, labels on first sub-tokens."""
        self.tokenizer, self.max_length = tokenizer, max_length
        if "tokens" in table:
            encoded = encode_words(tokenizer, table["tokens"], max_length)
            words = [len(tokens) for tokens in table["tokens"]]
        else:
            encoded = tokenizer(table["text"].tolist(), truncation=True, max_length=max_length)
            words = [max(text_words(tokenizer, text), default=-1) + 1 for text in table["text"]]
        ids = encoded["input_ids"]
        word_ids = [encoded.word_ids(i) for i in range(len(ids))]
        labels = gold = None
        if "tags" in table:
            gold = [list(tags) for tags in table["tags"]]
            labels = [self.sub_token_labels(wids, tags) for wids, tags in zip(word_ids, gold)]
        return TokenFeatures(ids, np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), word_ids, words, labels, gold)

    def sub_token_labels(self, word_ids: list[int | None], tags: list[str]) -> np.ndarray:
        labels = np.full(len(word_ids), IGNORE, dtype=np.int64)
        for word, position in first_subtokens(word_ids).items():
            labels[position] = self.label_ids[tags[word]]
        return labels

    def collate(self, features: TokenFeatures, indices: list[int], pad_id: int) -> dict:
        ids, mask = pad_batch([features.input_ids[i] for i in indices], pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if features.labels is not None:
            batch["labels"], _ = pad_batch([features.labels[i] for i in indices], IGNORE)
        return batch

    def target_count(self, labels: torch.Tensor) -> int:
        return int((labels != IGNORE).sum())

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Cross-entropy summed over the labeled sub-tokens: the loop divides by the step's labeled tokens."""
        logits = output.logits.float()
        total = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), ignore_index=IGNORE, reduction="sum")
        return total, self.target_count(labels)

    def outputs(self, output, batch: dict) -> list[np.ndarray]:
        """One (sub-tokens, labels) logit array per sentence, padding cut off (right-padded batches)."""
        logits = output.logits.float().cpu().numpy()
        lengths = batch["attention_mask"].sum(1).tolist()
        return [logits[row, :length] for row, length in enumerate(lengths)]

    # -- from sub-tokens back to words ------------------------------------------------------
    def word_tags(self, logits: np.ndarray, word_ids: list[int | None], words: int) -> tuple[list[str], np.ndarray]:
        """Each word's tag (the arg-max at its first sub-token; O for a word cut off) and that tag's probability."""
        probs = torch.softmax(torch.as_tensor(logits), -1).numpy()
        tags, scores = ["O"] * words, np.zeros(words)
        for word, position in first_subtokens(word_ids).items():
            best = int(probs[position].argmax())
            tags[word], scores[word] = self.label_names[best], float(probs[position, best])
        return tags, scores

    def predicted_tags(self, outputs, table: pd.DataFrame) -> tuple[list[list[str]], list[np.ndarray]]:
        """Word tags and their probabilities for every row of the table `encode` last saw."""
        if self.tokenizer is None:
            raise RuntimeError("encode the table before reading its predictions")
        features = self.encode(self.tokenizer, table.drop(columns=["tags"], errors="ignore"), self.max_length)
        pairs = [self.word_tags(out, wids, n) for out, wids, n in zip(outputs, features.word_ids, features.words)]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs, features: TokenFeatures, loss: float | None = None) -> dict:
        predicted = [self.word_tags(out, wids, n)[0] for out, wids, n in zip(outputs, features.word_ids, features.words)]
        scheme = self.scheme if self.entity_mode == "strict" else None
        entities = entity_scores(features.gold, predicted, mode=self.entity_mode, scheme=scheme)
        words = sum(len(tags) for tags in features.gold)
        correct = sum(p == g for pred, gold in zip(predicted, features.gold) for p, g in zip(pred, gold))
        result = {"f1": entities["f1"], "precision": entities["precision"], "recall": entities["recall"],
                  "token_accuracy": correct / max(words, 1), "macro_f1": entities["macro_f1"],
                  "entities": entities["support"], "predicted_entities": entities["predicted"],
                  "per_class": entities["per_type"], "entity_mode": self.entity_mode, "examples": len(features), "words": words}
        if loss is not None:
            result["loss"] = float(loss)
        return result

    def tune(self, outputs, features) -> dict:
        return {}  # the arg-max tag: nothing to tune

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        if scores.get("entities") and not scores.get("predicted_entities"):
            return [f"The model tags every word of the {split} sentences O and finds none of their {scores['entities']:,} entities: "
                    f"it has not learned the task yet. Train longer (--epochs) or with a higher --lr."]
        return []

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        per_type = sorted((scores.get("per_class") or {}).items(), key=lambda item: -item[1]["support"])
        shown = ", ".join(f"{name} {m['f1']:.2f} (n={m['support']})" for name, m in per_type)
        return [f"Entity F1 per type ({split}, {self.entity_mode} mode): {shown}."] if shown else []

    def entities_of(self, table: pd.DataFrame, row: int, tags: list[str], scores: np.ndarray) -> list[dict]:
        """A row's entities: character offsets into raw text, or word positions (end exclusive) into a token list."""
        if "tokens" not in table:
            text = table["text"].iloc[row]
            spans = text_words(self.tokenizer, text)
            offsets = [spans[w] for w in sorted(spans)]
            return spans_with_offsets([text[s:e] for s, e in offsets], offsets, [tags[w] for w in sorted(spans)],
                                      [scores[w] for w in sorted(spans)], text)
        tokens = list(table["tokens"].iloc[row])
        return [{"type": type_, "text": " ".join(tokens[start:end]), "word_start": start, "word_end": end,
                 "score": float(np.mean(scores[start:end]))} for type_, start, end in entity_spans(tags, "default")]

    def predictions_table(self, outputs, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        """Lists as JSON text (a CSV cell holds one string): tokens, gold tags, predicted tags, entities."""
        tags, scores = self.predicted_tags(outputs, table)
        out = pd.DataFrame(index=range(len(tags)))
        if with_inputs:
            if "tokens" in table:
                out["tokens"] = [json.dumps(list(t), ensure_ascii=False) for t in table["tokens"]]
            else:
                out["text"] = table["text"].to_numpy()
            if "tags" in table:
                out["tags"] = [json.dumps(list(t)) for t in table["tags"]]
        out["predicted_tags"] = [json.dumps(t) for t in tags]
        out["entities"] = [json.dumps(self.entities_of(table, i, t, s), ensure_ascii=False) for i, (t, s) in enumerate(zip(tags, scores))]
        return out

    def predict_records(self, outputs, table: pd.DataFrame) -> list[dict]:
        tags, scores = self.predicted_tags(outputs, table)
        return [{"entities": self.entities_of(table, i, t, s), "tags": t} for i, (t, s) in enumerate(zip(tags, scores))]

    def describe_prediction(self, record: dict) -> str:
        found = [f"{e['type']} {e['text']!r} {e['score']:.3f}" for e in record["entities"]]
        return "; ".join(found) if found else "(no entities)"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """Raw texts (a string or a list of them), or pre-split sentences (a list of word lists)."""
        if pairs is not None:
            raise TunesmithError("Token classification tags one text at a time; drop the text pairs.")
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        if items and all(isinstance(item, (list, tuple)) for item in items):
            if any(not words or not all(isinstance(w, str) and w.strip() for w in words) for words in items):
                raise TunesmithError("Each pre-split sentence must be a non-empty list of non-empty word strings.")
            return pd.DataFrame({"tokens": [list(words) for words in items]})
        texts = [str(item) for item in items]
        if any(not text.strip() for text in texts):
            raise TunesmithError("A text to tag is empty; give every text at least one word.")
        return pd.DataFrame({"text": texts})

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A token file (CoNLL, JSON/JSONL lists; with gold tags for eval) or raw texts (a text column, or a .txt file of one text a line)."""
        from ..data.columns import choose_text_column, clean_text, require_column
        from ..data.conll import is_list_cell, read_text_lines, token_columns
        from ..data.sources import read_data_file

        raw = read_text_lines(path, data_cfg.encoding) if is_plain_text(path) else read_data_file(path, data_cfg.encoding, role="input")
        columns = token_columns(raw, column, self.label_column) or token_columns(raw, column)
        words_only = token_list_column(raw, column or self.text_column) if columns is None and not with_labels else None
        if words_only is not None:  # sentences to tag, without gold tags
            table = read_sentences(raw.assign(_tags=raw[words_only].map(lambda cell: ["O"] * (len(cell) if is_list_cell(cell) else 0))), words_only, "_tags", path)
            return table.drop(columns=["tags"]), raw
        if columns is None and with_labels:
            raise TunesmithError(f"'{path}' has no token and tag lists, which scoring needs; give a CoNLL file (a token and its tag a line) "
                                 f"or JSON/JSONL rows with a '{self.text_column}' list and a '{self.label_column}' list.")
        if columns is not None:
            table = read_sentences(raw, *columns, path)
            if not with_labels:
                return table.drop(columns=["tags"]), raw
            types = set(entity_types(chain.from_iterable(table["tags"])))
            unseen = sorted(types - set(entity_types(self.label_names)))
            if unseen:
                raise TunesmithError(f"'{path}' has entity types this model never saw in training ({', '.join(map(repr, unseen[:5]))}); "
                                     f"it knows {', '.join(map(repr, entity_types(self.label_names)[:10]))}.")
            table["tags"], _ = repair_tag_lists(table["tags"], self.scheme)  # into the run's scheme, as training read its files
            return table, raw
        text = column or choose_text_column(raw, path).column
        return pd.DataFrame({"text": clean_text(raw, require_column(raw, text, path, "--text-column"), path)}), raw

    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame({"tokens": PROBE_SENTENCES})


# -- preparing the splits ---------------------------------------------------------------------------

def require_token_columns(raw: pd.DataFrame, data_cfg, path) -> tuple[str, str]:
    """The token and tag list columns (--text-column / --label-column, or inferred), or what to give instead."""
    from ..data.conll import token_columns

    columns = token_columns(raw, data_cfg.text_column, data_cfg.label_column)
    if columns is None:
        named = " (check --text-column and --label-column: both must name list columns)" if data_cfg.text_column or data_cfg.label_column else ""
        raise TunesmithError(f"'{path}' holds no token and tag lists{named}; token classification reads a CoNLL file (a token and its tag "
                             f"a line, a blank line between sentences) or JSON/JSONL rows such as "
                             f'{{"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]}}.')
    return columns


def token_list_column(raw: pd.DataFrame, preferred: str | None):
    """The column holding token lists of a file without tags: the one named, else tokens/words/..., else None."""
    from ..data.conll import TOKEN_COLUMN_NAMES, list_columns

    by_lower = {str(c).strip().lower(): c for c in list_columns(raw)}
    return next((by_lower[n.lower()] for n in (preferred, *TOKEN_COLUMN_NAMES) if n and n.lower() in by_lower), None)


def read_sentences(raw: pd.DataFrame, token_col: str, tag_col: str, path) -> pd.DataFrame:
    """`tokens` and `tags` lists of equal length per row (named rows and fixes otherwise), every tag an entity tag or O."""
    from ..data.conll import token_table

    table = token_table(raw, token_col, tag_col, path)
    check_tag_lists(table["tags"], path)
    return table


def repair_split(table: pd.DataFrame, scheme: str, path) -> list[str]:
    """Tags out of order rewritten in place into `scheme`; a note when any changed."""
    table["tags"], fixes = repair_tag_lists(table["tags"], scheme)
    return [repair_note(fixes, scheme, path)] if fixes else []


def read_other_split(role: str, sources: dict, columns: tuple[str, str], data_cfg, scheme: str, types: list[str], notes: list[str]) -> pd.DataFrame:
    """The validation or test file, read with the training file's columns, its tags in the training scheme."""
    from ..data.conll import token_columns
    from ..data.sources import read_data_file

    path = sources[role]
    raw = read_data_file(path, data_cfg.encoding, role=role)
    found = token_columns(raw, *columns) or token_columns(raw, data_cfg.text_column, data_cfg.label_column)
    if found is None:
        raise TunesmithError(f"The {role} file '{path}' holds no token and tag lists like the training file's ('{columns[0]}', '{columns[1]}'); "
                             f"give it in the same format.")
    table = read_sentences(raw, *found, path)
    unseen = sorted(set(entity_types(chain.from_iterable(table["tags"]))) - set(types))
    if unseen:
        raise TunesmithError(f"The {role} file '{path}' has entity types never seen in training ({', '.join(map(repr, unseen[:5]))}); "
                             f"the model can only tag {', '.join(map(repr, types[:10]))}: fix those tags or add training sentences with them.")
    notes += repair_split(table, scheme, path)
    return table


def describe_splits(splits: Splits, types: list[str], scheme: str, labels: int) -> str:
    parts = [f"{len(t):,} {name}" for name, t in (("train", splits.train), ("validation", splits.validation), ("test", splits.test)) if t is not None]
    shown = ", ".join(types[:8]) + (", ..." if len(types) > 8 else "")
    return f"{' / '.join(parts)} sentences, {len(types)} entity type{'s' * (len(types) > 1)} ({shown}), {scheme} tags ({labels} labels)"


def is_plain_text(path) -> bool:
    """A .txt file that is not CoNLL: one text to tag a line."""
    from pathlib import Path

    from ..data.conll import looks_like_conll

    return Path(path).suffix.lower() == ".txt" and Path(path).is_file() and not looks_like_conll(path)
