"""Preference pairs for DPO: the layouts people keep them in, read into one table and checked.

Every layout becomes the same three columns: `prompt` (OpenAI-style messages that end with a user turn, an
optional system message first), `chosen` and `rejected` (the two answers to it, as text).

    sharegpt        LLaMA-Factory's ranking layout (dpo_en_demo.json): a `conversations` column of
                    [{"from": "system"|"human"|"gpt", "value"}], `chosen` and `rejected` {"from": "gpt", "value"} turns
    conversational  TRL's layout (the bundled dpo-demo): a `prompt` column of [{"role", "content"}] messages, `chosen`
                    and `rejected` each a list holding one assistant message
    text            prompt, chosen and rejected columns of text; a text prompt is one user turn

Cells may be mixed within a file (a text answer after a list prompt), and a CSV may hold the lists as JSON
text. A `system` column, where there is one, opens each prompt. A prompt and either answer make one
conversation, checked by data/chat.py's rules (roles known, text everywhere, system first, user and
assistant alternating); a bad row is one sentence naming it.
"""
from __future__ import annotations

import json

import pandas as pd

from ..errors import TunesmithError
from .chat import ROLE_NAMES, Problem, as_list, checked, text_of
from .columns import by_name, is_missing
from .media_files import SHOWN, row_name

PROMPT_COLUMNS, TURNS_COLUMNS = ("prompt",), ("conversations", "messages")
ROLES = ROLE_NAMES["sharegpt"]  # system, user (human), assistant (gpt): every spelling either layout uses
LAYOUT_NAMES = {"sharegpt": "LLaMA-Factory's ranking layout", "conversational": "TRL's conversational layout", "text": "text columns"}

PROBLEMS = {  # kind: (what the file has, the fix), in the order they are reported
    "missing": ("pairs without a prompt, chosen or rejected", "give every pair all three, or remove those rows"),
    "shape": ("cells that are neither text nor messages",
              'a prompt is text or a list of {"role", "content"} (or {"from", "value"}) messages and an answer text or one '
              "assistant message: fix or remove those rows"),
    "role": ("messages with a role tunesmith does not know", "the roles accepted are system, user (or human) and assistant "
                                                            "(or gpt): rename those messages or remove them"),
    "answer_role": ("answers that are not the assistant's", "chosen and rejected must be assistant (gpt) turns: fix or remove those rows"),
    "empty": ("messages or answers with no text", "give every message and answer its text, or remove those rows"),
    "ending": ("prompts that do not end with a user turn", "the answers reply to the prompt's last user turn: end each prompt "
                                                           "with one, or remove those rows"),
    "system": ("a system message after the start of a prompt", "a system message may only open the prompt: move it to the start or remove it"),
    "order": ("prompts whose turns do not alternate between user and assistant",
              "after an optional system message the turns must go user, assistant, user, ...: merge repeated turns or add the missing ones"),
    "same": ("pairs whose chosen answer is the rejected one", "such a pair says nothing about which answer is better: fix or remove those rows"),
}


def preference_layout(raw: pd.DataFrame) -> tuple[str, str] | None:
    """(layout, the reason in a few words) of a table of preference pairs, or None without chosen and rejected columns."""
    chosen, rejected = by_name(raw, ("chosen",)), by_name(raw, ("rejected",))
    if chosen is None or rejected is None:
        return None
    prompt = by_name(raw, PROMPT_COLUMNS)
    if prompt is not None:
        listed = any(not isinstance(cell, str) and as_list(cell) is not None for cell in map(parsed, raw[prompt].head(50)))
        layout, where = ("conversational", f"a {prompt} column of messages") if listed else ("text", f"a {prompt} column of text")
    elif by_name(raw, TURNS_COLUMNS) is not None:
        layout, where = "sharegpt", f"a {by_name(raw, TURNS_COLUMNS)} column of turns"
    else:
        layout, where = "text", "no prompt column"
    return layout, f"{chosen} and {rejected} columns with {where} (preference pairs, {LAYOUT_NAMES[layout]})"


def read_preference_pairs(raw: pd.DataFrame, source) -> tuple[pd.DataFrame, str]:
    """(the table of prompt/chosen/rejected, the file's layout); a bad row is one sentence naming it."""
    found = preference_layout(raw)
    if found is None:
        raise TunesmithError(f"'{source}' holds no preference pairs (its columns: {', '.join(map(str, raw.columns[:8]))}); give chosen and "
                             f"rejected columns beside a prompt column (text or messages), or LLaMA-Factory's conversations column.")
    columns = {"prompt": by_name(raw, PROMPT_COLUMNS) or by_name(raw, TURNS_COLUMNS), "chosen": by_name(raw, ("chosen",)),
               "rejected": by_name(raw, ("rejected",)), "system": by_name(raw, ("system",))}
    if columns["prompt"] is None:
        raise TunesmithError(f"'{source}' has {columns['chosen']} and {columns['rejected']} columns but no prompt they answer (its columns: "
                             f"{', '.join(map(str, raw.columns[:8]))}); add a prompt column (text or a list of messages), or a conversations column.")
    pairs, problems = [], {}
    for i, row in enumerate(raw.to_dict("records")):
        try:
            pairs.append(row_pair(row, columns))
        except Problem as problem:
            problems.setdefault(problem.kind, []).append((i, problem.detail))
    for kind in PROBLEMS:
        if kind in problems:
            raise TunesmithError(problem_sentence(kind, problems[kind], source))
    return pd.DataFrame(pairs, columns=["prompt", "chosen", "rejected"]), found[0]


