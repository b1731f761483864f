"""Extractive question answering data: SQuAD v1.1/v2.0 JSON files and flat QA tables, validated.

Both readers give the same flat table, one row per question: id, question, context, answers
(a list of {"text", "answer_start"}; empty when the question has no answer) and is_impossible.
Answer starts are checked against the context here, because a start that is off by a few
characters trains the model on the wrong tokens without any error further down.
"""
from __future__ import annotations

import json
import math
import numbers
import re
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd

from ..errors import TunesmithError, did_you_mean
from .columns import is_missing, names_matching

COLUMNS = ["id", "question", "context", "answers", "is_impossible"]
QUESTION_NAMES = ("question", "query", "questions", "question_text")
CONTEXT_NAMES = ("context", "passage", "paragraph", "document", "contexts", "context_text")
ANSWER_NAMES = ("answers", "answer", "answer_text", "answer_texts")
START_NAMES = ("answer_start", "start", "answer_starts", "start_char", "answer_start_char")
# The options that name the columns: a question is the first text of the pair, its context the second, the answer the label.
QUESTION_OPTION, CONTEXT_OPTION, ANSWER_OPTION = "--text-column", "--text-pair-column", "--label-column"
FIX_STARTS_HINT = "pass --fix-answer-starts to move each start to the nearest occurrence"
SNIFF_BYTES = 65536  # enough to see the first article's keys in any SQuAD file
SHOWN = 40  # characters of context quoted in a message


class QAData(NamedTuple):
    """A validated QA table and how many answer starts `fix_starts` moved (0 when it is off)."""

    frame: pd.DataFrame
    starts_moved: int


def looks_like_squad(path: str | Path) -> bool:
    """True for a .json file laid out as SQuAD ({"data": [{"paragraphs": [{"context", "qas"}]}]}),
    judged from its first bytes only, so that a large file is not parsed twice."""
    path = Path(path)
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES).decode("utf-8-sig", errors="ignore")
    except OSError:
        return False
    return (head.lstrip().startswith("{") and re.search(r'"data"\s*:\s*\[', head) is not None
            and re.search(r'"paragraphs"\s*:\s*\[', head) is not None and '"qas"' in head)


def read_squad(path: str | Path, fix_starts: bool = False) -> QAData:
    """A SQuAD v1.1 or v2.0 file as one validated row per question (see squad_rows)."""
    return qa_table(squad_rows(path), path, fix_starts=fix_starts)


def squad_rows(path: str | Path) -> pd.DataFrame:
    """A SQuAD v1.1 or v2.0 file flattened to one row per question, its layout checked but its answers
    not yet (qa_table does that, with --fix-answer-starts when given); v2's plausible_answers are
    dropped (they are wrong answers, kept in SQuAD for analysis), and is_impossible questions get
    no answers. `attrs["row_names"]` says where each row is in the file, for qa_table's messages."""
    path = Path(path)
    if not path.is_file():
        raise TunesmithError(f"The SQuAD file '{path}' does not exist; check the path.")
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError:
        raise TunesmithError(f"'{path}' is not UTF-8 text; re-save the SQuAD file as UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise TunesmithError(f"'{path}' is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); fix the file.") from None
    articles = document.get("data") if isinstance(document, dict) else None
    if not isinstance(articles, list):
        raise TunesmithError(f"'{path}' is not a SQuAD file: it needs a top-level \"data\" list of articles with \"paragraphs\".")
    rows, places = [], []
    for a, article in enumerate(articles, start=1):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise TunesmithError(f"Article {a} of '{path}' has no \"paragraphs\" list; give each article its paragraphs as in SQuAD.")
        for p, paragraph in enumerate(paragraphs, start=1):
            where = f"article {a}, paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise TunesmithError(f"{where.capitalize()} of '{path}' has no \"qas\" list; give each paragraph its questions as in SQuAD.")
            for q, qa in enumerate(paragraph["qas"], start=1):
                if not isinstance(qa, dict):
                    raise TunesmithError(f"Question {q} of {where} of '{path}' is not an object; write it as {{\"id\", \"question\", \"answers\"}}.")
                answers = [] if qa.get("is_impossible", False) else qa.get("answers", [])
                if not isinstance(answers, list) or not all(isinstance(x, dict) and isinstance(x.get("text"), str) for x in answers):
                    raise TunesmithError(f"Question {qa.get('id', q)!r} ({where}) of '{path}' has malformed \"answers\"; "
                                         f"give a list of {{\"text\", \"answer_start\"}} objects.")
                rows.append({"id": str(qa.get("id", f"{a}-{p}-{q}")), "question": qa.get("question"), "context": paragraph.get("context"),
                             "answers": [{"text": x["text"], "answer_start": x.get("answer_start")} for x in answers]})
                places.append(f"question {rows[-1]['id']!r} ({where})")
    if not rows:
        raise TunesmithError(f"'{path}' holds no questions; add paragraphs with \"qas\" to it.")
    frame = pd.DataFrame(rows, columns=["id", "question", "context", "answers"])
    frame.attrs["row_names"] = places
    return frame


