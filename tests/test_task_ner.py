"""Token classification (NER) on tiny models: detection, sub-token alignment, loss, scores against
seqeval, whole runs through the API and the CLI, predict with offsets, and transformers' pipeline."""
from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import tunesmith
import tunesmith.tasks.token_classification  # noqa: F401  (registers the task until tasks/__init__ imports it)
from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.data.sources import read_data_file, resolve_sources
from tunesmith.errors import TunesmithError
from tunesmith.tasks import choose_task, get_task
from tunesmith.tasks.token_classification import IGNORE, TokenClassification

PEOPLE = [["john", "smith"], ["mary", "kowalski"], ["ahmed", "okonkwo"], ["li", "wei"], ["anna"], ["pierre", "dubois"]]
PLACES = [["paris"], ["zanzibar"], ["new", "york"], ["kathmandu"], ["reykjavik"], ["lagos"]]
FILLER = ["the", "film", "was", "in", "and", "a", "very", "quite", "it", "is", "today", "with", "then"]
VERBS = ["met", "visited", "flew", "to", "saw", "left", "called"]


def toy_sentence(rng: random.Random) -> tuple[list[str], list[str]]:
    """A person, a verb, a place, with filler around: tags a tiny model learns in a few epochs."""
    tokens, tags = [], []

    def add(words, type_=None):
        for i, word in enumerate(words):
            tokens.append(word)
            tags.append("O" if type_ is None else f"{'B' if i == 0 else 'I'}-{type_}")

    add(rng.sample(FILLER, rng.randint(0, 2)))
    add(rng.choice(PEOPLE), "PER")
    add([rng.choice(VERBS)])
    add(rng.sample(FILLER, rng.randint(0, 2)))
    add(rng.choice(PLACES), "LOC")
    add(rng.sample(FILLER, rng.randint(0, 3)))
    return tokens, tags


def write_conll(path: Path, sentences) -> Path:
    path.write_text("".join("".join(f"{t}\t{g}\n" for t, g in zip(*s)) + "\n" for s in sentences), encoding="utf-8")
    return path


def toy_corpus(n: int, seed: int):
    rng = random.Random(seed)
    return [toy_sentence(rng) for _ in range(n)]


@pytest.fixture(scope="session")
def wordpiece_tokenizer():
    """minilm-l6's real WordPiece tokenizer (words split into several sub-tokens), used without its weights."""
    from transformers import AutoTokenizer

    from tunesmith.assets.resolve import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("minilm-l6"))


@pytest.fixture(scope="session")
def tiny_wordpiece_model(tmp_path_factory, wordpiece_tokenizer) -> Path:
    """A 2-layer BERT (hidden 32) with minilm-l6's vocabulary: tiny, but with real sub-tokens."""
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-wordpiece")
    config = BertConfig(vocab_size=wordpiece_tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    wordpiece_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def ner_files(tmp_path) -> dict:
    return {"train": write_conll(tmp_path / "train.conll", toy_corpus(160, 0)),
            "test": write_conll(tmp_path / "test.conll", toy_corpus(40, 1))}


@pytest.fixture
def ner_options(tiny_options, tiny_wordpiece_model) -> dict:
    return dict(tiny_options, model=str(tiny_wordpiece_model), epochs=10, lr=5e-3)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, tiny_wordpiece_model):
    """One finished run shared by the tests that only read it (predict, pipeline, eval)."""
    folder = tmp_path_factory.mktemp("ner-run")
    train = write_conll(folder / "train.conll", toy_corpus(160, 0))
    test = write_conll(folder / "test.conll", toy_corpus(40, 1))
    options = {"model": str(tiny_wordpiece_model), "epochs": 10, "batch_size": 16, "lr": 5e-3, "eval_batch_size": 64,
               "early_stopping": 0, "checkpoint_every": 0, "threads": 2, "refit": "off", "precision": "fp32"}
    run = tunesmith.finetune(train, out=str(folder / "run"), test=str(test), **options)
    return run, test


def prepared(path, model, **options):
    cfg = RunConfig.from_dict(dict(options, data=str(path), model=str(model)))
    sources = resolve_sources(cfg.data)
    raw = read_data_file(sources["train"], role="training")
    task_cls, _ = choose_task(cfg.task.task, raw, cfg.data)
    return task_cls.prepare(raw, sources, cfg, cfg.train.seed)


# -- detection ---------------------------------------------------------------------------------

