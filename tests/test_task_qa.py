"""The question-answering task on the tiny model: detection, window labels, loss, training, scoring,
prediction with offsets, plain-transformers loading, LoRA, --data squad, facts-qa, and bad input."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tunesmith
import tunesmith.tasks.question_answering  # noqa: F401  (registers the task)
from conftest import FILLER, POSITIVE
from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.data.sources import read_data_file
from tunesmith.errors import TunesmithError
from tunesmith.tasks import choose_task
from tunesmith.tasks.question_answering import QuestionAnswering

SAMPLE = Path(__file__).parent / "data" / "squad_sample.json"
QUESTION = "which word is good ?"
QA_OPTIONS = {"max_length": 48, "doc_stride": 12, "epochs": 10, "lr": 3e-3}


def toy_qa(n: int, seed: int = 0, unanswerable: float = 0.0) -> list[dict]:
    """Contexts of filler words with one positive word to find (every fifth longer than one window);
    with `unanswerable`, that share of contexts has none and no answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [rng.choice(FILLER) for _ in range(rng.randint(50, 60) if i % 5 == 0 else rng.randint(4, 12))]
        answers = []
        if rng.random() >= unanswerable:
            at = rng.randint(0, len(words))
            cue = rng.choice(POSITIVE)
            words.insert(at, cue)
            answers = [{"text": cue, "answer_start": len(" ".join(words[:at])) + (1 if at else 0)}]
        rows.append({"id": f"q{seed}-{i}", "question": QUESTION, "context": " ".join(words), "answers": answers})
    return rows


def write_squad(path: Path, rows: list[dict]) -> Path:
    paragraphs = [{"context": r["context"], "qas": [{"id": r["id"], "question": r["question"], "answers": r["answers"],
                                                    "is_impossible": not r["answers"]}]} for r in rows]
    path.write_text(json.dumps({"version": "v2.0", "data": [{"title": "toy", "paragraphs": paragraphs}]}))
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    """One v1 run on a SQuAD JSON file, shared by the tests that read a finished run."""
    folder = tmp_path_factory.mktemp("qa-run")
    train = write_squad(folder / "train.json", toy_qa(200, seed=1))
    test = write_squad(folder / "test.json", toy_qa(40, seed=2))
    options = {"model": str(tiny_model), "batch_size": 16, "eval_batch_size": 64, "early_stopping": 0, "checkpoint_every": 0,
               "threads": 2, "refit": "off", "precision": "fp32", **QA_OPTIONS}
    run = tunesmith.finetune(train, out=str(folder / "run"), test=str(test), **options)
    return run, folder


# -- detection and windows -------------------------------------------------------------------------

def test_detects_squad_json_and_question_context_answer_tables_only(tmp_path):
    data_cfg = RunConfig().data
    assert choose_task("auto", read_data_file(SAMPLE), data_cfg)[0] is QuestionAnswering
    flat = pd.DataFrame({"Question": ["q?"], "passage": ["a b"], "answer_text": ["a"]})
    assert QuestionAnswering.detect(flat, data_cfg)
    qnli = pd.DataFrame({"question": ["q?"], "sentence": ["a b"], "label": ["entailment"]})
    assert QuestionAnswering.detect(qnli, data_cfg) is None
    assert choose_task("auto", qnli, data_cfg)[0].name == "text-classification"


def test_long_contexts_become_windows_labelled_with_the_answer_or_cls(tokenizer):
    rows = toy_qa(20, seed=3)
    task = QuestionAnswering(doc_stride=12)
    features = task.encode(tokenizer, pd.DataFrame(rows), 48)
    windows = features.windows
    assert len(features) > len(rows) and max(features.lengths) <= 48
    assert features.labels.shape == (len(features), 2)
    for w, (start, end) in enumerate(features.labels):
        gold = rows[windows.example_index[w]]["answers"][0]
        offsets = windows.offsets[w]
        if start == windows.cls_index[w]:
            inside = [o for o in offsets if o is not None]
            assert not (inside[0][0] <= gold["answer_start"] and gold["answer_start"] + len(gold["text"]) <= inside[-1][1])
        else:
            context = rows[windows.example_index[w]]["context"]
            assert context[offsets[start][0]:offsets[end][1]] == gold["text"]
    batch = task.collate(features, [0, 1, 2], 0)
    assert batch["labels"].shape == (3, 2) and batch["input_ids"].shape[0] == 3


