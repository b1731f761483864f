"""Conversation data for chat fine-tuning: the layouts people keep instructions in, read into
OpenAI-style messages and checked, then tokenised with the model's own chat template so that the loss
falls on what the assistant says and on nothing else.

    alpaca             instruction, input (optional), output; system and history [[user, assistant], ...] optional
    messages           a `messages` column of [{"role", "content"}] (OpenAI): roles system, user, assistant
    sharegpt           a `conversations` column of [{"from", "value"}]: system, human, gpt (or user, assistant); `system` optional
    prompt-completion  prompt and completion columns of text

Which tokens are the assistant's: few templates mark them ({% generation %}, which
`return_assistant_tokens_mask` needs), so like TRL's prompt-completion path we render prefixes: assistant
turn i starts where the conversation up to it, with the generation prompt, ends, and stops where the
conversation up to and including it ends. That holds for any template that renders earlier turns the
same whatever follows (which generation relies on too); one that does not is refused, never guessed.
"""
from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TunesmithError
from .columns import by_name, is_missing
from .media_files import SHOWN, row_name

IGNORE = -100  # the label of a token that is not a target (PyTorch cross-entropy's ignore_index)
ROLES = ("system", "user", "assistant")
ROLE_NAMES = {"messages": {role: role for role in ROLES},  # the spellings each layout accepts, lower-cased
              "sharegpt": {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}}
TURN_KEYS = {"messages": ("role", "content"), "sharegpt": ("from", "value")}
ALPACA_INPUTS, ALPACA_OUTPUTS = ("input", "context"), ("output", "response")  # Alpaca's names, then Dolly's
CHAT_TEMPLATES = {
    # ChatML, as Qwen, SmolLM and many others speak it: a base model without a template learns this layout
    "chatml": ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
               "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"),
}


# -- reading layouts -----------------------------------------------------------------------------------

def chat_layout(raw: pd.DataFrame) -> tuple[str, str] | None:
    """(layout, the reason in a few words) of a table of conversations, or None when it holds none."""
    if by_name(raw, ("chosen",)) is not None and by_name(raw, ("rejected",)) is not None:
        return None  # preference pairs (DPO): the preference task reads those
    column = by_name(raw, ("messages", "conversations"))
    if column is not None:
        layout = turns_layout(raw[column], "messages" if str(column).strip().lower() == "messages" else "sharegpt")
        role, text = TURN_KEYS[layout]
        return layout, f"a {column} column of {{{role}, {text}}} turns ({'OpenAI' if layout == 'messages' else 'ShareGPT'})"
    instruction = by_name(raw, ("instruction",))
    if instruction is not None:
        named = [c for c in (instruction, by_name(raw, ALPACA_INPUTS), by_name(raw, ALPACA_OUTPUTS)) if c is not None]
        return "alpaca", f"columns {'/'.join(map(str, named))} (Alpaca)"
    prompt, completion = by_name(raw, ("prompt",)), by_name(raw, ("completion",))
    if prompt is not None and completion is not None:
        return "prompt-completion", f"columns {prompt}/{completion}"
    return None


def turns_layout(cells: pd.Series, default: str) -> str:
    """messages or sharegpt, by the keys of the first turn found (ShareGPT files often call the column messages)."""
    for cell in cells.head(50):
        turns = as_list(cell)
        if turns and isinstance(turns[0], dict):
            return "sharegpt" if "from" in turns[0] or "value" in turns[0] else "messages" if "role" in turns[0] else default
    return default


def as_list(cell) -> list | None:
    """A cell of turns as a list: JSON gives lists, Parquet arrays, a CSV a JSON string; None for anything else."""
    if isinstance(cell, str) and cell.lstrip().startswith("["):
        try:
            cell = json.loads(cell)
        except ValueError:
            return None
    return list(cell) if isinstance(cell, (list, tuple, np.ndarray)) else None


