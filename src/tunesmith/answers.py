"""Answers to held-out prompts before and after fine-tuning, side by side, for a person to read.

A loss says how much better the model predicts the held-out answers; reading what it writes says whether that
is the change wanted (the tone, the facts, the format) and what it lost. The first --answer-prompts held-out
conversations (test, else validation) are cut before their last assistant turn, answered greedily by the base
model before the first step and by the fine-tuned model at the end, and written to answers.md (to read) and
answers.jsonl (for tools), each beside the answer the data holds.
"""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import atomic_write_text
from .generation import GenerationSettings, generate_batch

ANSWERS_MD, ANSWERS_JSONL = "answers.md", "answers.jsonl"
MAX_NEW_TOKENS = 128  # enough to see an answer's start and its tone; generation on a CPU is the slow part


def held_out_prompts(table, count: int) -> list[dict]:
    """[{'prompt': messages up to the last assistant turn, 'reference': that turn}] of the first `count` conversations."""
    prompts = []
    for messages in list(table["messages"])[:count] if table is not None and count else []:
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompts.append({"prompt": [dict(m) for m in messages[:last]], "reference": messages[last]["content"]})
    return prompts


def answer(model, tokenizer, prompts: list[dict]) -> list[str]:
    settings = GenerationSettings(temperature=0, max_new_tokens=MAX_NEW_TOKENS)
    return generate_batch(model, tokenizer, [p["prompt"] for p in prompts], settings) if prompts else []


def write_answers(run_dir: Path, split: str, prompts: list[dict], before: list[str], after: list[str]) -> None:
    rows = [dict(p, before=b, after=a) for p, b, a in zip(prompts, before, after)]
    atomic_write_text(Path(run_dir) / ANSWERS_JSONL, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_text(Path(run_dir) / ANSWERS_MD, answers_markdown(split, rows))


def quoted(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in (text.strip() or "(nothing)").splitlines())


def answers_markdown(split: str, rows: list[dict]) -> str:
    lines = [f"# Answers to {len(rows)} held-out {split} prompts, before and after fine-tuning",
             "", f"Greedy decoding, at most {MAX_NEW_TOKENS} new tokens; 'expected' is the answer the {split} data holds.", ""]
    for n, row in enumerate(rows, start=1):
        lines += [f"## {n}", ""]
        for message in row["prompt"]:
            lines += [f"**{message['role']}**:", "", quoted(message["content"]), ""]
        for title, key in (("before", "before"), ("after", "after"), ("expected", "reference")):
            lines += [f"**{title}**:", "", quoted(row[key]), ""]
    return "\n".join(lines)
