"""Conversation data for chat fine-tuning (data/chat.py): layouts read into one conversation, every bad
record one sentence, and the loss mask, checked token by token, on every assistant turn and nothing else."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tunesmith.data.chat import (CHAT_TEMPLATES, IGNORE, chat_layout, conversations, encode_conversation, encode_conversations,
                                 resolve_chat_template, truncation_counts, truncation_note)
from tunesmith.data.sources import read_data_file
from tunesmith.errors import TunesmithError

WORDS = ["<unk>", "<|im_start|>", "<|im_end|>", "\n", "system", "user", "assistant", "be", "brief", "hi", "hello", "you",
         "how", "are", "fine", "thanks", "bye", "now", "see", "soon", "a", "helpful", "bot", "name", "it"]

THREE_TURNS = [{"role": "system", "content": "be brief"},
               {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello you"},
               {"role": "user", "content": "how are you"}, {"role": "assistant", "content": "fine thanks"},
               {"role": "user", "content": "bye now"}, {"role": "assistant", "content": "see you soon"}]


def word_tokenizer(template: str | None = CHAT_TEMPLATES["chatml"]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer that keeps line breaks as tokens, so every token of the template is visible."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(" +"), behavior="removed"),
                                                 pre_tokenizers.Split("\n", behavior="isolated")])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                        additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = template
    return tokenizer


def marked(tokenizer, encoded) -> list[tuple[str, bool]]:
    """(token, is it a target) for every token; a target's label must be its own id."""
    for token, label in zip(encoded.input_ids, encoded.labels):
        assert label in (token, IGNORE)
    return [(tokenizer.convert_ids_to_tokens(t), label != IGNORE) for t, label in zip(encoded.input_ids, encoded.labels)]


def turn(role: str, words: str, target: bool) -> list[tuple[str, bool]]:
    """The tokens ChatML writes for one message: header -100, then the words and <|im_end|> (targets for the assistant)."""
    return ([("<|im_start|>", False), (role, False), ("\n", False)] + [(w, target) for w in words.split()]
            + [("<|im_end|>", target), ("\n", False)])


# -- the loss mask ------------------------------------------------------------------------------------

def test_every_assistant_turn_and_its_end_of_turn_token_are_the_only_targets():
    tokenizer = word_tokenizer()
    got = marked(tokenizer, encode_conversation(tokenizer, THREE_TURNS, max_length=100))
    S, T = False, True  # prompt side (-100), target
    expected = [
        ("<|im_start|>", S), ("system", S), ("\n", S), ("be", S), ("brief", S), ("<|im_end|>", S), ("\n", S),
        ("<|im_start|>", S), ("user", S), ("\n", S), ("hi", S), ("<|im_end|>", S), ("\n", S),
        ("<|im_start|>", S), ("assistant", S), ("\n", S), ("hello", T), ("you", T), ("<|im_end|>", T), ("\n", S),
        ("<|im_start|>", S), ("user", S), ("\n", S), ("how", S), ("are", S), ("you", S), ("<|im_end|>", S), ("\n", S),
        ("<|im_start|>", S), ("assistant", S), ("\n", S), ("fine", T), ("thanks", T), ("<|im_end|>", T), ("\n", S),
        ("<|im_start|>", S), ("user", S), ("\n", S), ("bye", S), ("now", S), ("<|im_end|>", S), ("\n", S),
        ("<|im_start|>", S), ("assistant", S), ("\n", S), ("see", T), ("you", T), ("soon", T), ("<|im_end|>", T), ("\n", S),
    ]
    assert got == expected
    assert "<unk>" not in [token for token, _ in got]  # every word is in the vocabulary: nothing hides behind <unk>


def test_train_on_prompt_makes_every_token_a_target():
    tokenizer = word_tokenizer()
    encoded = encode_conversation(tokenizer, THREE_TURNS, max_length=100, train_on_prompt=True)
    assert encoded.labels == encoded.input_ids and len(encoded.input_ids) == 50 and encoded.truncated == 0
    assert encoded.input_ids == encode_conversation(tokenizer, THREE_TURNS, max_length=100).input_ids  # the same tokens, only the labels differ


