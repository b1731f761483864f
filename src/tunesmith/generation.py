"""Text generation for chat models: the engine under `tunesmith chat` and `tunesmith generate`.

Everything runs through transformers' own `model.generate` with a GenerationConfig built from our settings;
this module only decides what a chat needs around it: which tokens end a reply, how prompts are rendered
(the model's chat template) and batched (left padding, sorted by length), how a reply streams, and how an
interactive conversation stays inside the model's context.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

import torch
from jinja2 import TemplateError  # chat templates are Jinja; torch depends on jinja2
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .errors import TunesmithError, did_you_mean

# End-of-turn tokens of the common chat templates (ChatML, Llama 3, Gemma, Phi-3); a reply ends there even
# when the tokenizer's eos is another token (Llama 3's eos is <|end_of_text|>, a base model's habit)
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>")


def _number(text: str) -> float:
    if not math.isfinite(value := float(text)):
        raise ValueError(text)
    return value


def _seed(text: str) -> int | None:
    return None if text.lower() in ("", "none", "off", "random") else int(text)


def _setting(default, help: str, parse, valid, rule: str):
    """A field of GenerationSettings: its help (for CLI flags and /set), how /set parses it, and its rule."""
    return field(default=default, metadata={"help": help, "parse": parse, "valid": valid, "rule": rule})


@dataclass
class GenerationSettings:
    """How replies are sampled. Defaults suit chat; temperature 0 means greedy (the same answer every time).
    top_k is left to the model's generation config (transformers' default: 50)."""

    temperature: float = _setting(0.7, "Sampling temperature; 0 picks the most likely token every step (greedy).",
                                  _number, lambda v: v >= 0, "a number >= 0 (0 means greedy)")
    top_p: float = _setting(0.9, "Nucleus sampling: sample among the most likely tokens holding this much probability.",
                            _number, lambda v: 0 < v <= 1, "a number above 0 and at most 1")
    max_new_tokens: int = _setting(256, "The most tokens a reply may have.", int, lambda v: v >= 1, "a whole number >= 1")
    repetition_penalty: float = _setting(1.0, "Above 1 discourages repeating tokens already in the text; 1 is off.",
                                         _number, lambda v: v > 0, "a number above 0 (1 is off)")
    seed: int | None = _setting(None, "Seed for sampling, so a run can be repeated; none: fresh randomness.",
                                _seed, lambda v: True, "a whole number, or none")

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not f.metadata["valid"](value):
                raise TunesmithError(f"Generation setting {f.name} must be {f.metadata['rule']}, not {value!r}.")

    @property
    def do_sample(self) -> bool:
        """Derived, never set: sampling unless temperature is 0."""
        return self.temperature > 0

    def update(self, name: str, value: str) -> None:
        """Set one setting from text, as the chat's `/set temperature 0.2` gives it."""
        known = {f.name: f for f in fields(self)}
        if name == "do_sample":
            raise TunesmithError("do_sample follows the temperature: set temperature 0 for greedy answers, above 0 to sample.")
        if name not in known:
            raise TunesmithError(f"Unknown generation setting '{name}'; the settings are {', '.join(known)}."
                                 + did_you_mean(name, known))
        meta = known[name].metadata
        try:
            parsed = meta["parse"](str(value).strip())
            fits = parsed is None or meta["valid"](parsed)
        except ValueError:
            fits = False
        if not fits:
            raise TunesmithError(f"{name} must be {meta['rule']}, not '{value}'.")
        setattr(self, name, parsed)


def settings_from(options: dict) -> GenerationSettings:
    """GenerationSettings from keyword options (None: the default), an unknown name refused in one sentence."""
    known = [f.name for f in fields(GenerationSettings)]
    for name in options:
        if name not in known:
            raise TunesmithError(f"Unknown generation setting '{name}'; the settings are {', '.join(known)}." + did_you_mean(name, known))
    return GenerationSettings(**{k: v for k, v in options.items() if v is not None})