def test_detects_conll_and_token_lists_but_not_tables(tmp_path):
    cfg = RunConfig().data
    conll = write_conll(tmp_path / "x.conll", toy_corpus(5, 0))
    assert "tokens" in TokenClassification.detect(read_data_file(conll), cfg)
    rows = [{"words": t, "ner": g, "id": i} for i, (t, g) in enumerate(toy_corpus(5, 0))]
    jsonl = tmp_path / "x.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    assert choose_task("auto", read_data_file(jsonl), cfg)[0] is TokenClassification
    # tags found by content when the column has another name; named columns win
    other = pd.DataFrame({"a": [t for t, _ in toy_corpus(5, 0)], "b": [g for _, g in toy_corpus(5, 0)]})
    assert TokenClassification.detect(other, cfg) is not None
    assert TokenClassification.detect(other, RunConfig.from_dict({"text_column": "a", "label_column": "b"}).data) is not None
    assert TokenClassification.detect(other, RunConfig.from_dict({"text_column": "nope"}).data) is None
    # a text column with a list of labels is multi-label data, and a plain table is text classification's
    multi = pd.DataFrame({"text": ["a b", "c d"], "labels": [["x", "y"], ["y"]]})
    assert TokenClassification.detect(multi, cfg) is None
    assert TokenClassification.detect(pd.DataFrame({"text": ["a", "b"], "label": ["x", "y"]}), cfg) is None


# -- tensors -----------------------------------------------------------------------------------