def test_a_default_system_prompt_the_template_adds_is_kept_and_is_not_a_target():
    # SmolLM2's template writes its own system message when a conversation has none: that is the model's way, kept
    smol_like = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nbe a helpful bot<|im_end|>\n' }}{% endif %}"
                 "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    tokenizer = word_tokenizer(smol_like)
    got = marked(tokenizer, encode_conversation(tokenizer, THREE_TURNS[1:3], max_length=100))
    assert got == turn("system", "be a helpful bot", False) + turn("user", "hi", False) + turn("assistant", "hello you", True)


def test_targets_of_a_byte_level_bpe_decode_to_exactly_the_assistant_turns():
    """Offsets of a real-style byte-level BPE (spaces inside tokens): each run of targets is one reply and its <|im_end|>."""
    from tokenizers import decoders, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [m["content"] for m in THREE_TURNS] * 20 + ["système naïve café"] * 5
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", additional_special_tokens=["<|im_start|>"])
    tokenizer.chat_template = CHAT_TEMPLATES["chatml"]
    chat = THREE_TURNS[:5] + [{"role": "user", "content": "café?"}, {"role": "assistant", "content": "naïve système, bye"}]
    encoded = encode_conversation(tokenizer, chat, max_length=500)
    runs, current = [], []
    for token, label in zip(encoded.input_ids, encoded.labels):
        if label != IGNORE:
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    replies = [tokenizer.decode(run) for run in runs + ([current] if current else [])]
    assert replies == [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]
    assert tokenizer.decode(encoded.input_ids) == tokenizer.apply_chat_template(chat, tokenize=False)


def test_a_template_that_rewrites_earlier_turns_is_refused():
    # like templates that drop earlier reasoning: an assistant turn reads differently once another follows
    rewriting = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
                 "{% if message['role'] == 'assistant' and not loop.last %}{{ 'fine' }}{% else %}{{ message['content'] }}{% endif %}"
                 "{{ '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
    with pytest.raises(TunesmithError, match=r"renders the start of a conversation differently .* --chat-template chatml"):
        encode_conversation(word_tokenizer(rewriting), THREE_TURNS, max_length=100)