class Problem(Exception):
    """What is wrong with one row (kind, where in it); conversations() gathers them into one sentence."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(kind, detail)
        self.kind, self.detail = kind, detail


def conversations(raw: pd.DataFrame, layout: str, source_name, needs_assistant: bool = True) -> list[list[dict]]:
    """Each row as [{"role", "content"}] (roles system/user/assistant); a bad row is one sentence naming it."""
    columns = layout_columns(raw, layout, source_name)
    found, problems = [], {}
    for i, row in enumerate(raw.to_dict("records")):
        try:
            found.append(checked(row_turns(row, layout, columns), layout, needs_assistant))
        except Problem as problem:
            problems.setdefault(problem.kind, []).append((i, problem.detail))
    for kind in PROBLEMS:
        if kind in problems:
            raise TunesmithError(problem_sentence(kind, problems[kind], layout, columns, source_name))
    return found


def layout_columns(raw: pd.DataFrame, layout: str, source) -> dict:
    """The columns a layout reads, by their names in this table; a missing required one is one sentence."""
    if layout in TURN_KEYS:
        columns = {"turns": by_name(raw, ("messages", "conversations")), "system": by_name(raw, ("system",)) if layout == "sharegpt" else None}
        required = {"turns": "messages"}
    elif layout == "alpaca":
        columns = {"instruction": by_name(raw, ("instruction",)), "input": by_name(raw, ALPACA_INPUTS),
                   "output": by_name(raw, ALPACA_OUTPUTS), "system": by_name(raw, ("system",)), "history": by_name(raw, ("history",))}
        required = {"instruction": "instruction", "output": "output"}
    elif layout == "prompt-completion":
        columns = {"prompt": by_name(raw, ("prompt",)), "output": by_name(raw, ("completion",)), "system": by_name(raw, ("system",))}
        required = {"prompt": "prompt", "output": "completion"}
    else:
        raise TunesmithError(f"Unknown conversation layout '{layout}'; use one of alpaca, messages, sharegpt or prompt-completion.")
    missing = [f"'{name}'" for key, name in required.items() if columns[key] is None]
    if missing:
        raise TunesmithError(f"'{source}' is read as {layout} data but has no {' or '.join(missing)} column (its columns: "
                             f"{', '.join(map(str, raw.columns))}); add {'it' if len(missing) == 1 else 'them'}, or rename the columns that hold them.")
    return columns


def row_turns(row: dict, layout: str, columns: dict) -> list[tuple]:
    """(role as written, content as written, where it is in the row) for every turn of one row."""
    system = row[columns["system"]] if columns.get("system") is not None else None
    turns = [] if is_missing(system) else [("system", system, "the system column")]
    if layout in TURN_KEYS:
        role_key, text_key = TURN_KEYS[layout]
        items = as_list(row[columns["turns"]])
        if items is None or not all(isinstance(item, dict) and role_key in item for item in items):
            raise Problem("shape", f"its {columns['turns']} cell is not a list of {{'{role_key}', '{text_key}'}} objects")
        return turns + [(item[role_key], item.get(text_key), f"message {n}") for n, item in enumerate(items, start=1)]
    if columns.get("history") is not None and not is_missing(row[columns["history"]]):
        pairs = as_list(row[columns["history"]])
        if pairs is None or not all(as_list(pair) is not None and len(as_list(pair)) == 2 for pair in pairs):
            raise Problem("shape", "its history is not a list of [user, assistant] pairs")
        for n, (user, assistant) in enumerate((as_list(pair) for pair in pairs), start=1):
            turns += [("user", user, f"history pair {n}"), ("assistant", assistant, f"history pair {n}")]
    if is_missing(row[columns["output"]]):
        raise Problem("output")
    if layout == "alpaca":
        parts = [text_of(row[columns[key]]) for key in ("instruction", "input") if columns[key] is not None]
        if None in parts:
            raise Problem("shape", "its instruction or input is not text")
        turns.append(("user", "\n".join(p for p in parts if p.strip()), "the instruction and input"))
    else:
        turns.append(("user", row[columns["prompt"]], "the prompt"))
    return turns + [("assistant", row[columns["output"]], f"the {columns['output']}")]


def text_of(value) -> str | None:
    """A cell as text: strings as they are, numbers written out (an answer may be 42), missing as ''."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool) and not pd.isna(value):
        return str(int(value)) if float(value).is_integer() else str(value)
    return "" if is_missing(value) else None


