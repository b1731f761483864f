"""facts-qa, the generated QA set: deterministic, held-out names and question templates, valid answers."""
from __future__ import annotations

import json
import re

import pytest

from tunesmith.assets.generated_qa import (FACTS, SPLIT_QUESTIONS, build_generated_qa, generate_split, held_out_names,
                                           question_templates)
from tunesmith.data.read import read_table
from tunesmith.data.squad import qa_table


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("facts-qa")
    paths = build_generated_qa(folder)
    return paths, {split: [json.loads(line) for line in path.read_text().splitlines()] for split, path in paths.items()}


def test_same_bytes_every_time_and_a_seed_changes_them(built, tmp_path):
    paths, _ = built
    again = build_generated_qa(tmp_path / "again")
    assert all(paths[s].read_bytes() == again[s].read_bytes() for s in SPLIT_QUESTIONS)
    other = build_generated_qa(tmp_path / "other", seed=7)
    assert paths["train"].read_bytes() != other["train"].read_bytes()


def test_sizes_fields_lengths_and_unanswerable_share(built):
    _, records = built
    for split, expected in SPLIT_QUESTIONS.items():
        rows = records[split]
        assert len(rows) == expected
        assert all(list(r) == ["id", "question", "context", "answers"] for r in rows)
        assert len({r["id"] for r in rows}) == expected
        words = [len(r["context"].split()) for r in rows]
        assert 60 <= min(words) and max(words) <= 250
        share = sum(not r["answers"] for r in rows) / expected
        assert 0.08 <= share <= 0.12, (split, share)


def test_every_answer_sits_at_its_start_and_occurs_once(built):
    _, records = built
    for rows in records.values():
        for r in rows:
            for answer in r["answers"]:
                start, text = answer["answer_start"], answer["text"]
                assert r["context"][start:start + len(text)] == text
                assert r["context"].count(text) == 1, (r["id"], text)


def test_the_files_pass_the_qa_table_checks(built):
    paths, _ = built
    data = qa_table(read_table(paths["validation"]), paths["validation"])
    assert data.starts_moved == 0 and data.frame["is_impossible"].sum() == 30


def test_no_validation_or_test_name_appears_in_train(built):
    _, records = built
    train_text = " ".join(r["context"] + " " + r["question"] for r in records["train"])
    train_words = set(re.findall(r"[A-Za-z]+", train_text))
    for split in ("validation", "test"):
        names = held_out_names(split)
        assert names and not train_words & set(names), split
        text = " ".join(r["context"] for r in records[split])
        assert sum(name in text for name in names) > 0.8 * len(names)  # the pools are really used
    assert not set(held_out_names("validation")) & set(held_out_names("test"))


def template_pattern(template: str) -> re.Pattern:
    return re.compile(re.escape(template).replace(re.escape("{s}"), "(.+)"))


def test_test_questions_use_only_templates_train_never_uses(built):
    _, records = built
    held_out = [template_pattern(t) for t in question_templates("test")]
    assert question_templates("test") == question_templates("validation")
    assert not set(question_templates("train")) & set(question_templates("test"))
    for r in records["train"]:
        assert not any(p.fullmatch(r["question"]) for p in held_out), r["question"]
    for split in ("validation", "test"):
        assert all(any(p.fullmatch(r["question"]) for p in held_out) for r in records[split])
    used = {r["_meta"]["template"] for r in generate_split("test")}
    assert len(used) > 0.8 * len(question_templates("test"))


def test_questions_have_same_kind_distractors_and_unanswerables_a_plausible_answer():
    for split in ("train", "test"):
        for r in generate_split(split, n_questions=600):
            meta = r["_meta"]
            same_kind = [v for kind, v in meta["values"] if kind == meta["value_kind"]]
            assert all(v in r["context"] for v in same_kind)
            if r["answers"]:
                assert len(same_kind) >= 2 and r["answers"][0]["text"] in same_kind
            else:  # the fact is stated for the other subject, never for the one asked about
                assert meta["plausible_answer"] in r["context"] and meta["plausible_answer"] in same_kind
                for sentence in FACTS[meta["kind"]][meta["fact"]][1]:
                    for value in same_kind:
                        art = "an" if value[0] in "aeiou" else "a"
                        assert sentence.format(s=meta["subject"], v=value, art=art) not in r["context"]
