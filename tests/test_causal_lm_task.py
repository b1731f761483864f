"""Continued pre-training (--task causal-lm) on a tiny random Llama with a word tokenizer: raw text read from .txt files,
folders and table columns (each bad input one sentence), documents cut into passages so that validation is whole
stretches of text, the token stream cut into blocks where every token is a target exactly once, and training that
lowers the held-out loss, through the API and the CLI (metrics.json with the base model's scores and forgetting)."""
from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
import torch

import tunesmith
import tunesmith.tasks.causal_lm  # noqa: F401  (registers the task until tasks/__init__.py imports it)
from test_chat_data import WORDS, word_tokenizer
from test_chat_task import build_tiny_chat_model
from tunesmith.config import RunConfig
from tunesmith.data.packing import IGNORE
from tunesmith.data.raw_text import (cut_into_pieces, documents_of, looks_like_table, passage_chars, passages, read_text_file,
                                     read_text_folder)
from tunesmith.data.sources import read_data_file
from tunesmith.errors import TunesmithError
from tunesmith.tasks import choose_task
from tunesmith.tasks.causal_lm import CausalLM, begin_token, cut_blocks, token_stream

SENTENCES = ["hi how are you", "fine thanks", "see you soon", "bye now", "hello you", "a helpful bot", "be brief"]
OPTIONS = {"epochs": 3, "batch_size": 8, "lr": 1e-2, "early_stopping": 0, "checkpoint_every": 0, "threads": 1, "refit": "off",
           "precision": "fp32", "max_length": 32, "forgetting_text": "off"}


