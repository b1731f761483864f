"""Chat (instruction tuning, SFT): conversations -> a causal LM that answers like their assistant.

The data are conversations in any layout data/chat.py reads (Alpaca, OpenAI messages, ShareGPT,
prompt/completion), laid out with the model's own chat template; the loss covers every assistant turn
and its end-of-turn token, nothing else (`--train-on-prompt` for every token). Training batches are
packed into rows of --max-length tokens (data/packing.py: each conversation attends only to itself and
its positions restart), evaluation batches are padded, so each conversation's loss is its own.

The model keeps its pretrained output layer (trains_output_head False): under LoRA, the default method
here, only the adapter trains and the run folder holds the adapter alone. Metrics: the held-out loss
per assistant token and its perplexity (exp of the loss), lower is better.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..data import chat as conv
from ..data.packing import collate_packed, collate_unpacked, pack, shifted_loss_sum, target_tokens
from ..errors import TunesmithError
from . import register_task
from .language_model import build_causal_lm, lm_tokenizer, loss_rows, perplexity_scores, sampled_held_out_splits
from .protocol import Metric, Splits

PROBE_CHATS = [[{"role": "user", "content": "Name three colours."}],
               [{"role": "user", "content": "What is the capital of France?"}]]


@dataclass
class ChatFeatures:
    examples: list[conv.EncodedChat]
    lengths: np.ndarray  # tokens per conversation: the cost unit
    labels: np.ndarray | None  # target tokens per conversation (every chat example has labels)
    notes: list[str] = field(default_factory=list)  # printed by the job: conversations cut to --max-length

    def __len__(self) -> int:
        return len(self.examples)


def read_conversations(raw: pd.DataFrame, path, role: str) -> tuple[pd.DataFrame, str]:
    """(a table with one `messages` cell per row (OpenAI-style turns), the file's layout), from any layout data/chat.py reads."""
    found = conv.chat_layout(raw)
    if found is None:
        raise TunesmithError(f"The {role} file '{path}' holds no conversations the chat task reads (columns: "
                             f"{', '.join(map(str, raw.columns[:8]))}); give instruction/input/output (Alpaca), a messages column of "
                             f"role/content turns, a conversations column (ShareGPT), or prompt/completion columns.")
    return pd.DataFrame({"messages": conv.conversations(raw, found[0], path)}), found[0]


@register_task("chat")
class Chat:
    pipeline_task = "text-generation"
    default_model = "smollm2-135m"
    default_method = "lora"  # adapts attention and MLP projections; the pretrained lm_head and embeddings stay
    default_max_length = 1024
    # tokens of an evaluation batch: their logits span the vocabulary (49,152 for SmolLM2: 2,048 tokens hold 0.4 GB
    # of float32 logits; the 16,384 of a classifier's batches reached 22 GB with the loss and its softmax)
    inference_tokens = 2048
    # tokens of a training micro-batch (the step's update is the same: the loop divides by the step's targets). LoRA on
    # smollm2-135m, batch 32, --max-length 1,024: unbounded, a step went past 24 GB and was killed; at 2,048 tokens the
    # job peaked at 14.5 GB (about 6 MB a token of activations); 1,024 leaves room on a 16 GB machine
    micro_batch_tokens = 1024
    model_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    trains_output_head = False
    tunes_on_validation = False
    metrics = (Metric("loss", higher_is_better=False, title="loss"), Metric("perplexity", higher_is_better=False))
    predict_example = None  # no predict suggestion: answering prompts is for the generate and chat commands (not written yet)

    writes_answers = True  # held-out prompts answered before and after, side by side (answers.py)
    scores_before_training = True  # the base model's held-out loss is printed and stored beside the fine-tuned one

    def __init__(self, layout: str = "messages", chat_template: str | None = None, train_on_prompt: bool = False, packing: str = "on",
                 forgetting_text: str = "off"):
        self.layout, self.chat_template = layout, chat_template
        self.train_on_prompt, self.packing, self.forgetting_text = train_on_prompt, packing, forgetting_text
        self.max_length: int | None = None  # set by encode: the length packed rows fill

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        found = conv.chat_layout(raw)
        return found[1] if found else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["Chat", Splits]:
        from ..data.sources import read_data_file

        path = sources["train"]
        train, layout = read_conversations(raw, path, "training")
        read = lambda role: read_conversations(read_data_file(sources[role], cfg.data.encoding, role=role), sources[role], role)[0]  # noqa: E731
        train, validation, test, notes = sampled_held_out_splits(train, sources, cfg, seed, read, "conversations")
        task = cls(layout, cfg.task.chat_template, cfg.task.train_on_prompt, cfg.task.packing, cfg.task.forgetting_text)
        sizes = [f"{len(train):,} train"] + [f"{len(t):,} {n}" for n, t in (("validation", validation), ("test", test)) if t is not None]
        turns = sum(sum(m["role"] == "assistant" for m in chat) for chat in train["messages"])
        return task, Splits(train, validation, test, {k: v for k, v in sources.items() if v}, notes,
                            validation_from_split=validation is not None and not sources.get("validation"),
                            summary=f"{' / '.join(sizes)} conversations, {turns:,} assistant turns in training",
                            columns=f"layout {layout}")

    @classmethod
    def from_record(cls, record: dict) -> "Chat":
        return cls(record.get("layout", "messages"), record.get("chat_template"), record.get("train_on_prompt", False),
                   record.get("packing", "on"), record.get("forgetting_text", "off"))

    def record(self) -> dict:
        return {"layout": self.layout, "chat_template": self.chat_template, "train_on_prompt": self.train_on_prompt, "packing": self.packing,
                "forgetting_text": self.forgetting_text}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "loss", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        tokenizer = lm_tokenizer(source, model_cfg)
        conv.resolve_chat_template(tokenizer, self.chat_template)  # the model's own, or --chat-template; saved with the run
        return tokenizer

    def build_model(self, source: str, model_cfg):
        return build_causal_lm(source, model_cfg, model_cfg.dropout)

    def reference_features(self, tokenizer, max_length: int) -> tuple[str, ChatFeatures] | None:
        """(what it is, features) of the general text forgetting is measured on: every token a target, in windows
        of max_length; None with --forgetting-text off."""
        from pathlib import Path

        if self.forgetting_text == "off":
            return None
        if self.forgetting_text == "auto":
            from ..assets.lm_assets import forgetting_text_file

            path, name = forgetting_text_file(), "general-text (Botchan, held-out chapter XI)"
        else:
            path, name = Path(self.forgetting_text), self.forgetting_text
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise TunesmithError(f"Cannot read --forgetting-text '{path}' ({exc}); give a UTF-8 .txt file, auto, or off.") from None
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        windows = [w for w in (ids[i:i + max_length] for i in range(0, len(ids), max_length)) if len(w) > 1]
        if not windows:
            raise TunesmithError(f"--forgetting-text '{path}' holds too little text to measure a perplexity on; give a longer file, or off.")
        examples = [conv.EncodedChat(list(w), list(w)) for w in windows]
        lengths = np.fromiter((len(w) for w in windows), dtype=np.int64, count=len(windows))
        return name, ChatFeatures(examples, lengths, lengths - 1)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> ChatFeatures:
        self.max_length = max_length
        examples = conv.encode_conversations(tokenizer, list(table["messages"]), max_length, self.train_on_prompt)
        if not any(e.targets for e in examples):
            raise TunesmithError(f"No conversation keeps an assistant token within --max-length {max_length}; raise --max-length.")
        lengths = np.fromiter((len(e.input_ids) for e in examples), dtype=np.int64, count=len(examples))
        note = conv.truncation_note(examples, max_length)
        return ChatFeatures(examples, lengths, np.fromiter((e.targets for e in examples), dtype=np.int64, count=len(examples)),
                            [note] if note else [])

    def collate(self, features: ChatFeatures, indices: list[int], pad_id: int) -> dict:
        """Training steps pack their conversations into rows; evaluation pads them, one per row."""
        if self.packing == "on" and torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            chosen = [features.examples[i] for i in indices]
            return collate_packed(chosen, pack([len(e.input_ids) for e in chosen], self.max_length or max(features.lengths)), pad_id)
        return collate_unpacked(features.examples, indices, pad_id)

    def target_count(self, labels: torch.Tensor) -> int:
        return target_tokens(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed cross-entropy of every target token (next-token shift); the loop divides by the step's targets."""
        return shifted_loss_sum(output.logits, labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        """(summed loss, target tokens) of each conversation of an evaluation batch (one per row)."""
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
        return [f"Held-out {split} loss {scores['loss']:.4f} per assistant token (perplexity {scores['perplexity']:.2f}) over "
                f"{scores['target_tokens']:,} tokens of {scores['examples']:,} conversations."]

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        import json

        out = pd.DataFrame(index=range(len(outputs)))
        if with_inputs:
            out["messages"] = [json.dumps(chat, ensure_ascii=False) for chat in table["messages"]]
        out["loss"] = (outputs[:, 0] / np.maximum(outputs[:, 1], 1)).round(5)
        out["target_tokens"] = outputs[:, 1].astype(int)
        return out

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        """How well the model predicts each conversation's assistant turns (answers are generated by `generate`)."""
        return [{"loss": float(s / max(n, 1)), "target_tokens": int(n)} for s, n in outputs]

    def describe_prediction(self, record: dict) -> str:
        return f"loss {record['loss']:.4f} over {record['target_tokens']} tokens"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """Conversations to score (each with its assistant turns); a prompt alone has nothing to score."""
        chats = [list(x) for x in inputs if not isinstance(x, str)]
        if len(chats) < len(inputs) or not all(any(m.get("role") == "assistant" for m in chat) for chat in chats):
            raise TunesmithError("A chat run's predict scores whole conversations (lists of role/content messages with the assistant's "
                                 "turns) by their loss; answering a prompt is the generate and chat commands' job, not written yet.")
        return pd.DataFrame({"messages": chats})

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        from ..data.sources import read_data_file

        raw = read_data_file(path, data_cfg.encoding, role="input")
        return read_conversations(raw, path, "input")[0], raw

    def probe_table(self) -> pd.DataFrame:
        answers = ["Red, green and blue.", "Paris."]
        return pd.DataFrame({"messages": [chat + [{"role": "assistant", "content": a}] for chat, a in zip(PROBE_CHATS, answers)]})