def qa_table(frame: pd.DataFrame, path, question: str | None = None, context: str | None = None, answer: str | None = None,
             answer_start: str | None = None, fix_starts: bool = False, with_answers: bool = True) -> QAData:
    """A flat table (one question a row) in the same shape as read_squad's.

    Column names are inferred from common spellings unless given. The answer column holds the
    answer text (empty: no answer), a list of {"text", "answer_start"}, or Hugging Face's
    {"text": [...], "answer_start": [...]} (as objects in JSON/Parquet, or JSON text in a CSV cell).
    Without a start column, or with a blank start, the answer's first occurrence is used.
    with_answers=False (questions to answer) needs no answer column and leaves `answers` None.
    """
    question = pick_column(frame, path, question, QUESTION_NAMES, "question", QUESTION_OPTION)
    context = pick_column(frame, path, context, CONTEXT_NAMES, "context", CONTEXT_OPTION)
    answer = pick_column(frame, path, answer, ANSWER_NAMES, "answer", ANSWER_OPTION) if with_answers else None
    start = pick_column(frame, path, answer_start, START_NAMES, None, None) if with_answers else None
    place = row_namer(path, frame.attrs.get("row_names"))
    ids = frame["id"].map(str) if "id" in frame.columns else pd.Series([f"q{i}" for i in range(len(frame))], index=frame.index)
    answers = None
    if with_answers:
        answers = [parse_answers(frame[answer].iat[i], None if start is None else frame[start].iat[i], path, place(i)) for i in range(len(frame))]
    table = pd.DataFrame({"id": ids.to_numpy(), "question": frame[question].to_numpy(), "context": frame[context].to_numpy(),
                          "answers": answers if answers is not None else [None] * len(frame)})
    return validate(table, path, place, fix_starts, with_answers)


def pick_column(frame: pd.DataFrame, path, given: str | None, names, role: str | None, option: str | None) -> str | None:
    """The named column, else the first common spelling; role=None means the column is optional."""
    if given is not None:
        by_lower = {str(c).lower(): c for c in frame.columns}
        if given.lower() in by_lower:
            return by_lower[given.lower()]
        raise TunesmithError(f"'{path}' has no column '{given}' (its columns: {', '.join(map(str, frame.columns))}); pass the right one with {option}."
                             f"{did_you_mean(given, frame.columns)}")
    found = names_matching(frame, names)
    if found or role is None:
        return found[0] if found else None
    raise TunesmithError(f"Could not tell which column of '{path}' holds the {role} (columns: {', '.join(map(str, frame.columns))}); "
                         f"name it {names[0]!r} or pass {option}.")


def row_namer(path, names: list[str] | None = None) -> Callable[[int], str]:
    """Row i as the user finds it in their file: CSV lines count the header, JSONL lines do not;
    `names` where the reader knew better (a SQuAD question's id, article and paragraph)."""
    if names is not None:
        return lambda i: names[i]
    suffixes = [s.lower() for s in Path(str(path)).suffixes if s.lower() not in (".gz", ".bz2", ".xz", ".zip")]
    kind = suffixes[-1] if suffixes else ""
    if kind in (".csv", ".tsv", ".tab"):
        return lambda i: f"line {i + 2}"
    if kind in (".jsonl", ".ndjson"):
        return lambda i: f"line {i + 1}"
    return lambda i: f"row {i + 1}"


def parse_answers(cell, start_cell, path, where: str) -> list[dict]:
    """One answer cell (and start cell) as [{"text", "answer_start"}]; answer_start None = find it."""
    if isinstance(cell, str) and cell.strip()[:1] in ("[", "{"):
        try:
            cell = json.loads(cell)
        except json.JSONDecodeError:
            pass  # an answer that merely starts with a bracket is still text
    if isinstance(cell, dict):  # Hugging Face datasets' layout: parallel lists
        texts, starts = list(cell.get("text", [])), list(cell.get("answer_start", []))
        if len(starts) not in (0, len(texts)):
            raise TunesmithError(f"'{path}' {where}: the answer has {len(texts)} texts but {len(starts)} starts; give one start per answer text.")
        cell = [{"text": t, "answer_start": s} for t, s in zip(texts, starts or [None] * len(texts))]
    if isinstance(cell, (list, tuple, np.ndarray)):  # ndarray: a Parquet list column
        items = list(cell)
        if not all(isinstance(x, dict) and isinstance(x.get("text"), str) for x in items):
            raise TunesmithError(f"'{path}' {where}: the answers are not a list of {{\"text\", \"answer_start\"}} objects; write them that way "
                                 f"or use one answer text column and one start column.")
        return [{"text": x["text"], "answer_start": as_start(x.get("answer_start"), path, where)} for x in items if x["text"].strip()]
    if is_missing(cell):
        return []
    return [{"text": str(cell), "answer_start": as_start(start_cell, path, where)}]