def test_loss_is_transformers_own_summed_over_windows(tiny_model, tokenizer):
    task = QuestionAnswering(doc_stride=12)
    model = task.build_model(str(tiny_model), RunConfig().model).eval()
    features = task.encode(tokenizer, pd.DataFrame(toy_qa(12, seed=4)), 48)
    batch = task.collate(features, list(range(len(features))), 0)
    labels = batch.pop("labels")
    with torch.no_grad():
        total, count = task.loss(model(**batch), labels)
        reference = model(**batch, start_positions=labels[:, 0], end_positions=labels[:, 1]).loss
    assert count == len(features)
    assert float(total / count) == pytest.approx(float(reference), rel=1e-6)


# -- a trained run ----------------------------------------------------------------------------------

def test_training_learns_the_toy_task_and_writes_its_predictions(trained):
    run, folder = trained
    metrics = run.metrics
    assert metrics["task"] == "question-answering" and metrics["tuned"] == {}  # v1 data: nothing to tune
    assert metrics["test"]["f1"] >= 0.8 and metrics["test"]["examples"] == 40  # chance is far lower: fails if training is broken
    assert metrics["test"]["windows"] > 40
    preds = pd.read_csv(folder / "run" / "test_predictions.csv")
    assert {"id", "question", "context", "answers", "prediction", "score", "start", "end"} <= set(preds.columns)
    assert len(preds) == 40
    right = preds[preds["prediction"] == preds["answers"].map(lambda a: json.loads(a)[0])]
    assert all(c[s:e] == p for c, s, e, p in zip(right["context"], right["start"], right["end"], right["prediction"]))


def test_from_record_and_predict_with_offsets(trained):
    run, folder = trained
    record = json.loads((folder / "run" / "run.json").read_text())
    task = QuestionAnswering.from_record(record)
    assert task.record() == {k: record[k] for k in task.record()}
    assert (task.doc_stride, task.max_answer_length, task.has_no_answers) == (12, 30, False)
    context = "the film was very dull but the actors were brilliant and the story quite boring"
    [answer] = run.predict(QUESTION, context)
    assert answer["answer"] == "brilliant" and context[answer["start"]:answer["end"]] == "brilliant"
    assert 0 < answer["score"] <= 1
    many = run.predict([QUESTION, QUESTION], ["a superb plot", "the lovely story"])
    assert [a["answer"] for a in many] == ["superb", "lovely"]
    assert run.predict([{"question": QUESTION, "context": "a superb plot"}])[0]["answer"] == "superb"
    with pytest.raises(TunesmithError, match="needs a context for every question"):
        run.predict(QUESTION)


def pipeline_answer(start_logits, end_logits, enc, context: str, max_answer_len: int) -> dict:
    """transformers 4.57's QuestionAnsweringPipeline postprocess (select_starts_ends + decode_spans, top_k=1,
    handle_impossible_answer=False, align_to_words=False) for one window: the pipeline itself is gone
    from transformers 5 (REMOVED_TASKS), so its logic is transcribed here."""
    p_mask = np.array([s != 1 for s in enc.sequence_ids(0)], dtype=np.int64)
    p_mask[0] = 0  # the pipeline keeps CLS in the softmax
    undesired = np.abs(p_mask - 1)
    mask = undesired == 0
    start = np.where(mask, -10000.0, start_logits)[None]
    end = np.where(mask, -10000.0, end_logits)[None]
    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()
    start[0, 0] = end[0, 0] = 0.0
    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    candidates = np.tril(np.triu(outer), max_answer_len - 1)
    s, e = np.unravel_index(int(np.argmax(candidates.flatten())), candidates.shape)[1:]
    offsets = enc["offset_mapping"][0]
    return {"answer": context[offsets[s][0]:offsets[e][1]], "score": float(candidates[0, s, e]), "start": offsets[s][0], "end": offsets[e][1]}


