"""SQuAD JSON and flat QA tables: reading, layout detection, and one-sentence errors for bad answers.

tests/data/squad_sample.json is `allennlp/tests/fixtures/data/squad.json` from the allennlp==0.9.0
sdist on PyPI (Apache-2.0; 1 article, 2 paragraphs, 5 questions taken from SQuAD v1.1, CC BY-SA 4.0),
copied byte for byte; test_sample_matches_allennlp_sdist (slow) checks it against the registry.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile

from pathlib import Path

import pandas as pd
import pytest

from tunesmith.data.read import read_table
from tunesmith.data.squad import looks_like_squad, qa_table, read_squad
from tunesmith.errors import TunesmithError

SAMPLE = Path(__file__).parent / "data" / "squad_sample.json"
CONTEXT = "The Eiffel Tower was finished in 1889 in Paris. Paris is the capital of France."


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value))
    return path


def squad_doc(qas, context=CONTEXT, version="2.0") -> dict:
    return {"version": version, "data": [{"title": "T", "paragraphs": [{"context": context, "qas": qas}]}]}


def test_sample_reads_as_five_questions_with_checked_answers():
    assert looks_like_squad(SAMPLE)
    data = read_squad(SAMPLE)
    frame = data.frame
    assert list(frame.columns) == ["id", "question", "context", "answers", "is_impossible"]
    assert len(frame) == 5 and data.starts_moved == 0
    assert frame["id"].is_unique and not frame["is_impossible"].any()
    assert [len(a) for a in frame["answers"]] == [1, 3, 1, 1, 1]
    first = frame.iloc[0]
    assert first["answers"] == [{"text": "Saint Bernadette Soubirous", "answer_start": 515}]
    for context, answers in zip(frame["context"], frame["answers"]):
        for answer in answers:
            assert context[answer["answer_start"]:answer["answer_start"] + len(answer["text"])] == answer["text"]
    assert frame["context"].nunique() == 2


def test_layout_detection_is_cheap_and_specific(tmp_path):
    assert not looks_like_squad(write_json(tmp_path / "records.json", [{"question": "q", "context": "c"}]))
    assert not looks_like_squad(write_json(tmp_path / "other.json", {"data": [{"text": "x", "label": 1}]}))
    (tmp_path / "squad.csv").write_text("question,context\n")
    assert not looks_like_squad(tmp_path / "squad.csv")
    assert not looks_like_squad(tmp_path / "missing.json")
    assert looks_like_squad(write_json(tmp_path / "v2.json", squad_doc([])))


def test_v2_unanswerable_questions_have_no_answers(tmp_path):
    qas = [{"id": "a", "question": "When was the tower finished?", "answers": [{"text": "1889", "answer_start": 33}]},
           {"id": "b", "question": "Who painted the tower?", "answers": [], "is_impossible": True,
            "plausible_answers": [{"text": "Paris", "answer_start": 41}]}]
    frame = read_squad(write_json(tmp_path / "v2.json", squad_doc(qas))).frame
    assert frame["is_impossible"].tolist() == [False, True]
    assert frame["answers"].tolist() == [[{"text": "1889", "answer_start": 33}], []]


def test_misplaced_start_names_the_question_what_is_there_and_where_the_answer_is(tmp_path):
    qas = [{"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 44}]}]
    path = write_json(tmp_path / "bad.json", squad_doc(qas))
    with pytest.raises(TunesmithError) as info:
        read_squad(path)
    message = str(info.value)
    assert "bad.json" in message and "'q1'" in message and "article 1, paragraph 1" in message
    assert "does not start at character 44" in message and "holds 'is. P' there" in message
    assert "occurs at characters 41, 48" in message and "fix-answer-starts" in message


def test_fix_starts_moves_each_start_to_the_nearest_occurrence_and_counts(tmp_path):
    qas = [{"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 47}]},  # 48 is nearer than 41
           {"id": "q2", "question": "When?", "answers": [{"text": "1889", "answer_start": 30}]},
           {"id": "q3", "question": "What?", "answers": [{"text": "France", "answer_start": CONTEXT.index("France")}]}]
    data = read_squad(write_json(tmp_path / "fixable.json", squad_doc(qas)), fix_starts=True)
    assert data.starts_moved == 2
    assert [a[0]["answer_start"] for a in data.frame["answers"]] == [48, 33, CONTEXT.index("France")]


def test_answer_missing_from_context_is_one_clear_sentence(tmp_path):
    qas = [{"id": "q1", "question": "Who?", "answers": [{"text": "Gustave Eiffel", "answer_start": 0}]}]
    with pytest.raises(TunesmithError, match=r"'Gustave Eiffel' does not occur anywhere in its context; correct the answer"):
        read_squad(write_json(tmp_path / "absent.json", squad_doc(qas)), fix_starts=True)


def test_squad_structure_errors(tmp_path):
    with pytest.raises(TunesmithError, match="top-level \"data\" list"):
        read_squad(write_json(tmp_path / "a.json", {"version": "1.1"}))
    with pytest.raises(TunesmithError, match="no \"qas\" list"):
        read_squad(write_json(tmp_path / "b.json", {"data": [{"paragraphs": [{"context": "x"}]}]}))
    repeated = [{"id": "same", "question": "When?", "answers": []}, {"id": "same", "question": "Where?", "answers": []}]
    with pytest.raises(TunesmithError, match="reuses the question id 'same'"):
        read_squad(write_json(tmp_path / "c.json", squad_doc(repeated)))


def table_csv(tmp_path, rows, columns=("query", "passage", "answer_text", "start"), name="qa.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False)
    return path


def test_flat_csv_with_other_spellings_and_an_empty_answer(tmp_path):
    path = table_csv(tmp_path, [["When was it finished?", CONTEXT, "1889", "33"],
                                ["Who painted it?", CONTEXT, "", ""]])
    frame = qa_table(read_table(path), path).frame
    assert frame["question"].tolist() == ["When was it finished?", "Who painted it?"]
    assert frame["answers"].tolist() == [[{"text": "1889", "answer_start": 33}], []]
    assert frame["is_impossible"].tolist() == [False, True]


def test_flat_table_errors_name_the_line(tmp_path):
    path = table_csv(tmp_path, [["When?", CONTEXT, "1889", "33"], ["", CONTEXT, "Paris", "41"]])
    with pytest.raises(TunesmithError, match=r"'.*qa.csv' line 3 has a context but no question; write the question"):
        qa_table(read_table(path), path)
    path = table_csv(tmp_path, [["When?", "  ", "1889", "33"], ["Where?", "", "Paris", "41"]])
    with pytest.raises(TunesmithError, match=r"line 2 has an empty context \(and 1 more rows like it\); give the passage"):
        qa_table(read_table(path), path)
    path = table_csv(tmp_path, [["When?", CONTEXT, "1889", "33"], ["Where?", CONTEXT, "Paris", "40"]])
    with pytest.raises(TunesmithError, match=r"line 3: the answer 'Paris' does not start at character 40 \(the context holds ' Pari' there\)"):
        qa_table(read_table(path), path)
    assert qa_table(read_table(path), path, fix_starts=True).starts_moved == 1
    path = table_csv(tmp_path, [["When?", CONTEXT, "1889", "33"], ["Where?", CONTEXT, "Paris", "900"]])
    with pytest.raises(TunesmithError, match=rf"the context is only {len(CONTEXT)} characters long"):
        qa_table(read_table(path), path)
    path = table_csv(tmp_path, [["When?", CONTEXT, "1889", "soon"]])
    with pytest.raises(TunesmithError, match=r"line 2: the answer start 'soon' is not a whole number"):
        qa_table(read_table(path), path)
    path = table_csv(tmp_path, [["When?", CONTEXT]], columns=("text", "passage"))
    with pytest.raises(TunesmithError, match=r"holds the question .* pass --text-column"):
        qa_table(read_table(path), path)


def test_jsonl_with_nested_answers_and_huggingface_layout(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [{"id": "x1", "question": "Where?", "context": CONTEXT, "answers": [{"text": "Paris", "answer_start": 41}]},
            {"id": "x2", "question": "When?", "context": CONTEXT, "answers": {"text": ["1889"], "answer_start": [33]}},
            {"id": "x3", "question": "Who?", "context": CONTEXT, "answers": []}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    frame = qa_table(read_table(path), path).frame
    assert frame["id"].tolist() == ["x1", "x2", "x3"]
    assert frame["answers"].tolist() == [[{"text": "Paris", "answer_start": 41}], [{"text": "1889", "answer_start": 33}], []]
    rows[0]["answers"] = [{"text": "Paris", "answer_start": 7}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(TunesmithError, match=r"qa.jsonl' line 1: the answer 'Paris'"):
        qa_table(read_table(path), path)


def test_answers_as_json_text_in_csv_and_no_start_column(tmp_path):
    path = table_csv(tmp_path, [["Where?", CONTEXT, json.dumps([{"text": "Paris", "answer_start": 48}])]],
                     columns=("question", "context", "answers"))
    assert qa_table(read_table(path), path).frame["answers"].iat[0] == [{"text": "Paris", "answer_start": 48}]
    path = table_csv(tmp_path, [["Where?", CONTEXT, "Paris"]], columns=("question", "document", "answer"))
    assert qa_table(read_table(path), path).frame["answers"].iat[0] == [{"text": "Paris", "answer_start": 41}]


@pytest.mark.slow
def test_sample_matches_allennlp_sdist(tmp_path):
    """The bundled sample is the file in the allennlp==0.9.0 sdist (needs the package registry)."""
    subprocess.run([sys.executable, "-m", "pip", "download", "allennlp==0.9.0", "--no-deps", "--no-binary", ":all:",
                    "-d", str(tmp_path), "-q"], check=True, timeout=600)
    with tarfile.open(next(tmp_path.glob("allennlp-0.9.0.tar.gz"))) as tf:
        original = tf.extractfile("allennlp-0.9.0/allennlp/tests/fixtures/data/squad.json").read()
    assert original == SAMPLE.read_bytes()