def stop_token_ids(tokenizer, model_config=None) -> list[int]:
    """The token ids that end an assistant turn: the tokenizer's eos, the model's (generation) config eos (an id or
    a list), and the chat template's end-of-turn token where the tokenizer has it. model_config may be a model, its
    config or its GenerationConfig. Generation stops at any of them."""
    ids: list[int] = []
    for source in (tokenizer, model_config, getattr(model_config, "generation_config", None), getattr(model_config, "config", None)):
        eos = getattr(source, "eos_token_id", None)
        ids.extend(eos if isinstance(eos, (list, tuple)) else [eos])
    vocab = tokenizer.get_vocab()
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    for token in END_OF_TURN_TOKENS:
        if token in vocab and (template is None or token in template):
            ids.append(vocab[token])
    ids = list(dict.fromkeys(int(i) for i in ids if i is not None))
    if not ids:
        raise TunesmithError("The tokenizer and the model config name no end-of-sequence or end-of-turn token, so a reply "
                             "could never end; set eos_token in the model folder's tokenizer_config.json.")
    return ids


def generation_config(model, tokenizer, settings: GenerationSettings) -> GenerationConfig:
    """Our settings as transformers' GenerationConfig; what we leave unset (top_k) comes from the model's own."""
    stops = stop_token_ids(tokenizer, model)
    sampling = dict(do_sample=True, temperature=settings.temperature, top_p=settings.top_p) if settings.do_sample else dict(do_sample=False)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]  # eos pads where no pad token is set
    return GenerationConfig(max_new_tokens=settings.max_new_tokens, repetition_penalty=settings.repetition_penalty,
                            eos_token_id=stops, pad_token_id=pad, **sampling)


def render_prompt(tokenizer, conversation: list[dict], where: str = "the conversation") -> list[int]:
    """The prompt's token ids: the model's chat template with the assistant header opened for the reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise TunesmithError("The model's tokenizer has no chat template, so prompts cannot be rendered; fine-tune it "
                             "with --chat-template chatml (or give a template) first.")
    if (not isinstance(conversation, list) or not conversation or not isinstance(conversation[-1], dict)
            or conversation[-1].get("role") != "user"):
        raise TunesmithError(f"{where.capitalize()} must be a list of messages ending with the user's turn "
                             f"({{'role': 'user', 'content': ...}}); give the question to answer last.")
    try:
        return list(tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False))
    except TemplateError as exc:  # a template's own check, e.g. "roles must alternate"
        raise TunesmithError(f"The model's chat template refused {where}: {exc}; fix the messages to fit it.") from None


@contextmanager
def _eval_mode(model):
    """Dropout off while generating; the model's training flag is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def generate_batch(model, tokenizer, conversations: list[list[dict]], settings: GenerationSettings,
                   batch_size: int = 8) -> list[str]:
    """The assistant's answer to each conversation, in the input order. Prompts are sorted by length (longest
    first) so a batch holds similar lengths, and padded on the LEFT so every row's reply starts right after its
    prompt; the attention mask hides the padding, so greedy answers do not depend on what shares the batch."""
    if batch_size < 1:
        raise TunesmithError(f"The generation batch size must be at least 1, not {batch_size}.")
    prompts = [render_prompt(tokenizer, c, f"conversation {i + 1}") for i, c in enumerate(conversations)]
    config = generation_config(model, tokenizer, settings)
    stops, pad = set(config.eos_token_id), config.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    if settings.do_sample and settings.seed is not None:
        torch.manual_seed(settings.seed)
    with _eval_mode(model), torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = [prompts[i] for i in order[start:start + batch_size]]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
            attention_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            for i, ids in zip(order[start:start + batch_size], output[:, width:].tolist()):
                end = next((k for k, t in enumerate(ids) if t in stops), len(ids))  # the reply ends at its first stop token
                answers[i] = tokenizer.decode(ids[:end], skip_special_tokens=True)
    return answers