def test_a_template_that_refuses_a_conversation_names_its_row():
    no_system = ("{% for message in messages %}{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                 "{% endif %}{{ message['content'] }}{% endfor %}")
    chats = [THREE_TURNS[1:3], THREE_TURNS]
    with pytest.raises(TunesmithError, match=r"refused row 2 of 'chats.jsonl' \(System role not supported\); .*--chat-template"):
        encode_conversations(word_tokenizer(no_system), chats, 100, source_name="chats.jsonl")


# -- chat templates ----------------------------------------------------------------------------------

def test_a_base_model_without_a_chat_template_is_told_the_fix(tmp_path):
    tokenizer = word_tokenizer(template=None)
    no_template = r"base model has no chat template.*--chat-template chatml.*--chat-template FILE\.jinja"
    with pytest.raises(TunesmithError, match=no_template):
        encode_conversation(tokenizer, THREE_TURNS, max_length=100)
    with pytest.raises(TunesmithError, match=no_template):
        resolve_chat_template(tokenizer, None)
    assert resolve_chat_template(tokenizer, "chatml") == "chatml" and tokenizer.chat_template == CHAT_TEMPLATES["chatml"]
    assert encode_conversation(tokenizer, THREE_TURNS, max_length=100).input_ids[:3] == tokenizer.convert_tokens_to_ids(["<|im_start|>", "system", "\n"])

    own = tmp_path / "mine.jinja"
    own.write_text("{% for message in messages %}{{ message['role'] + '\n' + message['content'] + '\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ 'assistant\n' }}{% endif %}", encoding="utf-8")
    assert resolve_chat_template(tokenizer, str(own)) == str(own)
    assert marked(tokenizer, encode_conversation(tokenizer, THREE_TURNS[1:3], max_length=100)) == [
        ("user", False), ("\n", False), ("hi", False), ("\n", False), ("assistant", False), ("\n", False), ("hello", True), ("you", True), ("\n", False)]
    assert resolve_chat_template(word_tokenizer(), None) == "the model's own"


def test_a_chat_template_that_is_neither_a_name_nor_a_readable_template_is_one_sentence(tmp_path):
    with pytest.raises(TunesmithError, match=r"--chat-template 'chatlm' is neither a template name \(chatml\) nor a template file"):
        resolve_chat_template(word_tokenizer(), "chatlm")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for message in messages %}{{ message['content'] }", encoding="utf-8")
    with pytest.raises(TunesmithError, match=r"broken\.jinja' cannot render a conversation .*; fix the template or pass --chat-template chatml"):
        resolve_chat_template(word_tokenizer(), str(broken))


# -- truncation ----------------------------------------------------------------------------------------

def test_conversations_longer_than_max_length_are_cut_and_counted():
    tokenizer = word_tokenizer()
    short = THREE_TURNS[1:3]                 # 13 tokens: fits
    cut_late = THREE_TURNS                   # 50 tokens: cut just after the first reply's <|im_end|> and line break
    cut_early = [user(" ".join(["how are you"] * 6)), bot("fine")]  # 29 tokens, the reply at 26 and 27
    encoded = encode_conversations(tokenizer, [short, cut_late, cut_early], max_length=20)
    assert [len(e.input_ids) for e in encoded] == [13, 20, 20] and [len(e.labels) for e in encoded] == [13, 20, 20]
    assert [e.truncated for e in encoded] == [0, 30, 9]
    assert [e.targets for e in encoded] == [3, 3, 0]  # 'hello you <|im_end|>' survives the cut, 'fine' does not
    assert truncation_counts(encoded) == (2, 1)
    assert truncation_note(encoded, 20) == ("Cut 2 of 3 conversations to --max-length 20 (39 tokens in all); 1 of them kept no assistant "
                                            "token and cannot train: raise --max-length or shorten them.")
    assert truncation_note(encoded[:1], 20) is None and truncation_counts(encoded[:1]) == (0, 0)


# -- layouts ------------------------------------------------------------------------------------------

EXPECTED_CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello you"},
                 {"role": "user", "content": "how are you\nbye now"}, {"role": "assistant", "content": "fine thanks"}]


def write(path: Path, records: list[dict]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    elif path.suffix == ".csv":
        pd.DataFrame(records).to_csv(path, index=False)
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return path


LAYOUT_FILES = {
    "alpaca.json": [{"system": "be brief", "history": [["hi", "hello you"]], "instruction": "how are you", "input": "bye now",
                     "output": "fine thanks"}],
    "openai.jsonl": [{"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                   {"role": "assistant", "content": "hello you"}, {"role": "user", "content": "how are you\nbye now"},
                                   {"role": "assistant", "content": "fine thanks"}]}],
    "sharegpt.json": [{"system": "be brief", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello you"},
                                                               {"from": "human", "value": "how are you\nbye now"}, {"from": "gpt", "value": "fine thanks"}]}],
    "sharegpt-roles.jsonl": [{"conversations": [{"from": "system", "value": "be brief"}, {"from": "user", "value": "hi"},
                                                {"from": "assistant", "value": "hello you"}, {"from": "User", "value": "how are you\nbye now"},
                                                {"from": "GPT", "value": "fine thanks"}]}],
    "sharegpt-named-messages.jsonl": [{"messages": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"},
                                                    {"from": "gpt", "value": "hello you"}, {"from": "human", "value": "how are you\nbye now"},
                                                    {"from": "gpt", "value": "fine thanks"}]}],
}
LAYOUTS = {"alpaca.json": ("alpaca", "columns instruction/input/output (Alpaca)"),
           "openai.jsonl": ("messages", "a messages column of {role, content} turns (OpenAI)"),
           "sharegpt.json": ("sharegpt", "a conversations column of {from, value} turns (ShareGPT)"),
           "sharegpt-roles.jsonl": ("sharegpt", "a conversations column of {from, value} turns (ShareGPT)"),
           "sharegpt-named-messages.jsonl": ("sharegpt", "a messages column of {from, value} turns (ShareGPT)")}


