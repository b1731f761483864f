"""Prompts to answer, for `tunesmith generate --file`: every layout a chat file can have, the answer optional.

    .txt               one prompt per non-empty line
    messages/sharegpt  conversations ending with the user's turn; a final assistant turn is taken out and kept
                       as the reference answer (a held-out chat file answers its own questions)
    alpaca             instruction (+ input, system, history); output, when present, is the reference
    prompt-completion  prompt; completion, when present, is the reference
    a prompt column    prompt, question, query, input or text (or --text-column), or a table's one text column

Each prompt comes back with its row as read (written back beside the answer) and the reference answer or None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .data import chat as conv
from .data.columns import by_name, is_missing
from .errors import TunesmithError

PROMPT_COLUMNS = ("prompt", "question", "query", "input", "text")
NO_ANSWER = "\x00no answer\x00"  # stands in for a missing answer while the chat readers check a row


@dataclass
class Prompts:
    conversations: list[list[dict]]  # each ends with the user's turn
    rows: list[dict]                 # the file's rows, JSON-ready, to write back with the answers
    references: list[str | None]     # the answer the file holds for each prompt, if any


def read_prompts(path, encoding: str | None = None, column: str | None = None) -> Prompts:
    from .data.read import decode
    from .data.sources import read_data_file

    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"The prompts file '{path}' does not exist; give a .txt file (one prompt a line) or a JSONL/JSON/CSV file of prompts.")
    if path.suffix.lower() == ".txt":
        lines = [line.strip() for line in decode(path.read_bytes(), path, encoding).splitlines()]
        prompts = [line for line in lines if line]
        return checked_nonempty(Prompts([[{"role": "user", "content": p}] for p in prompts], [{"prompt": p} for p in prompts],
                                        [None] * len(prompts)), path)
    raw = read_data_file(path, encoding, role="input")
    layout = None if column else conv.chat_layout(raw)
    if layout is None:
        return checked_nonempty(column_prompts(raw, path, column), path)
    return checked_nonempty(conversation_prompts(raw, layout[0], path), path)


def checked_nonempty(prompts: Prompts, path: Path) -> Prompts:
    if not prompts.conversations:
        raise TunesmithError(f"The prompts file '{path}' holds no prompts; give one prompt a line (.txt) or a row per prompt.")
    return prompts


def json_ready(row: dict) -> dict:
    """A row's cells as JSON takes them: missing cells None, arrays lists."""
    def cell(value):
        if hasattr(value, "tolist"):
            return value.tolist()
        return None if isinstance(value, float) and math.isnan(value) else value
    return {str(k): cell(v) for k, v in row.items()}


def column_prompts(raw: pd.DataFrame, path: Path, column: str | None) -> Prompts:
    name = by_name(raw, (column.strip().lower(),)) if column else by_name(raw, PROMPT_COLUMNS)
    if name is None and not column:
        texts = [c for c in raw.columns if raw[c].map(lambda v: isinstance(v, str)).all()]
        name = texts[0] if len(texts) == 1 else None
    if name is None:
        wanted = f"no column '{column}'" if column else f"no prompt column ({', '.join(PROMPT_COLUMNS)}) and no conversations"
        raise TunesmithError(f"The prompts file '{path}' has {wanted} (its columns: {', '.join(map(str, raw.columns[:8]))}); "
                             f"name the column with --text-column, or give messages, instruction or prompt columns.")
    empty = [i for i, v in enumerate(raw[name]) if is_missing(v) or not str(v).strip()]
    if empty:
        raise TunesmithError(f"The prompts file '{path}' has {len(empty)} empty prompt(s) in column '{name}' (the first on row {empty[0] + 1}); "
                             f"fill or remove them.")
    rows = [json_ready(r) for r in raw.to_dict("records")]
    return Prompts([[{"role": "user", "content": str(v)}] for v in raw[name]], rows, [None] * len(rows))


def conversation_prompts(raw: pd.DataFrame, layout: str, path: Path) -> Prompts:
    """Rows of a chat layout, their answers optional: the last assistant turn, when a row ends with one, is its reference."""
    work = raw.copy()
    if layout in ("alpaca", "prompt-completion"):
        names = conv.ALPACA_OUTPUTS if layout == "alpaca" else ("completion",)
        output = by_name(work, names)
        if output is None:
            output = names[0]
            work[output] = NO_ANSWER
        else:
            work[output] = [NO_ANSWER if is_missing(v) else v for v in work[output]]
    conversations, references = [], []
    for i, chat in enumerate(conv.conversations(work, layout, path, needs_assistant=False)):
        reference = None
        if chat[-1]["role"] == "assistant":
            reference = None if chat[-1]["content"] == NO_ANSWER else chat[-1]["content"]
            chat = chat[:-1]
        if not chat or chat[-1]["role"] != "user":
            raise TunesmithError(f"Row {i + 1} of '{path}' has no user message to answer; give each row a question (a user turn last).")
        conversations.append(chat)
        references.append(reference)
    return Prompts(conversations, [json_ready(r) for r in raw.to_dict("records")], references)