def test_run_folder_loads_in_plain_transformers_and_answers_as_the_pipeline_would(trained):
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    run, folder = trained
    model = AutoModelForQuestionAnswering.from_pretrained(folder / "run").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "run")
    contexts = ["the plot was dull and tedious but the actors were superb", "a lovely film", "it is a weak story and a great movie"]
    ours = run.predict([QUESTION] * 3, contexts)
    try:  # transformers before 5 still has the pipeline: compare with it directly
        from transformers import pipeline

        qa = pipeline("question-answering", model=str(folder / "run"))
    except (KeyError, ValueError):
        qa = None
    for context, answer in zip(contexts, ours):
        enc = tokenizer(QUESTION, context, return_tensors="pt", return_offsets_mapping=True)
        offsets = enc.pop("offset_mapping")
        with torch.no_grad():
            output = model(**enc)
        enc["offset_mapping"] = offsets.tolist()
        expected = pipeline_answer(output.start_logits[0].numpy(), output.end_logits[0].numpy(), enc, context, run.task.max_answer_length)
        assert {k: answer[k] for k in ("answer", "start", "end")} == {k: expected[k] for k in ("answer", "start", "end")}
        assert answer["score"] == pytest.approx(expected["score"], rel=1e-4)
        if qa is not None:
            direct = qa(question=QUESTION, context=context, max_answer_len=run.task.max_answer_length, align_to_words=False)
            assert (direct["answer"], direct["start"], direct["end"]) == (answer["answer"], answer["start"], answer["end"])


def test_scores_match_the_official_script_on_the_allennlp_sample(tokenizer):
    from test_qa_scoring import official_evaluate

    from tunesmith.data.squad import read_squad

    frame = read_squad(SAMPLE).frame
    task = QuestionAnswering(doc_stride=32)
    features = task.encode(tokenizer, frame, 128)
    rng = np.random.default_rng(0)
    outputs = []
    for w, ids in enumerate(features.windows.input_ids):  # random logits: answers of every quality, scored both ways
        outputs.append(rng.normal(size=(2, len(ids))).astype(np.float32))
    task.tokenizer, task.max_length = tokenizer, 128
    scores = task.score(outputs, features)
    predicted = [r["answer"] for r in task.decode(outputs, frame)]
    gold = {str(i): [a["text"] for a in answers] for i, answers in enumerate(frame["answers"])}
    preds = {str(i): p for i, p in enumerate(predicted)}
    official = official_evaluate(gold, preds, {q: 0.0 for q in gold}, 1.0)
    assert scores["exact_match"] == pytest.approx(official["exact"] / 100)
    assert scores["f1"] == pytest.approx(official["f1"] / 100)
    gold_outputs = []  # logits that point at the tokens of the first gold answer
    for w in range(len(features)):
        logits = np.zeros((2, len(features.windows.input_ids[w])), dtype=np.float32)
        logits[0, features.labels[w, 0]] = logits[1, features.labels[w, 1]] = 10.0
        gold_outputs.append(logits)
    scores = task.score(gold_outputs, features)
    predicted = {str(i): r["answer"] for i, r in enumerate(task.decode(gold_outputs, frame))}
    official = official_evaluate(gold, predicted, {q: 0.0 for q in gold}, 1.0)
    # the sample's gold 'Father Julius Nieuwl' ends inside a word; whole tokens give 'Father Julius Nieuwland'
    assert predicted["3"] == "Father Julius Nieuwland"
    assert scores["exact_match"] == official["exact"] / 100 == 0.8
    assert scores["f1"] == pytest.approx(official["f1"] / 100) and scores["f1"] == pytest.approx((4 + 2 / 3) / 5)