def test_labels_sit_on_first_sub_tokens_and_collate_pads_with_ignore(wordpiece_tokenizer):
    task = TokenClassification(["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    table = pd.DataFrame({"tokens": [["kowalski", "visited", "zanzibar"], ["anna"]], "tags": [["B-PER", "O", "B-LOC"], ["B-PER"]]})
    features = task.encode(wordpiece_tokenizer, table, 128)
    for ids, word_ids, labels, tags in zip(features.input_ids, features.word_ids, features.labels, table["tags"]):
        pieces = wordpiece_tokenizer.convert_ids_to_tokens(ids)
        assert word_ids[0] is None and word_ids[-1] is None and labels[0] == labels[-1] == IGNORE  # [CLS], [SEP]
        for position, (piece, word) in enumerate(zip(pieces, word_ids)):
            first = word is not None and (position == 0 or word_ids[position - 1] != word)
            assert first == (not piece.startswith("##") and word is not None)
            assert labels[position] == (task.label_ids[tags[word]] if first else IGNORE)
    assert len(features.input_ids[0]) > 5  # kowalski and zanzibar are several sub-tokens each
    batch = task.collate(features, [0, 1], wordpiece_tokenizer.pad_token_id)
    assert batch["labels"].shape == batch["input_ids"].shape
    short = int(batch["attention_mask"][1].sum())
    assert (batch["labels"][1, short:] == IGNORE).all() and (batch["input_ids"][1, short:] == wordpiece_tokenizer.pad_token_id).all()
    assert task.target_count(batch["labels"]) == 4  # one label per word


def test_truncation_keeps_whole_sentences_for_scoring(wordpiece_tokenizer):
    task = TokenClassification(["O", "B-LOC", "I-LOC"])
    tokens = ["zanzibar"] * 30
    features = task.encode(wordpiece_tokenizer, pd.DataFrame({"tokens": [tokens], "tags": [["B-LOC"] * 30]}), 16)
    assert len(features.input_ids[0]) == 16 and features.words == [30]
    logits = np.zeros((16, 3), dtype=np.float32)
    logits[:, 1] = 5.0  # B-LOC everywhere the model sees
    scores = task.score([logits], features)
    kept = len({w for w in features.word_ids[0] if w is not None})
    assert scores["recall"] == pytest.approx(kept / 30) and scores["precision"] == 1.0  # cut-off words are predicted O: missed


def test_loss_is_torchs_cross_entropy_summed_over_labeled_tokens():
    task = TokenClassification(["O", "B-X", "I-X"])
    torch.manual_seed(0)
    logits = torch.randn(3, 7, 3)
    labels = torch.randint(0, 3, (3, 7))
    labels[:, 0] = IGNORE
    labels[2, 4:] = IGNORE
    total, count = task.loss(type("Out", (), {"logits": logits})(), labels)
    mean = F.cross_entropy(logits.view(-1, 3), labels.view(-1), ignore_index=IGNORE)
    assert count == int((labels != IGNORE).sum()) == 15
    assert float(total) == pytest.approx(float(mean) * count, rel=1e-6)


# -- scores ------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["default", "strict"])
def test_scores_match_seqeval_on_word_tags(mode, wordpiece_tokenizer):
    import seqeval.metrics as sm
    from seqeval.scheme import IOB2

    corpus = toy_corpus(30, 3)
    names = ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    task = TokenClassification(names, entity_mode=mode)
    table = pd.DataFrame({"tokens": [t for t, _ in corpus], "tags": [g for _, g in corpus]})
    features = task.encode(wordpiece_tokenizer, table, 128)
    rng = np.random.default_rng(0)
    outputs = [rng.normal(size=(len(ids), len(names))).astype(np.float32) for ids in features.input_ids]
    for out, labels in zip(outputs[:15], features.labels[:15]):  # half the sentences mostly right, so scores are not all 0
        out[labels != IGNORE, labels[labels != IGNORE]] += 4.0
    predicted = [task.word_tags(o, w, n)[0] for o, w, n in zip(outputs, features.word_ids, features.words)]
    scores = task.score(outputs, features, loss=0.5)
    options = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert scores["f1"] == sm.f1_score(table["tags"].tolist(), predicted, **options)
        assert scores["precision"] == sm.precision_score(table["tags"].tolist(), predicted, **options)
        assert scores["recall"] == sm.recall_score(table["tags"].tolist(), predicted, **options)
        report = sm.classification_report(table["tags"].tolist(), predicted, output_dict=True, zero_division=0, **options)
    assert scores["per_class"]["PER"]["f1"] == report["PER"]["f1-score"]
    words = sum(map(len, table["tags"]))
    assert scores["token_accuracy"] == sum(p == g for ps, gs in zip(predicted, table["tags"]) for p, g in zip(ps, gs)) / words
    assert 0.2 < scores["f1"] < 1.0 and scores["loss"] == 0.5 and scores["entity_mode"] == mode


# -- whole runs --------------------------------------------------------------------------------

def test_finetune_on_conll_learns_and_writes_the_run(trained_run):
    run, _ = trained_run
    metrics = run.metrics
    assert metrics["task"] == "token-classification"
    for split in ("validation", "test"):
        assert {"f1", "precision", "recall", "token_accuracy", "loss", "per_class"} <= set(metrics[split])
    assert metrics["test"]["f1"] >= 0.8  # learnable toy data (an all-O model scores 0): fails if alignment or training breaks
    assert set(metrics["test"]["per_class"]) == {"LOC", "PER"}
    record = json.loads((run.path / "run.json").read_text())
    assert record["entity_mode"] == "default" and record["scheme"] == "BIO" and record["label_names"][0] == "O"
    preds = pd.read_csv(run.path / "test_predictions.csv")
    assert list(preds.columns) == ["tokens", "tags", "predicted_tags", "entities"] and len(preds) == 40
    row = preds.iloc[0]
    tokens, predicted, entities = json.loads(row["tokens"]), json.loads(row["predicted_tags"]), json.loads(row["entities"])
    assert len(predicted) == len(tokens)
    assert all(e["text"] == " ".join(tokens[e["word_start"]:e["word_end"]]) for e in entities)


def test_from_record_round_trip(trained_run):
    run, _ = trained_run
    task = get_task("token-classification").from_record(run.record)
    assert task.record() == {k: run.record[k] for k in task.record()}
    assert task.label_names == run.label_names and task.scheme == "BIO"


def test_predict_returns_spans_with_character_offsets(trained_run):
    run, _ = trained_run
    text = "Then  mary kowalski  visited zanzibar, today."
    [result] = run.predict(text)
    assert len(result["tags"]) == len(text.replace(",", " , ").replace(".", " . ").split())  # BERT's pre-tokenizer words
    found = {(e["type"], e["text"]) for e in result["entities"]}
    assert ("PER", "mary kowalski") in found and ("LOC", "zanzibar") in found
    for entity in result["entities"]:
        assert text[entity["start"]:entity["end"]] == entity["text"] and 0 < entity["score"] <= 1
    # pre-split words work too, and give the same tags as the sentence they make
    [split] = run.predict([["mary", "kowalski", "visited", "zanzibar"]])
    assert split["tags"] == run.predict("mary kowalski visited zanzibar")[0]["tags"]


def test_pipeline_gives_the_same_entities_as_predict(trained_run):
    from transformers import AutoModelForTokenClassification, pipeline

    run, _ = trained_run
    model = AutoModelForTokenClassification.from_pretrained(run.path)
    assert model.config.id2label[0] == "O" and len(model.config.id2label) == len(run.label_names)
    texts = ["john smith met anna in reykjavik", "Quite a film: Pierre Dubois left Lagos!", "it is today", "li wei flew to new york"]
    tagger = pipeline("token-classification", model=str(run.path), aggregation_strategy="first", device="cpu")
    compared = 0
    for text, ours in zip(texts, run.predict(texts)):
        theirs = tagger(text)
        assert [(e["entity_group"], e["start"], e["end"]) for e in theirs] == [(e["type"], e["start"], e["end"]) for e in ours["entities"]]
        for a, b in zip(theirs, ours["entities"]):
            assert float(a["score"]) == pytest.approx(b["score"], abs=1e-5)
        compared += len(theirs)
    assert compared >= 4


def test_cli_train_predict_eval(tmp_path, ner_files, tiny_wordpiece_model, capsys):
    out = tmp_path / "cli"
    args = ["train", str(ner_files["train"]), "--model", str(tiny_wordpiece_model), "--epochs", "10", "--batch-size", "16",
            "--lr", "5e-3", "--early-stopping", "0", "--refit", "off", "--threads", "2", "--precision", "fp32",
            "--entity-mode", "strict", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Task: token-classification" in printed and "entity F1 per type" in printed.replace("Entity", "entity")
    assert json.loads((out / "run.json").read_text())["entity_mode"] == "strict"
    assert main(["predict", str(out), "john smith visited paris", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"PER", "LOC"} <= {e["type"] for e in answer["entities"]}
    assert main(["eval", str(out), str(ner_files["test"]), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["f1"] >= 0.8 and scores["entity_mode"] == "strict" and scores["examples"] == 40
    assert main(["eval", str(out), str(ner_files["test"])]) == 0
    assert "entity F1" in capsys.readouterr().out
    texts = tmp_path / "texts.txt"
    texts.write_text("mary kowalski flew to lagos\n\nanna saw paris\n")
    scored = tmp_path / "scored.csv"
    assert main(["predict", str(out), "--file", str(texts), "--out", str(scored)]) == 0
    table = pd.read_csv(scored)
    assert list(table.columns) == ["text", "predicted_tags", "entities"] and len(table) == 2
    assert "lagos" in {e["text"] for e in json.loads(table["entities"][0])}
    assert main(["predict", str(out), "--file", str(ner_files["test"]), "--out", str(scored)]) == 0
    assert len(pd.read_csv(scored)) == 40


def test_lora_run_predicts_and_merges_to_a_plain_model(tmp_path, ner_files, ner_options):
    from transformers import pipeline

    run = tunesmith.finetune(ner_files["train"], out=str(tmp_path / "lora"), test=str(ner_files["test"]), method="lora",
                             **dict(ner_options, lr=2e-2))
    assert (run.path / "adapter_config.json").is_file()
    assert json.loads((run.path / "adapter_config.json").read_text())["task_type"] == "TOKEN_CLS"
    assert run.metrics["test"]["f1"] > 0.3  # an all-O model scores 0
    merged = run.export(tmp_path / "merged", merge=True)
    assert merged["form"] == "plain"
    text = "john smith flew to zanzibar"
    theirs = pipeline("token-classification", model=str(tmp_path / "merged"), aggregation_strategy="first", device="cpu")(text)
    assert [(e["entity_group"], e["start"], e["end"]) for e in theirs] == \
           [(e["type"], e["start"], e["end"]) for e in run.predict(text)[0]["entities"]]


# -- bad input: one sentence each, naming the file and the fix -----------------------------------

def test_repairs_tags_out_of_order_with_a_note(tmp_path, tiny_wordpiece_model):
    corpus = toy_corpus(60, 0)
    corpus[0] = (["paris", "is", "nice"], ["I-LOC", "O", "O"])  # I- after nothing: read as B-LOC
    corpus[1] = (["john", "smith"], ["B-PER", "I-LOC"])  # B-PER I-LOC: two entities
    task, splits = prepared(write_conll(tmp_path / "x.conll", corpus), tiny_wordpiece_model)
    assert any("Fixed 2 tags" in note and "BIO order" in note for note in splits.notes)
    tags = pd.concat([splits.train, splits.validation])["tags"].tolist()
    assert ["B-LOC", "O", "O"] in tags and ["B-PER", "B-LOC"] in tags


def test_iobes_is_detected_and_kept(tmp_path, tiny_wordpiece_model):
    corpus = [(["john", "smith", "saw", "paris"], ["B-PER", "E-PER", "O", "S-LOC"])] * 20
    task, splits = prepared(write_conll(tmp_path / "x.conll", corpus), tiny_wordpiece_model)
    assert task.scheme == "IOBES" and not [n for n in splits.notes if "Fixed" in n]
    assert task.label_names == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-PER", "I-PER", "E-PER", "S-PER"]


@pytest.mark.parametrize("name, content, message", [
    ("missing.conll", "john\tB-PER\nsmith\n\n", "line 2 has the token 'smith' but no tag"),
    ("bad.conll", "john\tPER\nsmith\tI-PER\n\n", "tag 'PER', which is not an entity tag, so it was refused"),
    ("empty.conll", "", "holds no tagged tokens"),
    ("all_o.conll", "the\tO\nfilm\tO\n\nit\tO\n\n", "Every tag in .* is O"),
    ("lengths.jsonl", '{"tokens": ["a", "b"], "tags": ["O", "B-X"]}\n{"tokens": ["a", "b", "c"], "tags": ["O", "B-X"]}\n',
     "row 2 has 3 tokens in 'tokens' but 2 tags"),
    ("ids.jsonl", '{"tokens": ["a", "b"], "ner_tags": [0, 1]}\n', "holds numbers \\(tag ids\\?\\)"),
])
def test_bad_token_files_are_one_clear_error(tmp_path, tiny_wordpiece_model, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TunesmithError, match=message):
        prepared(path, tiny_wordpiece_model, task="token-classification")


def test_bad_token_file_through_the_cli_exits_2(tmp_path, tiny_wordpiece_model, capsys):
    path = tmp_path / "missing.conll"
    path.write_text("john\tB-PER\nsmith\n\n")
    assert main(["train", str(path), "--model", str(tiny_wordpiece_model), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "line 2" in err and "blank line" in err
    assert not (tmp_path / "run" / "run.json").exists()


def test_a_table_given_as_token_data_is_refused(reviews_csv, tiny_wordpiece_model):
    with pytest.raises(TunesmithError, match="holds no token and tag lists"):
        prepared(reviews_csv, tiny_wordpiece_model, task="token-classification")


def test_one_giant_sentence_is_truncated_and_counted(tmp_path, tiny_wordpiece_model):
    giant = (["zanzibar", "is", "far"] * 100, ["B-LOC", "O", "O"] * 100)
    corpus = toy_corpus(40, 0) + [giant]
    task, splits = prepared(write_conll(tmp_path / "x.conll", corpus), tiny_wordpiece_model, max_length=64, val_fraction=0)
    [note] = [n for n in splits.notes if "longer than --max-length 64" in n]
    assert "1 train sentence is" in note
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_wordpiece_model)
    kept = len({w for w in tokenizer(giant[0], is_split_into_words=True, truncation=True, max_length=64).word_ids() if w is not None})
    assert f"{300 - kept:,} words cut off" in note


def test_validation_split_is_seeded_and_unseen_types_are_refused(tmp_path, tiny_wordpiece_model):
    path = write_conll(tmp_path / "x.conll", toy_corpus(100, 0))
    _, first = prepared(path, tiny_wordpiece_model, seed=1)
    _, again = prepared(path, tiny_wordpiece_model, seed=1)
    assert len(first.validation) == 20 and first.validation_from_split  # min(50, 20%) of 100 sentences, not 10%
    assert first.validation["tokens"].tolist() == again.validation["tokens"].tolist()
    test = write_conll(tmp_path / "test.conll", [(["acme"], ["B-ORG"])])
    with pytest.raises(TunesmithError, match="entity types never seen in training \\('ORG'\\)"):
        prepared(path, tiny_wordpiece_model, test=str(test))


def test_predict_file_takes_token_lists_without_tags_and_eval_needs_tags(trained_run, tmp_path):
    run, test = trained_run
    jsonl = tmp_path / "words.jsonl"
    jsonl.write_text('{"id": 1, "words": ["john", "smith", "visited", "lagos"]}\n{"id": 2, "words": ["it", "is", "today"]}\n')
    result = run.predict_file(jsonl)
    assert list(result.columns) == ["id", "words", "predicted_tags", "entities"]
    assert len(json.loads(result["predicted_tags"][0])) == 4
    assert {e["text"] for e in json.loads(result["entities"][0])} >= {"john smith", "lagos"}
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["john smith visited lagos"]}).to_csv(texts, index=False)
    with pytest.raises(TunesmithError, match="has no token and tag lists, which scoring needs"):
        run.evaluate(texts)
    assert run.evaluate(test)["f1"] == pytest.approx(run.metrics["test"]["f1"])  # eval reads the test file as training did