@pytest.mark.parametrize("name", list(LAYOUT_FILES))
def test_every_layout_reads_into_the_same_conversation(tmp_path, name):
    path = write(tmp_path / name, LAYOUT_FILES[name])
    raw = read_data_file(path, role="training")
    assert chat_layout(raw) == LAYOUTS[name]
    assert conversations(raw, chat_layout(raw)[0], path) == [EXPECTED_CHAT]


def test_prompt_completion_and_plain_alpaca_rows_from_csv(tmp_path):
    pairs = write(tmp_path / "pairs.csv", [{"prompt": "hi", "completion": "hello you"}, {"prompt": "bye now", "completion": "see you soon"}])
    raw = read_data_file(pairs, role="training")
    assert chat_layout(raw) == ("prompt-completion", "columns prompt/completion")
    assert conversations(raw, "prompt-completion", pairs)[1] == [{"role": "user", "content": "bye now"}, {"role": "assistant", "content": "see you soon"}]
    dolly = write(tmp_path / "dolly.csv", [{"Instruction": "hi", "context": "", "response": 42}])
    raw = read_data_file(dolly, role="training")
    assert chat_layout(raw) == ("alpaca", "columns Instruction/context/response (Alpaca)")
    assert conversations(raw, "alpaca", dolly) == [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "42"}]]
    cells = write(tmp_path / "cells.csv", [{"messages": json.dumps(LAYOUT_FILES["openai.jsonl"][0]["messages"])}])
    raw = read_data_file(cells, role="training")
    assert chat_layout(raw)[0] == "messages" and conversations(raw, "messages", cells) == [EXPECTED_CHAT]


def test_tables_that_are_not_conversations_have_no_chat_layout():
    assert chat_layout(pd.DataFrame({"text": ["a film"], "label": ["pos"]})) is None
    assert chat_layout(pd.DataFrame({"prompt": ["hi"], "answer": ["hello"]})) is None
    assert chat_layout(pd.DataFrame({"prompt": ["hi"], "chosen": ["hello"], "rejected": ["go away"]})) is None  # preference pairs
    assert chat_layout(pd.DataFrame({"conversations": [[{"from": "human", "value": "hi"}]], "chosen": [{}], "rejected": [{}]})) is None


# -- bad input: one sentence each, naming the file, the rows and the fix ---------------------------------

def user(text="hi"):
    return {"role": "user", "content": text}


def bot(text="hello"):
    return {"role": "assistant", "content": text}