def row_pair(row: dict, columns: dict) -> dict:
    """One row as {prompt: messages, chosen: text, rejected: text}, or the Problem that stops it."""
    missing = [key for key in ("prompt", "chosen", "rejected") if is_missing(row[columns[key]])]
    if missing:
        raise Problem("missing", f"no {' or '.join(missing)}")
    system = row[columns["system"]] if columns["system"] is not None else None
    turns = ([] if is_missing(system) else [("system", system, "the system column")]) + prompt_turns(row[columns["prompt"]])
    answers = {key: answer_text(row[columns[key]], key) for key in ("chosen", "rejected")}
    last = turns[-1][0] if turns else None
    role = ROLES.get(last.strip().lower()) if isinstance(last, str) else None
    if role is not None and role != "user":
        raise Problem("ending", f"it ends with {'an' if role == 'assistant' else 'a'} {role} turn")
    # the prompt and an answer are one conversation, checked as the chat task checks conversations
    prompt = checked(turns + [("assistant", answers["chosen"], "the chosen answer")], "sharegpt")[:-1]
    if answers["chosen"].strip() == answers["rejected"].strip():
        raise Problem("same")
    return {"prompt": prompt, **answers}


def parsed(cell):
    """A cell as written, with a CSV's JSON text of messages read into them: a list of objects, or one message. Other
    text stays text even where it parses as JSON (an answer may be a JSON object, a prompt '[1, 2, 3]')."""
    if isinstance(cell, str) and cell.lstrip()[:1] in ("[", "{"):
        try:
            value = json.loads(cell)
        except ValueError:
            return cell
        if (isinstance(value, list) and value and all(isinstance(item, dict) for item in value)) or message_parts(value) is not None:
            return value
    return cell


def prompt_turns(cell) -> list[tuple]:
    """(role as written, content, where) for every turn of a prompt cell: text is one user turn."""
    cell = parsed(cell)
    if isinstance(cell, str):
        return [("user", cell, "the prompt")]
    items = as_list(cell)
    if not items:
        raise Problem("shape", "its prompt has no messages" if items == [] else f"its prompt is a {type(cell).__name__}")
    turns = []
    for n, item in enumerate(items, start=1):
        role_text = message_parts(item)
        if role_text is None:
            raise Problem("shape", f"prompt message {n} is not a {{role, content}} message")
        turns.append((*role_text, f"prompt message {n}"))
    return turns


def message_parts(item) -> tuple | None:
    """(role, content) of an OpenAI {role, content} or ShareGPT {from, value} message; None for anything else."""
    if isinstance(item, dict):
        for role, text in (("role", "content"), ("from", "value")):
            if role in item:
                return item[role], item.get(text)
    return None


def answer_text(cell, key: str) -> str:
    """The text of a chosen or rejected cell: text, one assistant message, or a list holding one."""
    cell = parsed(cell)
    items = None if isinstance(cell, str) else as_list(cell)  # text that parsed as no messages stays text
    if items is not None:
        if len(items) != 1:
            raise Problem("shape", f"its {key} holds {len(items)} messages, not one answer")
        cell = items[0]
    if isinstance(cell, dict):
        parts = message_parts(cell)
        if parts is None:
            raise Problem("shape", f"its {key} is not a {{role, content}} message")
        role, cell = parts
        if not isinstance(role, str) or ROLES.get(role.strip().lower()) != "assistant":
            raise Problem("answer_role", f"its {key} is from {role!r}")
    text = text_of(cell)
    if text is None:
        raise Problem("shape", f"its {key} is a {type(cell).__name__}")
    if not text.strip():
        raise Problem("empty", f"its {key} answer")
    return text


def problem_sentence(kind: str, rows: list[tuple[int, str]], source) -> str:
    places = ", ".join(f"{row_name(source, i)} ({detail})" if detail else row_name(source, i) for i, detail in rows[:SHOWN])
    if len(rows) > SHOWN:
        places += f" and {len(rows) - SHOWN} more rows"
    what, fix = PROBLEMS[kind]
    return f"'{source}' has {what} on {places}; {fix}."