def checked(turns: list[tuple], layout: str, needs_assistant: bool = True) -> list[dict]:
    """The turns as OpenAI messages: roles known, text everywhere, system first, user and assistant alternating
    (and, unless needs_assistant is False, as for a prompt to answer, at least one assistant turn)."""
    names, messages = ROLE_NAMES.get(layout), []
    for role, content, where in turns:
        if names is not None:
            key = role.strip().lower() if isinstance(role, str) else role
            if key not in names:
                raise Problem("role", f"{where} is {role!r}")
            role = names[key]
        text = text_of(content)
        if text is None:
            raise Problem("shape", f"{where} holds a {type(content).__name__}, not text")
        if not text.strip():
            raise Problem("empty", f"{where}, {role}")
        messages.append({"role": role, "content": text})
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    for k, (message, (_, _, where)) in enumerate(zip(body, turns[len(messages) - len(body):])):
        if message["role"] == "system":
            raise Problem("system", where)
        expected = "user" if k % 2 == 0 else "assistant"
        if message["role"] != expected:
            raise Problem("order", f"{where} is {message['role']} where the first turn must be user" if k == 0 else
                          f"{where} is a second {message['role']} in a row")
    if needs_assistant and not any(m["role"] == "assistant" for m in body):
        raise Problem("no_assistant")
    return messages


SHAPES = {"messages": 'each must be a list of {"role": ..., "content": ...} messages',
          "sharegpt": 'each must be a list of {"from": ..., "value": ...} turns',
          "alpaca": "instruction, input and output must be text and history a list of [user, assistant] pairs",
          "prompt-completion": "prompt and completion must be text"}
PROBLEMS = {  # kind: (what the file has, the fix), in the order they are reported
    "shape": ("records that are not conversations", "{shape}: fix or remove those records"),
    "output": ("records with no {output}", "give every record the answer the model should learn, or remove those records"),
    "role": ("messages with a role the {layout} layout does not know", "the roles accepted are {accepted}: rename those messages or remove them"),
    "empty": ("messages with no text", "give every message its text or remove the empty ones"),
    "system": ("a system message after the start", "a system message may only open the conversation: move it to the start or remove it"),
    "order": ("turns that do not alternate between user and assistant",
              "after an optional first system message the turns must go user, assistant, user, ...: merge repeated turns or add the missing ones"),
    "no_assistant": ("conversations with no assistant turn", "each needs at least one assistant reply to learn from: add one or remove those rows"),
}


def problem_sentence(kind: str, rows: list[tuple[int, str]], layout: str, columns: dict, source) -> str:
    places = ", ".join(f"{row_name(source, i)} ({detail})" if detail else row_name(source, i) for i, detail in rows[:SHOWN])
    if len(rows) > SHOWN:
        places += f" and {len(rows) - SHOWN} more rows"
    words = {"shape": SHAPES[layout], "output": columns.get("output"), "layout": layout, "accepted": ", ".join(ROLE_NAMES.get(layout, {}))}
    what, fix = (text.format(**words) for text in PROBLEMS[kind])
    return f"'{source}' has {what} on {places}; {fix}."


# -- chat templates --------------------------------------------------------------------------------

def require_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise TunesmithError("The base model has no chat template, so tunesmith cannot lay out conversations the way it expects; pass "
                             "--chat-template chatml (the ChatML layout, learned in fine-tuning), or --chat-template FILE.jinja with the "
                             "template the model was trained with.")


def resolve_chat_template(tokenizer, given: str | None) -> str:
    """Set tokenizer.chat_template from a name in CHAT_TEMPLATES, a .jinja file or inline Jinja, or keep
    the model's own (given None); returns where the template came from, for run.json."""
    if given is None:
        require_chat_template(tokenizer)
        return "the model's own"
    if given in CHAT_TEMPLATES:
        template, source = CHAT_TEMPLATES[given], given
    elif "{{" in given or "{%" in given:
        template, source = given, "given inline"
    else:
        path = Path(given)
        if not path.is_file():
            raise TunesmithError(f"--chat-template '{given}' is neither a template name ({', '.join(CHAT_TEMPLATES)}) nor a template file; "
                                 f"pass one of those names or the path of a .jinja file.")
        try:
            template, source = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise TunesmithError(f"Cannot read the chat template file '{path}' ({exc}); check the path and save it as UTF-8 text.") from None
    from jinja2 import TemplateError

    tokenizer.chat_template = template
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False)
    except TemplateError as exc:
        raise TunesmithError(f"The chat template {source!r} cannot render a conversation ({exc}); fix the template or pass --chat-template chatml.") from None
    return source