def test_v2_tunes_the_null_threshold_and_keeps_it(tiny_model, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", toy_qa(160, seed=5, unanswerable=0.3))
    run = tunesmith.finetune(train, out=str(tmp_path / "run"), model=str(tiny_model), batch_size=16, early_stopping=0,
                             checkpoint_every=0, threads=2, refit="off", precision="fp32", **QA_OPTIONS)
    tuned = run.metrics["tuned"]["null_threshold"]
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["has_no_answers"] and record["null_threshold"] == tuned
    assert run.task.null_threshold == tuned
    validation = run.metrics["validation"]
    assert {"has_answer_f1", "no_answer_exact_match", "null_threshold"} <= set(validation)
    assert validation["f1"] >= 0.7
    [none] = run.predict(QUESTION, "the film was a story")
    assert none["answer"] == "" and (none["start"], none["end"]) == (-1, -1)


def test_tune_picks_the_official_best_f1_threshold():
    from tunesmith.tasks.qa_windows import QAWindows

    # one window per question: [CLS] q [SEP] c0 c1 [SEP]; context "ab cd"
    windows = QAWindows(input_ids=[[2, 5, 3, 6, 7, 3]] * 4, token_type_ids=None, example_index=[0, 1, 2, 3],
                        offsets=[[None, None, None, (0, 2), (3, 5), None]] * 4, cls_index=[0] * 4)
    from tunesmith.tasks.question_answering import QAFeatures

    gold = [[{"text": "ab", "answer_start": 0}], [{"text": "cd", "answer_start": 3}], [], []]
    features = QAFeatures(windows, ["ab cd"] * 4, gold, np.full(4, 6), None)

    def logits(span_token: int, span: float, null: float) -> np.ndarray:
        out = np.zeros((2, 6), dtype=np.float32)
        out[:, 0] = null / 2
        out[:, span_token] = span / 2
        return out

    # null score - best span score: q0 -4 and q1 -1 (right answers), q2 +1 and q3 -2 (no answer: right only as "")
    outputs = [logits(3, 6, 2), logits(4, 3, 2), logits(3, 2, 3), logits(4, 4, 2)]
    task = QuestionAnswering(has_no_answers=True)
    # answering q0 alone gives 3 of 4; also answering q3 then q1 loses one and wins it back, which is no better
    assert task.tune(outputs, features) == {"null_threshold": -4.0}
    scores = task.score(outputs, features)
    assert scores["null_threshold"] == -4.0 and scores["f1"] == pytest.approx(0.75) and scores["no_answer_f1"] == 1.0
    task.use_tuned({"null_threshold": -1.5})
    assert task.score(outputs, features)["f1"] == pytest.approx(0.5)  # q0 and q3 answered: q3 and q1 wrong


# -- LoRA, the CLI, bad input ------------------------------------------------------------------------

def test_lora_uses_peft_question_answering_and_predicts_after_loading(tiny_model, tmp_path):
    from peft import PeftModelForQuestionAnswering

    train = write_jsonl(tmp_path / "train.jsonl", toy_qa(80, seed=6))
    run = tunesmith.finetune(train, out=str(tmp_path / "lora"), model=str(tiny_model), method="lora", batch_size=16, early_stopping=0,
                             checkpoint_every=0, threads=2, refit="off", precision="fp32", max_length=48, doc_stride=12, epochs=2)
    assert (tmp_path / "lora" / "adapter_config.json").is_file()
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())["task_type"] == "QUESTION_ANS"
    model, _ = run._load()
    assert isinstance(model, PeftModelForQuestionAnswering)
    [answer] = run.predict(QUESTION, "a superb plot")
    assert "a superb plot"[answer["start"]:answer["end"]] == answer["answer"]