GOOD = {"messages": [user(), bot()]}
BAD = {
    "alpaca with no output": ("a.jsonl", [{"instruction": "hi", "output": "hello"}, {"instruction": "hi", "output": ""}, {"instruction": "hi"}],
                              r"'{path}' has records with no output on row 2, row 3; give every record the answer the model should learn, or remove those records."),
    "no completion, csv lines": ("p.csv", [{"prompt": "hi", "completion": "hello"}, {"prompt": "hi", "completion": " "}],
                                 r"'{path}' has records with no completion on line 3; give every record"),
    "no output column": ("a.jsonl", [{"instruction": "hi", "answer": "hello"}],
                         r"'{path}' is read as alpaca data but has no 'output' column (its columns: instruction, answer); add it, or rename"),
    "unknown role": ("m.jsonl", [GOOD, {"messages": [user(), {"role": "tool", "content": "42"}]}],
                     r"'{path}' has messages with a role the messages layout does not know on row 2 (message 2 is 'tool'); "
                     r"the roles accepted are system, user, assistant: rename those messages or remove them."),
    "unknown sharegpt role": ("s.jsonl", [{"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "hello"}]}],
                              r"role the sharegpt layout does not know on row 1 (message 2 is 'bot'); the roles accepted are system, human, user, gpt, assistant"),
    "no assistant turn": ("m.jsonl", [GOOD, {"messages": [{"role": "system", "content": "be brief"}, user()]}],
                          r"'{path}' has conversations with no assistant turn on row 2; each needs at least one assistant reply to learn from"),
    "two user turns": ("m.jsonl", [{"messages": [user(), user("again"), bot()]}],
                       r"'{path}' has turns that do not alternate between user and assistant on row 1 (message 2 is a second user in a row); "
                       r"after an optional first system message the turns must go user, assistant, user, ...: merge repeated turns or add the missing ones."),
    "assistant first": ("m.jsonl", [{"messages": [{"role": "system", "content": "be brief"}, bot(), user(), bot()]}],
                        r"on row 1 (message 2 is assistant where the first turn must be user)"),
    "late system": ("m.jsonl", [{"messages": [user(), bot(), {"role": "system", "content": "be brief"}, user(), bot()]}],
                    r"'{path}' has a system message after the start on row 1 (message 3); a system message may only open the conversation"),
    "system column and system turn": ("s.jsonl", [{"system": "be brief", "conversations": [{"from": "system", "value": "be brief"},
                                                                                           {"from": "human", "value": "hi"}]}],
                                      r"a system message after the start on row 1 (message 1)"),
    "empty content": ("m.jsonl", [{"messages": [user(), bot("  ")]}],
                      r"'{path}' has messages with no text on row 1 (message 2, assistant); give every message its text or remove the empty ones."),
    "empty instruction": ("a.jsonl", [{"instruction": "", "input": "", "output": "hello"}],
                          r"messages with no text on row 1 (the instruction and input, user)"),
    "not a list": ("m.jsonl", [GOOD, {"messages": "hi there"}],
                   r"'{path}' has records that are not conversations on row 2 (its messages cell is not a list of {'role', 'content'} objects); "
                   r'each must be a list of {"role": ..., "content": ...} messages: fix or remove those records.'),
    "bad history": ("a.jsonl", [{"instruction": "hi", "output": "hello", "history": [["hi"]]}],
                    r"on row 1 (its history is not a list of [user, assistant] pairs)"),
    "many rows": ("m.jsonl", [GOOD] + [{"messages": [user()]}] * 5,
                  r"no assistant turn on row 2, row 3, row 4 and 2 more rows; "),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_records_are_one_sentence_naming_the_rows_and_the_fix(tmp_path, case):
    name, records, sentence = BAD[case]
    path = write(tmp_path / name, records)
    raw = read_data_file(path, role="training")
    with pytest.raises(TunesmithError, match=re.escape(sentence.replace("{path}", str(path)))) as caught:
        conversations(raw, chat_layout(raw)[0], path)
    message = str(caught.value)
    assert "\n" not in message and message.endswith(".") and message.count("; ") >= 1


# -- a real chat tokenizer, when one is cached --------------------------------------------------------

def cached_chat_tokenizer():
    """The tokenizer of a chat model already in tunesmith's cache (smollm2-135m once fetched), or None."""
    root = Path.home() / ".cache" / "tunesmith" / "models"
    for config in sorted(root.glob("**/tokenizer_config.json")) if root.is_dir() else []:
        try:
            tokenizer = AutoTokenizer.from_pretrained(config.parent)
        except Exception:  # a folder of another kind (an image processor's, a half-written one): not a chat model
            continue
        if getattr(tokenizer, "chat_template", None):
            return tokenizer
    return None


@pytest.mark.slow
def test_a_real_chat_template_targets_each_reply_and_nothing_of_the_prompt():
    tokenizer = cached_chat_tokenizer()
    if tokenizer is None:
        pytest.skip("no chat model in ~/.cache/tunesmith/models yet")
    chat = [user("What is the capital of France?"), bot("Paris."), user("And of Italy?"), bot("Rome, since 1871.")]
    encoded = encode_conversation(tokenizer, chat, max_length=4096)
    targets = tokenizer.decode([t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE])
    assert targets.index("Paris.") < targets.index("Rome, since 1871.")
    assert "capital" not in targets and "Italy" not in targets and "assistant" not in targets
    assert tokenizer.eos_token in targets or "<|im_end|>" in targets or "<|eot_id|>" in targets  # it learns to stop