# -- tokenising, with the assistant's tokens as the only targets ---------------------------------------

@dataclass
class EncodedChat:
    """One conversation as token ids and labels (-100 on every token that is not a target)."""

    input_ids: list[int]
    labels: list[int]
    truncated: int = 0  # tokens cut off the end to fit max_length

    @property
    def targets(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def render(tokenizer, messages: list[dict], generation: bool, where: str) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    except TemplateError as exc:
        raise TunesmithError(f"The chat template refused {where} ({exc}); change that conversation, or pass another template with "
                             f"--chat-template (chatml, or a .jinja file).") from None


def assistant_spans(tokenizer, messages: list[dict], where: str = "a conversation") -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn: its text and the end-of-turn
    marker the template puts after it (so the model learns to stop), not the header that opens it."""
    full = render(tokenizer, messages, False, where)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        ends = []
        for prefix, generation in ((messages[:i], True), (messages[:i + 1], False)):
            text = render(tokenizer, prefix, generation, where) if prefix else ""
            if not full.startswith(text):
                raise TunesmithError(f"The chat template renders the start of {where} differently on its own than within the whole "
                                     f"conversation (templates that drop earlier reasoning do), so its assistant turns cannot be found; "
                                     f"pass --chat-template chatml or a .jinja template that renders each turn the same whatever follows.")
            ends.append(len(text))
        start, end = ends
        spans.append((start, start + len(full[start:end].rstrip())))  # the line break after <|im_end|> is layout, not speech
    return full, spans


def encode_conversation(tokenizer, messages: list[dict], max_length: int | None, train_on_prompt: bool = False,
                        where: str = "a conversation") -> EncodedChat:
    """Token ids of the conversation in the model's template; labels on every assistant turn (text and
    end-of-turn token), or on every token with train_on_prompt; cut to max_length."""
    require_chat_template(tokenizer)
    text, spans = (render(tokenizer, messages, False, where), []) if train_on_prompt else assistant_spans(tokenizer, messages, where)
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)  # the template wrote BOS if the model wants one
    except NotImplementedError:
        raise TunesmithError("Chat fine-tuning needs a fast tokenizer (a tokenizer.json) to find the assistant's tokens; "
                             "use a base model that ships one.") from None
    ids = list(encoded["input_ids"])
    labels = [token if train_on_prompt or any(a < end and max(b, a + 1) > start for start, end in spans) else IGNORE
              for token, (a, b) in zip(ids, encoded["offset_mapping"])]
    keep = len(ids) if max_length is None else min(len(ids), max_length)
    return EncodedChat(ids[:keep], labels[:keep], len(ids) - keep)


def encode_conversations(tokenizer, chats: list[list[dict]], max_length: int | None, train_on_prompt: bool = False,
                         source_name=None) -> list[EncodedChat]:
    """encode_conversation for every row; a template's complaint names the row of the file."""
    return [encode_conversation(tokenizer, chat, max_length, train_on_prompt,
                                f"{row_name(source_name, i)} of '{source_name}'" if source_name else f"conversation {i + 1}")
            for i, chat in enumerate(chats)]


def truncation_counts(encoded: list[EncodedChat]) -> tuple[int, int]:
    """(conversations cut to max_length, those of them left with no target token: they cannot train)."""
    cut = [e for e in encoded if e.truncated]
    return len(cut), sum(1 for e in cut if e.targets == 0)


def truncation_note(encoded: list[EncodedChat], max_length: int) -> str | None:
    """One line for the run's notes, or None when nothing was cut."""
    cut, lost = truncation_counts(encoded)
    if not cut:
        return None
    tokens = sum(e.truncated for e in encoded)
    note = (f"Cut {cut:,} of {len(encoded):,} conversation{'s' if len(encoded) != 1 else ''} to --max-length {max_length} "
            f"({tokens:,} token{'s' if tokens != 1 else ''} in all)")
    if lost:
        note += f"; {lost:,} of them kept no assistant token and cannot train: raise --max-length or shorten them"
    return note + "."