def test_cli_train_predict_file_and_eval(tiny_model, tmp_path, capsys):
    rows = toy_qa(120, seed=7)
    flat = pd.DataFrame({"Query": [r["question"] for r in rows], "Passage": [r["context"] for r in rows],
                         "Answer": [r["answers"][0]["text"] for r in rows], "answer_start": [r["answers"][0]["answer_start"] for r in rows]})
    train = tmp_path / "train.csv"
    flat.to_csv(train, index=False)
    out = tmp_path / "cli"
    assert main(["train", str(train), "--model", str(tiny_model), "--epochs", "10", "--batch-size", "16", "--lr", "3e-3", "--early-stopping", "0",
                 "--max-length", "48", "--doc-stride", "12", "--refit", "off", "--precision", "fp32", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Task: question-answering" in printed and "question column 'Query'" in printed
    questions = tmp_path / "questions.csv"
    flat[["Query", "Passage"]].head(10).to_csv(questions, index=False)
    scored = tmp_path / "answers.csv"
    assert main(["predict", str(out), "--file", str(questions), "--out", str(scored)]) == 0
    assert capsys.readouterr().out.startswith("Wrote 10 predictions")
    answers = pd.read_csv(scored)
    assert list(answers.columns) == ["Query", "Passage", "prediction", "score", "start", "end"] and len(answers) == 10
    assert main(["eval", str(out), str(train), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["f1"] >= 0.8 and metrics["examples"] == 120
    assert main(["predict", str(out), "which word is good ?"]) == 2
    assert "needs a context for every question" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    (lambda r: r[1]["answers"][0].update(answer_start=r[1]["answers"][0]["answer_start"] + 1),
     r"does not start at character \d+ .*pass --fix-answer-starts"),
    (lambda r: r[2].update(question=""), r"has a context but no question"),
    (lambda r: r[3].update(context=" "), r"has an empty context"),
    (lambda r: r[4].update(question="the film " * 40), r"The question 'the film the film.*' is 80 tokens long, which leaves 0 of the 48-token window"),
])
def test_bad_input_is_one_sentence_and_exit_code_2(tiny_model, tmp_path, capsys, change, message):
    rows = toy_qa(30, seed=8)
    prefix = " ".join(["the film"] * 40) + " "  # long enough to need windows
    rows[4]["context"] = prefix + rows[4]["context"]
    rows[4]["answers"] = [{"text": a["text"], "answer_start": a["answer_start"] + len(prefix)} for a in rows[4]["answers"]]
    change(rows)
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    code = main(["train", str(path), "--model", str(tiny_model), "--epochs", "1", "--max-length", "48", "--doc-stride", "12",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_fix_answer_starts_moves_them_with_a_note(tiny_model, tmp_path, capsys):
    rows = toy_qa(60, seed=9)
    rows[1]["answers"][0]["answer_start"] += 2
    path = write_jsonl(tmp_path / "shifted.jsonl", rows)
    assert main(["train", str(path), "--model", str(tiny_model), "--epochs", "1", "--max-length", "48", "--doc-stride", "12",
                 "--fix-answer-starts", "--refit", "off", "--out", str(tmp_path / "run")]) == 0
    assert "Moved 1 answer starts of the train file" in capsys.readouterr().out


# -- where QA data comes from ------------------------------------------------------------------------

def test_data_squad_offline_is_one_sentence(monkeypatch, tmp_path):
    import datasets

    from tunesmith.data.sources import resolve_sources

    def offline(name, *args, **kwargs):
        raise ConnectionError(f"Couldn't reach '{name}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", offline)
    cfg = RunConfig(); cfg.data.data = "squad_v2"
    with pytest.raises(TunesmithError, match=r"^--data squad_v2 is downloaded from the Hugging Face hub, which could not be reached "
                                             r"\(Couldn't reach 'rajpurkar/squad_v2'.*\); connect to the internet once"):
        resolve_sources(cfg.data)


def test_data_squad_converts_the_hub_layout(monkeypatch, tmp_path):
    import datasets

    from tunesmith.data.sources import resolve_sources
    from tunesmith.data.squad import qa_table

    context = "The tower was finished in 1889 in Paris."
    hub = {"train": [{"id": "a", "title": "T", "question": "When?", "context": context, "answers": {"text": ["1889"], "answer_start": [26]}},
                     {"id": "b", "title": "T", "question": "Who?", "context": context, "answers": {"text": [], "answer_start": []}}],
           "validation": [{"id": "c", "title": "T", "question": "Where?", "context": context,
                           "answers": {"text": ["Paris", "in Paris"], "answer_start": [34, 31]}}]}
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", lambda name, *a, **k: hub)
    cfg = RunConfig(); cfg.data.data = "squad"
    sources = resolve_sources(cfg.data)
    assert sources["validation"] is None and Path(sources["train"]).parent == tmp_path / "hub" / "squad"
    train = qa_table(read_data_file(sources["train"]), sources["train"]).frame
    assert train["answers"].tolist() == [[{"text": "1889", "answer_start": 26}], []]
    test = qa_table(read_data_file(sources["test"]), sources["test"]).frame
    assert test["answers"].iat[0] == [{"text": "Paris", "answer_start": 34}, {"text": "in Paris", "answer_start": 31}]
    monkeypatch.setattr(datasets, "load_dataset", None)  # cached: not fetched again
    assert resolve_sources(cfg.data) == sources


def test_facts_qa_is_a_bundled_generated_dataset(monkeypatch, tmp_path):
    from tunesmith.assets.generated_qa import GENERATOR_VERSION, build_generated_qa
    from tunesmith.assets.registry import DATASETS, dataset_files

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    asset = DATASETS["facts-qa"]
    assert asset.task_name == "question-answering" and "GENERATED" in asset.description and asset.package is None
    assert asset.origin == f"generated by tunesmith (generator version {GENERATOR_VERSION})"
    files = dataset_files("facts-qa")
    reference = build_generated_qa(tmp_path / "reference")
    assert all(files[s].read_bytes() == reference[s].read_bytes() for s in ("train", "validation", "test"))
    manifest = json.loads((files["train"].parent / "manifest.json").read_text())
    assert manifest["version"] == GENERATOR_VERSION and set(manifest["files"]) == {"train.jsonl", "validation.jsonl", "test.jsonl"}
    raw = read_data_file(files["test"])
    assert choose_task("auto", raw, RunConfig().data)[0] is QuestionAnswering