def as_start(value, path, where: str) -> int | None:
    if value is None or is_missing(value):
        return None
    if isinstance(value, numbers.Number) and not isinstance(value, bool) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise TunesmithError(f"'{path}' {where}: the answer start {value!r} is not a whole number of characters; "
                         f"give the answer's character offset in the context (0 = first character).")


def validate(table: pd.DataFrame, path, place: Callable[[int], str], fix_starts: bool, with_answers: bool = True) -> QAData:
    """Check every row (question, context, each answer against the context); one error names the
    first bad row of the first kind found and how many more rows have that problem."""
    contexts = [v if isinstance(v, str) else ("" if is_missing(v) else str(v)) for v in table["context"]]
    questions = [v if isinstance(v, str) else ("" if is_missing(v) else str(v)) for v in table["question"]]
    empty_context = [i for i, c in enumerate(contexts) if not c.strip()]
    if empty_context:
        raise TunesmithError(f"'{path}' {place(empty_context[0])} has an empty context{more(empty_context)}; give the passage the answer comes from, "
                             f"or remove the row.")
    empty_question = [i for i, q in enumerate(questions) if not q.strip()]
    if empty_question:
        raise TunesmithError(f"'{path}' {place(empty_question[0])} has a context but no question{more(empty_question)}; write the question, "
                             f"or remove the row.")
    ids = table["id"].map(str)
    out = pd.DataFrame({"id": ids.to_numpy(), "question": questions, "context": contexts})
    if not with_answers:
        return QAData(out, 0)
    repeated = [i for i, dup in enumerate(ids.duplicated()) if dup]
    if repeated:
        raise TunesmithError(f"'{path}' {place(repeated[0])} reuses the question id {ids.iat[repeated[0]]!r}{more(repeated)}; give every question "
                             f"its own id, since answers are scored against their question's id.")
    out["answers"], moved = checked_answers(contexts, table["answers"], path, place, fix_starts)
    out["is_impossible"] = [not a for a in out["answers"]]
    return QAData(out[COLUMNS], moved)


def checked_answers(contexts: list[str], answers, path, place: Callable[[int], str], fix_starts: bool) -> tuple[list[list[dict]], int]:
    """Each row's answers with a start that points at the answer text, and how many fix_starts moved."""
    moved, checked, problems = 0, [], []
    for i, (context, row_answers) in enumerate(zip(contexts, answers)):
        row = []
        for answer in row_answers:
            text, start = answer["text"], answer["answer_start"]
            if start is None:
                start = context.find(text)
            if start >= 0 and context[start:start + len(text)] == text:
                row.append({"text": text, "answer_start": int(start)})
                continue
            found = occurrences(context, text)
            if found and fix_starts:
                row.append({"text": text, "answer_start": min(found, key=lambda s: (abs(s - start), s))})
                moved += 1
                continue
            problems.append((i, text, start, found))
            row.append(answer)
        checked.append(row)
    if problems:
        raise TunesmithError(answer_problem(path, place, problems, contexts))
    return checked, moved


def occurrences(context: str, text: str) -> list[int]:
    found, at = [], context.find(text)
    while at >= 0 and text:
        found.append(at)
        at = context.find(text, at + 1)
    return found


def answer_problem(path, place, problems, contexts) -> str:
    """The sentence for the first bad answer: misplaced (with where it really is) or absent."""
    misplaced = [p for p in problems if p[3]]
    absent = [p for p in problems if not p[3]]
    if misplaced:
        i, text, start, found = misplaced[0]
        context = contexts[i]
        if start < 0:
            there = "a start cannot be negative"
        elif start >= len(context):
            there = f"the context is only {len(context)} characters long"
        else:
            there = f"the context holds {shorten(context[start:start + max(len(text), 1)])} there"
        where = f"character {found[0]}" if len(found) == 1 else f"characters {', '.join(map(str, found[:5]))}{'...' if len(found) > 5 else ''}"
        return (f"'{path}' {place(i)}: the answer {shorten(text)} does not start at character {start} ({there}) but occurs at {where}"
                f"{more(misplaced, 'answers')}; correct answer_start, or {FIX_STARTS_HINT}.")
    i, text, _, _ = absent[0]
    return (f"'{path}' {place(i)}: the answer {shorten(text)} does not occur anywhere in its context{more(absent, 'answers')}; "
            f"correct the answer or the context, or leave the answer empty if the question has no answer.")


def more(items, what: str = "rows") -> str:
    return f" (and {len(items) - 1} more {what} like it)" if len(items) > 1 else ""


def shorten(text: str) -> str:
    return repr(text if len(text) <= SHOWN else text[:SHOWN - 3] + "...")
