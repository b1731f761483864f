"""Preference tuning (DPO): pairs of a prompt, a chosen and a rejected answer -> a causal LM that prefers the chosen.

Direct Preference Optimization (Rafailov et al. 2023) trains the policy so that its log-probability of the chosen
answer rises, relative to a frozen reference model, more than that of the rejected one. With pi and ref the
summed log-probabilities of an answer's tokens under the policy and the reference, and beta --dpo-beta:

    margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    sigmoid (DPO):  (1 - ls) * -log sigmoid(beta * margin) + ls * -log sigmoid(-beta * margin)
                    (ls: --dpo-label-smoothing, conservative DPO's share of flipped labels; 0 is plain DPO)
    ipo (IPO):      (margin' - 1 / (2 beta))^2, margin' from per-token mean log-probs (as TRL computes it)

The reference is the model as built, before the first step: a LoRA adapter starts as the identity, so it IS the
reference. job.attach_base_outputs runs it once over every split and keeps its two log-probabilities per pair
(features.base_outputs), which collate hands the loss beside the token labels (TRL's precompute_ref_log_probs). No
second model sits in memory while training: for smollm2-135m in float32 that saves its 0.54 GB of weights, and each
step one forward of the reference over both answers of every pair (a quarter of a full fine-tune's step, whose
backward costs two forwards; about a third of a LoRA step's, whose backward skips the frozen weights' gradients).
Before training every reward is 0 (policy = reference), so no before-training scores are measured: the reward
accuracy is 0.5 by construction (a tie counts half) and the loss log 2.

Each pair is two sequences, the prompt in the model's chat template then one answer, whose tokens and end-of-turn
token are the only targets. A pair longer than --max-length keeps the prompt's end and the answers' start
(cut_pair); batches hold the chosen sequences of their pairs, then the rejected ones, padded (no packing).

Training keeps dropout at 0 in the model (TRL's disable_dropout; --dropout overrides): the reference pass runs
without it, so the first step's policy must too, or the first loss would not be the reference's log 2 (LoRA's own
--lora-dropout acts on the adapter's input, which adds nothing while the adapter is still zero).

Metrics: reward_accuracy (the share of held-out pairs whose chosen answer gets the higher reward beta * (pi - ref);
the default selection metric), the DPO loss, and logp_accuracy (the share whose chosen answer the policy finds
more likely outright), with the mean margin, the mean rewards and log-probabilities beside them. A finished run
has no reference at hand: predict and eval report the policy's log-probabilities of both answers, which it finds
more likely, and logp_accuracy.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..data import chat as conv
from ..data.packing import IGNORE, collate_unpacked
from ..data.preference import preference_layout, read_preference_pairs
from ..errors import TunesmithError
from . import register_task
from .language_model import build_causal_lm, lm_tokenizer, sampled_held_out_splits
from .protocol import Metric, Splits

PROBE_PAIRS = [{"prompt": [{"role": "user", "content": "Name three colours."}], "chosen": "Red, green and blue.",
                "rejected": "I would rather not say."},
               {"prompt": [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "What is the capital of France?"}],
                "chosen": "Paris.", "rejected": "The capital of France is a city."}]


@dataclass
class PreferenceFeatures:
    chosen: list[conv.EncodedChat]  # prompt + chosen answer, labels on the answer and its end-of-turn token
    rejected: list[conv.EncodedChat]
    lengths: np.ndarray  # tokens of the chosen and the rejected sequence of each pair: the cost unit
    labels: np.ndarray  # answer tokens of each pair (both answers): every pair is labeled
    cut: int = 0  # pairs cut to --max-length
    base_outputs: np.ndarray | None = None  # the reference's outputs per pair (job.attach_base_outputs), None before

    def __len__(self) -> int:
        return len(self.chosen)


def dpo_losses(policy: torch.Tensor, reference: torch.Tensor, answer_tokens: torch.Tensor, beta: float, kind: str = "sigmoid",
               smoothing: float = 0.0) -> torch.Tensor:
    """The loss of each pair, from (P, 2) summed log-probabilities (chosen, rejected) of the policy and the reference
    and the (P, 2) answer token counts; the formulas of the module docstring."""
    ratios = policy.double() - reference.double()
    if kind == "ipo":
        ratios = ratios / answer_tokens.double().clamp(min=1)
        return ((ratios[:, 0] - ratios[:, 1]) - 1 / (2 * beta)) ** 2
    logits = beta * (ratios[:, 0] - ratios[:, 1])
    return (1 - smoothing) * -F.logsigmoid(logits) + smoothing * -F.logsigmoid(-logits)


def prompt_tokens(encoded: conv.EncodedChat) -> int:
    """Tokens before the answer's first target: the prompt, with the header that opens the assistant's turn."""
    return next((i for i, label in enumerate(encoded.labels) if label != IGNORE), len(encoded.labels))


def cut_pair(chosen: conv.EncodedChat, rejected: conv.EncodedChat, max_length: int) -> tuple[conv.EncodedChat, conv.EncodedChat]:
    """Both sequences of a pair within max_length, the same prompt tokens before each answer.

    A prompt keeps its end (its last turns and the assistant header the answers follow), cut from its start;
    answers keep their start, cut at their end. The answers get the room the prompt leaves, and at least half of
    max_length when the prompt is longer (TRL's max_prompt_length idea, at half), so every answer keeps tokens."""
    prompt = min(prompt_tokens(chosen), prompt_tokens(rejected))
    longest = max(len(chosen.input_ids), len(rejected.input_ids)) - prompt
    if prompt + longest <= max_length:
        return chosen, rejected
    answer_room = min(longest, max_length - min(prompt, max_length // 2))
    kept = min(prompt, max_length - answer_room)

    def cut(encoded: conv.EncodedChat) -> conv.EncodedChat:
        start = prompt_tokens(encoded) - kept
        ids, labels = encoded.input_ids[start:start + max_length], encoded.labels[start:start + max_length]
        return conv.EncodedChat(ids, labels, len(encoded.input_ids) - len(ids))

    return cut(chosen), cut(rejected)


@register_task("preference")
class Preference:
    pipeline_task = "text-generation"
    default_model = "smollm2-135m"
    default_method = "lora"  # the reference is the base model the adapter starts as: no second copy in memory
    default_max_length = 1024  # per sequence (prompt + one answer)
    # tokens of an evaluation batch, counted as `lengths` (both answers of a pair): rows are padded to the longest
    # sequence, so a batch holds up to twice as many padded tokens, 2,048 as chat's do at most (tasks/chat.py)
    inference_tokens = 1024
    # tokens of a training micro-batch, counted the same way: length-grouped batches pad pairs of similar lengths, so
    # about 1,024 padded tokens, chat's micro-batch
    micro_batch_tokens = 512
    model_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    trains_output_head = False
    tunes_on_validation = False
    needs_base_outputs = True  # job.attach_base_outputs keeps the reference's log-probabilities per pair
    # logp_accuracy needs no reference: the one metric `tunesmith eval` can give on a finished run
    metrics = (Metric("reward_accuracy", title="reward accuracy"), Metric("loss", higher_is_better=False, title="loss"),
               Metric("logp_accuracy", title="log-prob accuracy"))
    predict_example = None  # predict scores whole pairs (--file), not a text

    def __init__(self, layout: str = "conversational", chat_template: str | None = None, beta: float = 0.1, loss_type: str = "sigmoid",
                 label_smoothing: float = 0.0):
        self.layout, self.chat_template = layout, chat_template
        self.beta, self.loss_type, self.label_smoothing = float(beta), loss_type, float(label_smoothing)

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        found = preference_layout(raw)
        return found[1] if found else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["Preference", Splits]:
        from ..data.sources import read_data_file
        if cfg.task.dpo_label_smoothing and cfg.task.dpo_loss != "sigmoid":
            raise TunesmithError(f"--dpo-label-smoothing applies to the sigmoid loss only, not --dpo-loss {cfg.task.dpo_loss}; "
                                 f"drop it, or use --dpo-loss sigmoid.")
        path = sources["train"]
        train, layout = read_preference_pairs(raw, path)
        read = lambda role: read_preference_pairs(read_data_file(sources[role], cfg.data.encoding, role=role), sources[role])[0]  # noqa: E731
        train, validation, test, notes = sampled_held_out_splits(train, sources, cfg, seed, read, "pairs")
        task = cls(layout, cfg.task.chat_template, cfg.task.dpo_beta, cfg.task.dpo_loss, cfg.task.dpo_label_smoothing)
        sizes = [f"{len(train):,} train"] + [f"{len(t):,} {n}" for n, t in (("validation", validation), ("test", test)) if t is not None]
        loss = f"IPO loss, beta {task.beta:g}" if task.loss_type == "ipo" else \
            f"DPO sigmoid loss, beta {task.beta:g}" + (f", label smoothing {task.label_smoothing:g}" if task.label_smoothing else "")
        return task, Splits(train, validation, test, {k: v for k, v in sources.items() if v}, notes,
                            validation_from_split=validation is not None and not sources.get("validation"),
                            summary=f"{' / '.join(sizes)} preference pairs ({loss})", columns=f"layout {layout}")

    @classmethod
    def from_record(cls, record: dict) -> "Preference":
        return cls(record.get("layout", "conversational"), record.get("chat_template"), record.get("dpo_beta", 0.1),
                   record.get("dpo_loss", "sigmoid"), record.get("dpo_label_smoothing", 0.0))

    def record(self) -> dict:
        return {"layout": self.layout, "chat_template": self.chat_template, "dpo_beta": self.beta, "dpo_loss": self.loss_type,
                "dpo_label_smoothing": self.label_smoothing}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "reward_accuracy", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        tokenizer = lm_tokenizer(source, model_cfg)
        conv.resolve_chat_template(tokenizer, self.chat_template)  # the model's own, or --chat-template; saved with the run
        return tokenizer

    def build_model(self, source: str, model_cfg):
        return build_causal_lm(source, model_cfg, 0.0 if model_cfg.dropout is None else model_cfg.dropout)  # see the module docstring

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> PreferenceFeatures:
        """Each pair as two sequences, the prompt then one answer in the model's chat template, cut to max_length."""
        chosen, rejected, cut = [], [], 0
        for i, (prompt, *answers) in enumerate(zip(table["prompt"], table["chosen"], table["rejected"])):
            whole = [conv.encode_conversation(tokenizer, list(prompt) + [{"role": "assistant", "content": answer}], None,
                                              where=f"pair {i + 1}") for answer in answers]
            pair = cut_pair(*whole, max_length)
            cut += pair[0] is not whole[0]
            chosen.append(pair[0])
            rejected.append(pair[1])
        count = lambda pick: np.fromiter(pick(), dtype=np.int64, count=len(chosen))  # noqa: E731
        return PreferenceFeatures(chosen, rejected, count(lambda: (len(c.input_ids) + len(r.input_ids) for c, r in zip(chosen, rejected))),
                                  count(lambda: (c.targets + r.targets for c, r in zip(chosen, rejected))), cut)

    def collate(self, features: PreferenceFeatures, indices: list[int], pad_id: int) -> dict:
        """The chosen sequences of the pairs, then their rejected ones, padded; labels {"tokens"} and, once the reference
        has run, {"reference"}: its (pairs, 2) summed log-probabilities."""
        sequences = [features.chosen[i] for i in indices] + [features.rejected[i] for i in indices]
        batch = collate_unpacked(sequences, list(range(len(sequences))), pad_id)
        labels = {"tokens": batch.pop("labels")}
        if features.base_outputs is not None:
            labels["reference"] = torch.as_tensor(np.asarray(features.base_outputs)[indices, :2], dtype=torch.float32)
        return {**batch, "labels": labels}

    def target_count(self, labels: dict) -> int:
        return labels["tokens"].shape[0] // 2  # pairs

    def answer_logprobs(self, logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """((pairs, 2) summed log-probabilities of the chosen and rejected answers, (pairs, 2) their token counts), with the
        causal shift. Cross-entropy over flat (tokens, vocabulary) rows: on a CPU 2.3x faster than packing.shifted_loss_rows'
        (rows, vocabulary, length) layout, forward and backward (measured on 8 x 128 tokens of SmolLM2's 49,152 words)."""
        logits, targets = logits[:, :-1].float(), tokens[:, 1:].to(logits.device)
        per_token = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="none")
        pairs = tokens.shape[0] // 2
        return -per_token.view(targets.shape).sum(1).view(2, pairs).T, (targets != IGNORE).sum(1).view(2, pairs).T

    def loss(self, output, labels: dict) -> tuple[torch.Tensor, int]:
        """(the pairs' summed DPO or IPO loss, pairs). Without a reference (the pass that computes it) the policy is
        scored against a reference of log-probability 0: a number nobody reads; training without one is refused."""
        policy, counts = self.answer_logprobs(output.logits, labels["tokens"])
        reference = labels.get("reference")
        if reference is None:
            if torch.is_grad_enabled():
                raise TunesmithError("Preference training needs the reference model's log-probabilities (features.base_outputs); "
                                     "they are computed by job.attach_base_outputs before the first step: train through tunesmith.finetune.")
            reference = torch.zeros_like(policy)
        losses = dpo_losses(policy, reference.to(policy.device), counts, self.beta, self.loss_type, self.label_smoothing)
        return losses.sum().to(policy.dtype), len(losses)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        """Per pair: the policy's summed log-probability of the chosen and the rejected answer, then their token counts."""
        policy, counts = self.answer_logprobs(output.logits, batch["labels"]["tokens"])
        return torch.cat([policy, counts.to(policy.dtype)], 1)

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        """Rewards against the reference when the features have one (training, test); the policy's log-probabilities alone otherwise."""
        outputs = np.asarray(outputs, dtype=np.float64)
        policy, counts = outputs[:, :2], outputs[:, 2:4]
        scores = {"chosen_logp": float(policy[:, 0].mean()), "rejected_logp": float(policy[:, 1].mean()),
                  "logp_accuracy": tie_half_accuracy(policy[:, 0] - policy[:, 1]), "examples": int(len(outputs))}
        base = getattr(features, "base_outputs", None)
        if base is None:
            return scores
        reference = np.asarray(base, dtype=np.float64)[:, :2]
        rewards = self.beta * (policy - reference)
        losses = dpo_losses(torch.as_tensor(policy), torch.as_tensor(reference), torch.as_tensor(counts), self.beta, self.loss_type,
                            self.label_smoothing)
        return {"reward_accuracy": tie_half_accuracy(rewards[:, 0] - rewards[:, 1]), "loss": float(losses.mean()),
                "margins": float((rewards[:, 0] - rewards[:, 1]).mean()), "chosen_reward": float(rewards[:, 0].mean()),
                "rejected_reward": float(rewards[:, 1].mean()), **scores}

    def tune(self, outputs, features) -> dict:
        return {}

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        accuracy = scores.get("reward_accuracy")
        if accuracy is not None and accuracy <= 0.5:
            return [f"The {split} reward accuracy is {accuracy:.3f}, no better than the reference's 0.5: the model learned no preference "
                    f"that holds on held-out pairs; train longer (--epochs), raise --lr or --dpo-beta, or check that chosen and rejected are not swapped."]
        return []

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        if scores.get("reward_accuracy") is None:
            return []
        return [f"Held-out {split} reward accuracy {scores['reward_accuracy']:.3f} over {scores['examples']:,} pairs (0.5 before training), "
                f"mean reward margin {scores['margins']:.3f} (beta x the chosen answer's log-ratio to the reference minus the rejected's)."]

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        """Per pair: the policy's log-probability of each answer (summed, and per token) and which answer it finds more likely."""
        out = pd.DataFrame(index=range(len(outputs)))
        if with_inputs:
            out["prompt"] = [json.dumps(list(prompt), ensure_ascii=False) for prompt in table["prompt"]]
            out["chosen"], out["rejected"] = table["chosen"].to_numpy(), table["rejected"].to_numpy()
        records = self.predict_records(outputs, table)
        for key in ("prefers", "chosen_logp", "rejected_logp", "chosen_logp_per_token", "rejected_logp_per_token"):
            out[key] = [round(r[key], 5) if isinstance(r[key], float) else r[key] for r in records]
        return out

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        """Which answer of each pair the model finds more likely (by summed log-probability), and the log-probabilities."""
        return [{"prefers": "chosen" if c >= r else "rejected", "chosen_logp": float(c), "rejected_logp": float(r),
                 "chosen_logp_per_token": float(c / max(nc, 1)), "rejected_logp_per_token": float(r / max(nr, 1))}
                for c, r, nc, nr in np.asarray(outputs, dtype=np.float64)]

    def describe_prediction(self, record: dict) -> str:
        return f"prefers {record['prefers']}\tlog-prob chosen {record['chosen_logp']:.2f}, rejected {record['rejected_logp']:.2f}"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """Pairs to score: {'prompt', 'chosen', 'rejected'} dicts (a prompt as text or messages), one or a list."""
        rows = [inputs] if isinstance(inputs, dict) else inputs.to_dict("records") if isinstance(inputs, pd.DataFrame) else list(inputs)
        if pairs is not None or not rows or not all(isinstance(row, dict) for row in rows):
            raise TunesmithError("A preference run's predict scores pairs: give {'prompt', 'chosen', 'rejected'} dicts (the prompt as text "
                                 "or role/content messages), or a file of them with --file.")
        return read_preference_pairs(pd.DataFrame(rows), "the pairs given")[0]

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        from ..data.sources import read_data_file

        raw = read_data_file(path, data_cfg.encoding, role="input")
        return read_preference_pairs(raw, path)[0], raw

    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame(PROBE_PAIRS)


def tie_half_accuracy(margins: np.ndarray) -> float:
    """The share of positive margins, a tie counting half: a model that cannot tell the answers apart scores 0.5
    (TRL's rewards/accuracies counts a tie as wrong, so its step-0 figure is 0)."""
    margins = np.asarray(margins, dtype=np.float64)
    return float(((margins > 0) + 0.5 * (margins == 0)).mean()) if len(margins) else math.nan