class _StopWhenSet(StoppingCriteria):
    """Ends generate() at the next token once the event is set (the reader stopped listening, or Ctrl-C)."""
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream_reply(model, tokenizer, conversation: list[dict], settings: GenerationSettings) -> Iterator[str]:
    """The reply's text in pieces as the model writes them; the pieces joined equal generate_batch's answer.

    generate() runs in a worker thread feeding a TextIteratorStreamer; this generator reads it. Ctrl-C: the
    KeyboardInterrupt reaches the main thread (the reader); when the generator is left early (an exception,
    break, or close()), its `finally` sets an event that a stopping criterion checks after every token, so the
    worker ends within one forward pass, and is joined before the interrupt travels on. A caller that may be
    interrupted in its own code between pieces wraps the loop in `contextlib.closing(stream_reply(...))`, so
    the stop happens at once and not when the generator is garbage-collected."""
    prompt = render_prompt(tokenizer, conversation)
    config = generation_config(model, tokenizer, settings)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    stop, failure = threading.Event(), []

    def work():
        try:
            with torch.inference_mode():  # thread-local: it must be entered in the worker itself
                model.generate(input_ids=torch.tensor([prompt], device=model.device), generation_config=config,
                               attention_mask=torch.ones(1, len(prompt), dtype=torch.long, device=model.device),
                               streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopWhenSet(stop)]))
        except BaseException as exc:  # handed to the reader, which would otherwise wait for text forever
            failure.append(exc)
            streamer.on_finalized_text("", stream_end=True)

    if settings.do_sample and settings.seed is not None:
        torch.manual_seed(settings.seed)
    with _eval_mode(model):
        worker = threading.Thread(target=work, name="tunesmith-generate", daemon=True)
        worker.start()
        try:
            yield from (piece for piece in streamer if piece)  # the streamer also sends '' for held-back text
        finally:
            stop.set()
            worker.join()
    if failure:
        raise failure[0]


def model_context_length(model) -> int | None:
    """The most tokens the model attends over (prompt plus reply), from its config; None when it names none."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


class Conversation:
    """The messages of an interactive chat: an optional system prompt, then alternating user and assistant
    turns. Before each reply, trim() drops the oldest turns (never the system prompt or the new question) so
    the prompt plus the reply's max_new_tokens fits the model's context."""

    def __init__(self, tokenizer, context_length: int, system_prompt: str | None = None):
        self.tokenizer, self.context_length, self.system_prompt = tokenizer, context_length, system_prompt
        self.turns: list[dict] = []
        self.dropped_turns = 0  # over the whole chat, for a summary

    @property
    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [dict(m) for m in self.turns]

    def add_user(self, text: str) -> None:
        if self.turns and self.turns[-1]["role"] == "user":
            raise TunesmithError("The last user message has no answer yet; add the assistant's reply (or reset) before the next question.")
        self.turns.append({"role": "user", "content": text})

    def add_assistant(self, text: str) -> None:
        """The reply to the last user message (a partial one after Ctrl-C keeps the turns alternating)."""
        if not self.turns or self.turns[-1]["role"] != "user":
            raise TunesmithError("An assistant reply must answer a user message; add the user's message first.")
        self.turns.append({"role": "assistant", "content": text})

    def reset(self) -> None:
        """Forget every turn; the system prompt stays."""
        self.turns.clear()

    def prompt_tokens(self) -> int:
        """The length of the prompt as the model would see it now."""
        return len(render_prompt(self.tokenizer, self.messages))

    def trim(self, max_new_tokens: int) -> str | None:
        """Drop the oldest turns (a user message and its reply) until the prompt plus max_new_tokens fits the
        context; returns a sentence saying how many were dropped, or None when all fit. A question too long even
        alone is taken back out (so the chat can go on) and refused."""
        if not self.turns or self.turns[-1]["role"] != "user":
            raise TunesmithError("Trim the conversation after adding the user's new message, not before.")
        budget = self.context_length - max_new_tokens
        dropped = 0
        while self.prompt_tokens() > budget and len(self.turns) > 1:
            del self.turns[:2]  # a user message and the assistant's answer to it
            dropped += 1
        if self.prompt_tokens() > budget:
            alone = self.prompt_tokens()
            self.turns.pop()
            raise TunesmithError(f"The message alone is {alone} tokens with the template and system prompt, more than "
                                 f"the {self.context_length}-token context leaves beside {max_new_tokens} new tokens; shorten it "
                                 f"or lower max_new_tokens (/set max_new_tokens ...).")
        self.dropped_turns += dropped
        return None if not dropped else (f"Dropped the {dropped} oldest turn{'s' if dropped > 1 else ''} to fit the model's {self.context_length}-token "
                f"context beside {max_new_tokens} new tokens.")