def prose(rng: random.Random, paragraphs: int = 3, sentences: int = 6) -> str:
    """A document of the test vocabulary: paragraphs of sentences, a blank line between paragraphs."""
    return "\n\n".join(" ".join(rng.choice(SENTENCES) for _ in range(sentences)) for _ in range(paragraphs))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def notes_file(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "notes.txt"
    path.write_text("\n\n\n".join(prose(rng) for _ in range(30)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def general_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("general") / "general.txt"
    path.write_text(" ".join(random.Random(1).choice(WORDS[7:]) for _ in range(200)), encoding="utf-8")
    return path


def config(max_length: int = 32, **data) -> RunConfig:
    cfg = RunConfig()
    cfg.model.max_length, cfg.task.forgetting_text = max_length, "off"
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


# -- reading raw text -------------------------------------------------------------------------------

def test_a_txt_file_is_documents_split_at_two_or_more_blank_lines(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes("\ufeffFirst paragraph.\r\n\r\nSame document.\r\n\r\n\r\nSecond document.\n\n \n\t\nThird one.\n\n\n\n".encode())
    raw = read_data_file(path, role="training")
    assert list(raw["text"]) == ["First paragraph.\n\nSame document.", "Second document.", "Third one."]
    assert raw.attrs["raw_text"] is True and raw.attrs["raw_text_table"] is None


@pytest.mark.parametrize("data, encoding", [("Grüße aus Köln.".encode("utf-16"), None), ("Grüße aus Köln.".encode("latin-1"), "latin-1"),
                                            ("Grüße aus Köln.".encode("utf-16-le"), "utf-16-le")])
def test_text_is_decoded_as_tables_are(tmp_path, data, encoding):
    path = tmp_path / "notes.md"
    path.write_bytes(data)
    assert list(read_data_file(path, encoding)["text"]) == ["Grüße aus Köln."]


def test_a_folder_of_text_files_is_read_in_name_order_with_empty_files_skipped(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two.md").write_text("Two.\n\n\nThree.")
    (tmp_path / "a.txt").write_text("One.")
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / ".hidden.txt").write_text("Never.")
    (tmp_path / "data.csv").write_text("x\n1\n")  # not text: left alone
    raw = read_data_file(tmp_path, role="training")
    assert list(raw["text"]) == ["One.", "Two.", "Three."]
    assert raw.attrs["raw_text_files"] == 2 and raw.attrs["notes"] == [f"Skipped 1 empty text file in '{tmp_path}' ('empty.txt')."]
    assert choose_task("auto", raw, config().data) == (CausalLM, "plain text (2 text files)")


def test_a_folder_with_images_is_still_an_image_folder(tmp_path):
    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "a.png").write_bytes(b"\x89PNG")
        (tmp_path / label / "readme.txt").write_text("notes")
    assert "raw_text" not in read_data_file(tmp_path, role="training").attrs


@pytest.mark.parametrize("columns, given, expected", [
    ({"id": [1, 2], "content": ["a b", "c d"], "label": ["x", "y"]}, None, "content"),
    ({"id": [1, 2], "body": ["a b", "c d"], "text": ["e f", "g h"]}, None, "text"),
    ({"id": [1, 2], "passage": ["some words here", "more words here"]}, None, "passage"),  # the one text column
    ({"title": ["t1", "t2"], "passage": ["a b", "c d"]}, "passage", "passage"),
])
def test_a_table_gives_the_documents_of_its_text_column(columns, given, expected):
    documents, column, notes = documents_of(pd.DataFrame(columns), given, "data.csv")
    assert column == expected and list(documents) == [str(v) for v in columns[expected]] and notes == []


def test_rows_without_text_are_left_out_with_a_note():
    raw = pd.DataFrame({"text": ["one", "", None, "two"]})
    documents, _, notes = documents_of(raw, None, "data.jsonl")
    assert list(documents) == ["one", "two"] and list(documents.index) == [0, 3]
    assert notes == ["Left out 2 of 4 rows of 'data.jsonl' with no text in column 'text'."]


@pytest.mark.parametrize("name, data, expected", [
    ("empty.txt", b"", "is empty; it needs the text to train the language model on"),
    ("blank.txt", b" \n\n\t\n", "is empty"),
    ("bom_only.txt", b"\xef\xbb\xbf", "is empty"),
    ("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file, not text (a NUL byte at byte 8)"),
    ("controls.txt", bytes(range(1, 9)) * 20 + b"some text", "looks like a binary file, not text (160 control characters"),
    ("broken.txt", b"line one\nline two\ncaf\xe9\n", "is not valid UTF-8: bad byte 0xe9 on line 3; re-save it as UTF-8, or pass its encoding"),
])
def test_bad_text_files_are_one_sentence(tmp_path, name, data, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(TunesmithError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        read_data_file(path, role="training")


def test_a_missing_file_an_empty_folder_and_a_table_without_text_are_one_sentence(tmp_path):
    with pytest.raises(TunesmithError, match="The training file '.*nothing.txt' does not exist"):
        read_data_file(tmp_path / "nothing.txt", role="training")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("")
    with pytest.raises(TunesmithError, match="The 1 text file of the training folder '.*docs' is empty"):
        read_text_folder(tmp_path / "docs", role="training")
    with pytest.raises(TunesmithError, match=r"has no text column to train a language model on \(2 columns hold text \('a', 'b'\)"):
        documents_of(pd.DataFrame({"a": ["some words", "more"], "b": ["other words", "more"]}), None, "t.csv")
    with pytest.raises(TunesmithError, match=r"no column holds text.*name the column with --text-column"):
        documents_of(pd.DataFrame({"score": [1, 2]}), None, "t.csv")
    with pytest.raises(TunesmithError, match=r"Column 'text' of 't.json' has cells that are not text \(row 2\)"):
        documents_of(pd.DataFrame({"text": ["fine", ["a", "list"]]}), None, "t.json")


def test_a_csv_saved_as_txt_is_refused_under_task_auto_and_trained_as_text_when_asked(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("text,label\na great film,pos\nawful,neg\nquite fine,pos\n")
    raw = read_text_file(path, role="training")
    with pytest.raises(TunesmithError, match=r"looks like a table saved under an unknown format \('.txt'\): a header naming the columns "
                                             r"'text', 'label' and 3 lines split by ',' alike; rename it to .csv"):
        choose_task("auto", raw, config().data)
    assert choose_task("causal-lm", raw, config().data)[0] is CausalLM  # --task causal-lm: its text, as written


@pytest.mark.parametrize("text", ["CHAPTER I\nIt was late, and cold.\nShe said, quietly, no.\nThen, at last, morning came, grey.",
                                  "one line only", "a,b\nc,d"])
def test_prose_with_commas_is_not_a_table(text):
    assert looks_like_table(text) is None


def test_task_auto_leaves_a_table_of_one_text_column_to_the_other_tasks():
    assert CausalLM.detect(pd.DataFrame({"text": ["some words", "more words"]}), config().data) is None


# -- passages and validation --------------------------------------------------------------------------

def test_pieces_end_before_whitespace_at_the_best_break_and_join_back_exactly():
    text = "Alpha beta gamma. Delta epsilon.\n\nZeta eta theta iota. Kappa lambda mu.\nNu xi omicron pi rho sigma tau."
    pieces = cut_into_pieces(text, 40)
    assert "".join(pieces) == text
    assert pieces[0] == "Alpha beta gamma. Delta epsilon."  # the paragraph break, although a sentence end came later
    assert all(20 <= len(p) <= 40 for p in pieces[:-1]) and all(p[0].isspace() for p in pieces[1:])
    assert cut_into_pieces("x" * 100, 40) == ["x" * 40, "x" * 40, "x" * 20]  # no whitespace: a hard cut


def test_validation_holds_out_whole_passages_of_a_single_document(tmp_path):
    path = tmp_path / "book.txt"
    document = prose(random.Random(2), paragraphs=150)  # about 10,000 characters: passages of 4 x 64
    path.write_text(document)
    raw = read_data_file(path, role="training")
    task, splits = CausalLM.prepare(raw, {"train": str(path)}, config(max_length=64), seed=0)
    assert splits.validation_from_split and len(splits.validation) >= 4
    assert passage_chars([document], 64) == 4 * 64
    both = pd.concat([splits.train, splits.validation]).sort_values("piece")
    assert "".join(both["text"]) == document  # nothing lost, nothing in both splits
    assert set(splits.train["piece"]).isdisjoint(splits.validation["piece"])
    assert any("Cut the 1 document into" in note for note in splits.notes)
    assert splits.summary == (f"{len(splits.train)} train / {len(splits.validation)} validation passages, "
                              f"{splits.train['text'].str.len().sum():,} characters of 1 document in training")


def test_a_validation_file_and_max_train_examples(tmp_path, notes_file):
    validation = tmp_path / "held_out.csv"
    validation.write_text("id,body\n1,hi how are you\n2,\n3,bye now\n")
    cfg = config(max_train_examples=5, validation=str(validation))
    task, splits = CausalLM.prepare(read_data_file(notes_file), {"train": str(notes_file), "validation": str(validation)}, cfg, seed=0)
    assert len(splits.train) == 5 and list(splits.validation["text"]) == ["hi how are you", "bye now"]
    assert not splits.validation_from_split and task.text_column is None


def test_training_on_the_forgetting_text_is_refused(tmp_path, notes_file):
    cfg = config()
    cfg.task.forgetting_text = str(notes_file)
    with pytest.raises(TunesmithError, match="is the text forgetting is measured on"):
        CausalLM.prepare(read_data_file(notes_file), {"train": str(notes_file)}, cfg, seed=0)


# -- the token stream and its blocks ----------------------------------------------------------------------

@pytest.mark.parametrize("tokens, max_length", [(100, 8), (8, 8), (9, 8), (15, 8), (16, 8), (2, 8)])
def test_every_token_but_the_first_is_a_target_exactly_once(tokens, max_length):
    ids = list(range(tokens))
    blocks = cut_blocks(ids, max_length)
    assert all(len(b) == max_length for b in blocks[:-1]) and 2 <= len(blocks[-1]) <= max_length
    assert [t for b in blocks for t in b[1:]] == ids[1:]  # the shift predicts b[1:] from b[:-1]
    assert all(b[0] == a[-1] for a, b in zip(blocks, blocks[1:]))  # each block starts with its predecessor's last token


def test_one_token_of_text_makes_no_block():
    assert cut_blocks([5], 8) == [] and cut_blocks([], 8) == []


def test_an_end_of_text_token_follows_each_document_and_nothing_comes_between_its_passages():
    tokenizer = word_tokenizer()
    eos = tokenizer.eos_token_id
    table = passages(["hi how are you fine thanks", "bye now"], max_chars=12)
    assert list(table["document"]) == [0, 0, 0, 1] and list(table["ends_document"]) == [False, False, True, True]
    ids = token_stream(tokenizer, table)
    assert tokenizer.convert_ids_to_tokens(ids) == ["hi", "how", "are", "you", "fine", "thanks", "<|im_end|>", "bye", "now", "<|im_end|>"]
    shuffled = pd.concat([table.iloc[[2, 0]], table.iloc[[3, 1]]])  # a refit's training + validation: back in document order
    assert token_stream(tokenizer, shuffled) == ids and ids.count(eos) == 2


def test_a_begin_token_starts_each_document_where_the_tokenizer_writes_one():
    from tokenizers import processors

    tokenizer = word_tokenizer()
    tokenizer._tokenizer.post_processor = processors.TemplateProcessing(single="<|im_start|> $A", special_tokens=[("<|im_start|>", 1)])
    tokenizer.bos_token = "<|im_start|>"
    assert begin_token(tokenizer) == 1 and begin_token(word_tokenizer()) is None
    ids = token_stream(tokenizer, passages(["hi how are you", "bye now"], max_chars=8))
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|im_start|>", "hi", "how", "are", "you", "<|im_end|>", "<|im_start|>", "bye", "now",
                                                    "<|im_end|>"]


def test_encoded_blocks_are_full_unpadded_rows_whose_labels_are_their_tokens():
    tokenizer = word_tokenizer()
    task = CausalLM()
    table = passages([prose(random.Random(3), paragraphs=2) for _ in range(5)], max_chars=50)
    stream = token_stream(tokenizer, table)
    features = task.encode(tokenizer, table, max_length=16)
    assert len(features) == math.ceil((len(stream) - 1) / 15) and int(features.labels.sum()) == len(stream) - 1
    batch = task.collate(features, list(range(len(features) - 1)), pad_id=0)  # all but the last block: no padding at all
    assert batch["input_ids"].shape == (len(features) - 1, 16) and bool(batch["attention_mask"].all())
    assert torch.equal(batch["labels"], batch["input_ids"]) and task.target_count(batch["labels"]) == 15 * (len(features) - 1)
    last = task.collate(features, [len(features) - 1, 0], pad_id=0)  # the short last block pads; its padding is no target
    assert (last["labels"][0] == IGNORE).sum() == 16 - features.lengths[-1]


def test_texts_scored_alone_are_cut_to_max_length():
    features = CausalLM().encode(word_tokenizer(), pd.DataFrame({"text": ["hi how are you", " ".join(["you"] * 40)]}), max_length=16)
    assert list(features.lengths) == [4, 16] and list(features.labels) == [3, 15]


# -- training -------------------------------------------------------------------------------------------

def test_a_short_full_training_lowers_the_held_out_loss(tmp_path, notes_file, tiny_model):
    run = tunesmith.finetune(notes_file, task="causal-lm", out=str(tmp_path / "run"), model=str(tiny_model), method="full", **OPTIONS)
    before, after = run.metrics["before"]["validation"], run.metrics["validation"]
    assert before["target_tokens"] == after["target_tokens"] > 200
    assert before["loss"] > 0.9 * math.log(len(WORDS))  # a random model: about log(vocabulary) = 3.2
    assert after["loss"] < before["loss"] - 1.0  # measured 3.22 -> 1.86
    assert after["perplexity"] == pytest.approx(math.exp(after["loss"]))


def test_the_cli_trains_on_a_txt_file_and_writes_metrics_with_before_and_forgetting(tmp_path, notes_file, general_file, tiny_model, capsys):
    from tunesmith.cli import main

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in dict(OPTIONS, forgetting_text=str(general_file)).items()]
    out = tmp_path / "run"
    assert main(["train", str(notes_file), "--task", "causal-lm", "--model", str(tiny_model), "--method", "full", "--out", str(out), *flags]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "Before fine-tuning, validation: loss" in printed and "Forgetting: perplexity on" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "causal-lm" and metrics["validation"]["loss"] < metrics["before"]["validation"]["loss"]
    forgot = metrics["forgetting"]
    assert forgot["text"] == str(general_file) and forgot["tokens"] == 200 - 200 // 32 - 1  # chat's windows of 32 words
    assert forgot["perplexity_before"] == pytest.approx(math.exp(metrics["before"]["reference"]["loss"]))
    assert json.loads((out / "run.json").read_text())["task"] == "causal-lm"


def test_task_auto_picks_causal_lm_for_a_txt_file_and_lora_by_default(tmp_path, notes_file, tiny_model):
    from safetensors.torch import load_file

    run = tunesmith.finetune(notes_file, out=str(tmp_path / "run"), model=str(tiny_model), **dict(OPTIONS, epochs=1))
    assert run.record["task"] == "causal-lm" and run.record["method"] == "lora"
    adapter = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)  # the adapter alone: no lm_head, no embeddings


def test_predict_and_eval_score_perplexity(tmp_path, notes_file, tiny_model):
    run = tunesmith.finetune(notes_file, task="causal-lm", out=str(tmp_path / "run"), model=str(tiny_model), method="full", **OPTIONS)
    likely, unlikely, single = run.predict(["hi how are you fine thanks", "soon soon bot brief a now", "hi"])
    assert likely["tokens"] == unlikely["tokens"] == 5 and likely["perplexity"] < unlikely["perplexity"]
    assert likely["perplexity"] == pytest.approx(math.exp(likely["loss"]))
    assert single == {"loss": None, "perplexity": None, "tokens": 0}
    assert run.task.describe_prediction(likely).startswith("perplexity ")
    table = tmp_path / "texts.csv"
    table.write_text("id,text\n1,hi how are you\n2,\n3,bye now see you soon\n")
    scored = run.predict_file(table)
    assert list(scored["id"]) == ["1", "3"] and list(scored["tokens"]) == [3, 4]
    metrics = run.evaluate(notes_file)
    assert metrics["perplexity"] < 0.5 * len(WORDS) and metrics["target_tokens"] > 1000  # the whole file, as one stream
    with pytest.raises(TunesmithError, match="scores texts by their perplexity"):
        run.predict([["a", "list"]])


def test_class_folders_of_text_with_no_text_beside_them_are_left_to_the_media_message(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("hello")
    with pytest.raises(TunesmithError, match="is a folder with no images in class sub-folders"):
        read_data_file(tmp_path, role="training")
    (tmp_path / "intro.txt").write_text("Hi.")
    assert list(read_data_file(tmp_path, role="training")["text"]) == ["Hi.", "hello"]  # a folder's own files, then its sub-folders'
