"""`tunesmith generate` and `tunesmith chat` on a finished chat run (a tiny random Llama fine-tuned on three
answers): prompt files in every layout, JSONL written with the answers, the interactive session's slash commands,
and one sentence for each thing a user can get wrong."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import tunesmith
from tunesmith.cli import main
from tunesmith.errors import TunesmithError
from tunesmith.prompts import read_prompts
from test_chat_task import ANSWERS, OPTIONS, alpaca_file, tiny_chat_model  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory, alpaca_file, tiny_chat_model):  # noqa: F811
    out = tmp_path_factory.mktemp("runs") / "helper"
    return tunesmith.finetune(alpaca_file, out=str(out), model=str(tiny_chat_model), method="full", **dict(OPTIONS, lr=1e-2, epochs=40))


def test_a_finished_chat_run_answers_its_training_questions_greedily(chat_run):
    answers = chat_run.generate(list(ANSWERS), temperature=0, max_new_tokens=8)
    assert answers == list(ANSWERS.values())


def test_generate_reads_every_prompt_layout_and_keeps_a_reference_answer(tmp_path):
    (tmp_path / "p.txt").write_text("hi\n\n  how are you \n", encoding="utf-8")
    assert [c[-1]["content"] for c in read_prompts(tmp_path / "p.txt").conversations] == ["hi", "how are you"]
    rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello you"}]},
            {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "bye now"}]}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    prompts = read_prompts(tmp_path / "m.jsonl")
    assert prompts.conversations[0] == [{"role": "user", "content": "hi"}] and prompts.references == ["hello you", None]
    assert prompts.conversations[1][0] == {"role": "system", "content": "be brief"}
    (tmp_path / "a.json").write_text(json.dumps([{"instruction": "how", "input": "are you"}, {"instruction": "hi", "input": ""}]))
    assert [c[-1]["content"] for c in read_prompts(tmp_path / "a.json").conversations] == ["how\nare you", "hi"]
    pd.DataFrame({"id": [1, 2], "Question": ["hi", "bye now"]}).to_csv(tmp_path / "q.csv", index=False)
    assert read_prompts(tmp_path / "q.csv").rows[1] == {"id": "2", "Question": "bye now"}  # CSV cells are read as text
    pd.DataFrame({"id": [1], "asked": ["hi"]}).to_csv(tmp_path / "c.csv", index=False)
    assert read_prompts(tmp_path / "c.csv", column="Asked").conversations == [[{"role": "user", "content": "hi"}]]


@pytest.mark.parametrize("name, content, message", [
    ("empty.txt", "\n\n", "holds no prompts"),
    ("nothing.csv", "id,score\n1,2\n", "no prompt column"),
    ("ends.jsonl", json.dumps({"messages": [{"role": "assistant", "content": "hello"}]}), "turns that do not alternate"),
    ("roles.jsonl", json.dumps({"messages": [{"role": "robot", "content": "hi"}]}), "role the messages layout does not know"),
    ("blank.csv", "prompt\nhi\n\"\"\n", "empty prompt"),
    ("broken.txt", b"caf\xe9\n", "not valid UTF-8"),
])
def test_a_bad_prompts_file_is_one_sentence(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TunesmithError, match=message):
        read_prompts(path)


def test_generate_command_writes_each_row_with_its_answer(tmp_path, chat_run, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"id": i, "instruction": q, "output": a}) for i, (q, a) in enumerate(ANSWERS.items())))
    out = tmp_path / "answers.jsonl"
    assert main(["generate", str(chat_run.path), "--file", str(prompts), "--out", str(out), "--max-new-tokens", "8"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [0, 1, 2]
    assert [r["answer"] for r in rows] == [r["reference"] for r in rows] == list(ANSWERS.values())  # greedy by default
    assert main(["generate", str(chat_run.path), "hi", "--json", "--max-new-tokens", "8"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"prompt": "hi", "answer": "hello you"}


@pytest.mark.parametrize("argv, message", [
    (["--file", "PROMPTS"], "--file needs --out"),
    (["hi", "--temperature", "-1"], "temperature must be a number >= 0"),
    ([], "Nothing to answer"),
])
def test_generate_command_mistakes_are_one_sentence(tmp_path, chat_run, capsys, argv, message):
    argv = [str(tmp_path / "p.txt") if a == "PROMPTS" else a for a in argv]
    assert main(["generate", str(chat_run.path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_classifier_run_cannot_generate(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"status": "done", "task": "text-classification", "label_names": ["a", "b"],
                                                  "text_column": "text", "label_column": "label"}))
    from tunesmith.config import RunConfig
    (run_dir / "config.yaml").write_text(RunConfig().to_yaml())
    assert main(["generate", str(run_dir), "hi"]) == 2
    assert "labels inputs and writes no text" in capsys.readouterr().err


def test_the_chat_session_replies_keeps_the_conversation_and_obeys_slash_commands(chat_run):
    written, pieces = [], []
    session = chat_run.chat_session(write=written.append, temperature=0, max_new_tokens=8)
    lines = iter(["hi", "/set temperature 0", "/set max_new_tokens 2", "/settings", "how are you", "/bogus", "/set top_p 7",
                  "/reset", "/system be brief", "/quit", "never read"])
    assert session.run(read_line=lambda _: next(lines), pieces=pieces.append) == 2
    text = "".join(pieces)
    assert text.startswith("hello you\n")
    assert "max_new_tokens 2" in written[3]
    assert text.split("\n")[1] == "fine thanks"[:len(text.split("\n")[1])] and len(text.split("\n")[1].split()) <= 2
    assert any("Unknown command /bogus" in w for w in written) and any("top_p must be" in w for w in written)
    assert session.conversation.messages == [{"role": "system", "content": "be brief"}]  # /system started over


def test_ctrl_d_ends_the_chat_and_ctrl_c_during_a_reply_keeps_the_partial_reply(chat_run):
    session = chat_run.chat_session(write=lambda _: None, temperature=0, max_new_tokens=8)

    def read(_, lines=iter(["hi"])):
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    def interrupt(piece):
        raise KeyboardInterrupt

    assert session.run(read_line=read, pieces=interrupt) == 1
    assert session.conversation.messages[-1]["role"] == "assistant"  # the turns still alternate


def test_training_writes_held_out_answers_before_and_after_side_by_side(chat_run):
    rows = [json.loads(line) for line in (chat_run.path / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 8  # --answer-prompts 8 of the 10 validation conversations
    assert all(r["after"] == r["reference"] for r in rows)  # the fine-tuned model learned the three answers
    assert sum(r["before"] == r["reference"] for r in rows) == 0  # a random base model did not know them
    assert chat_run.record["before_answers"] == [r["before"] for r in rows]  # kept for a resumed run
    text = (chat_run.path / "answers.md").read_text()
    assert text.startswith("# Answers to 8 held-out validation prompts") and text.count("**after**") == 8
