"""Preference tuning (DPO) on a tiny random Llama with a ChatML word tokenizer: the three layouts of preference pairs
read into one table and every bad row one sentence, the labels on the answer tokens alone, the loss against a hand
computation (sigmoid, label smoothing, IPO), a first loss of log 2 (the reference is the model as built), a short
training that makes held-out pairs prefer their chosen answer, and the command line end to end."""
from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest
import torch

import tunesmith
import tunesmith.tasks.preference  # noqa: F401  (registers the task until tasks/__init__.py imports it)
from test_chat_data import marked, turn, word_tokenizer
from test_chat_task import build_tiny_chat_model
from tunesmith.data.chat import IGNORE, EncodedChat
from tunesmith.data.preference import preference_layout, read_preference_pairs
from tunesmith.data.sources import read_data_file
from tunesmith.errors import TunesmithError
from tunesmith.tasks.preference import Preference, cut_pair, dpo_losses

OPTIONS = {"epochs": 1, "batch_size": 8, "lr": 1e-2, "early_stopping": 0, "checkpoint_every": 0, "threads": 1, "refit": "off",
           "precision": "fp32", "max_length": 64}
FILLER = ["how", "are", "you", "now", "a", "bot", "name", "it", "helpful", "be", "brief"]


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"))


def cued_pairs(n: int, seed: int) -> list[dict]:
    """A preference that depends on the prompt: a prompt holding 'hi' prefers 'hello', one holding 'bye' prefers 'soon'.
    A model must read each pair's own prompt to learn it, so chosen and rejected rows mixed up across pairs would show."""
    rng, rows = random.Random(seed), []
    for i in range(n):
        cue = ("hi", "bye")[i % 2]
        words = rng.sample(FILLER, rng.randint(1, 4))
        words.insert(rng.randint(0, len(words)), cue)
        good, bad = ("hello", "soon") if cue == "hi" else ("soon", "hello")
        rows.append({"prompt": [{"role": "user", "content": " ".join(words)}], "chosen": [{"role": "assistant", "content": good}],
                     "rejected": [{"role": "assistant", "content": bad}]})
    return rows


def write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cued_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pairs")
    return {role: str(write_jsonl(folder / f"{role}.jsonl", cued_pairs(n, seed)))
            for role, n, seed in (("train", 48, 0), ("validation", 16, 1), ("test", 16, 2))}


# -- reading the layouts -------------------------------------------------------------------------------

LLAMAFACTORY = [
    {"conversations": [{"from": "system", "value": "be brief"}, {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                       {"from": "human", "value": "how are you"}],
     "chosen": {"from": "gpt", "value": "fine thanks"}, "rejected": {"from": "gpt", "value": "see you soon"}},
    {"conversations": [{"from": "human", "value": "bye now"}], "chosen": {"from": "gpt", "value": "see you soon"},
     "rejected": {"from": "gpt", "value": "hello"}},
]


def test_llamafactory_ranking_records_are_read_into_prompt_chosen_rejected_and_detected_before_chat(tmp_path):
    from tunesmith.config import RunConfig
    from tunesmith.tasks import choose_task
    from tunesmith.tasks.chat import Chat

    path = tmp_path / "dpo_en_demo.json"
    path.write_text(json.dumps(LLAMAFACTORY), encoding="utf-8")
    raw = read_data_file(path)
    table, layout = read_preference_pairs(raw, path)
    assert layout == "sharegpt" and list(table.columns) == ["prompt", "chosen", "rejected"]
    assert table["prompt"][0] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": "how are you"}]
    assert table["chosen"].tolist() == ["fine thanks", "see you soon"] and table["rejected"].tolist() == ["see you soon", "hello"]
    assert Chat.detect(raw, None) is None  # a conversations column beside chosen/rejected is not chat data
    task, why = choose_task("auto", raw, RunConfig().data)
    assert task is Preference and "chosen and rejected columns" in why


def test_trl_conversational_pairs_and_a_csv_of_json_messages_read_the_same(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "hello you"}],
             "rejected": [{"role": "assistant", "content": "bye"}]}]
    table, layout = read_preference_pairs(read_data_file(write_jsonl(tmp_path / "pairs.jsonl", rows)), "pairs.jsonl")
    assert layout == "conversational"
    assert table.to_dict("records") == [{"prompt": [{"role": "user", "content": "hi"}], "chosen": "hello you", "rejected": "bye"}]
    csv = tmp_path / "pairs.csv"
    pd.DataFrame([{key: json.dumps(value) for key, value in rows[0].items()}]).to_csv(csv, index=False)
    assert read_preference_pairs(read_data_file(csv), csv)[0].to_dict("records") == table.to_dict("records")
    code = pd.DataFrame({"prompt": ["[1, 2, 3] as JSON"], "chosen": ['{"numbers": [1, 2, 3]}'], "rejected": ["[1, 2, 3]"]})
    assert read_preference_pairs(code, "pairs.jsonl")[0].to_dict("records") == [  # answers that parse as JSON stay text
        {"prompt": user("[1, 2, 3] as JSON"), "chosen": '{"numbers": [1, 2, 3]}', "rejected": "[1, 2, 3]"}]


def test_plain_text_columns_make_a_text_prompt_one_user_turn_after_the_system_column(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"system": ["be brief", ""], "prompt": ["hi", "bye now"], "chosen": ["hello", "see you soon"],
                  "rejected": ["bye", "hello"]}).to_csv(path, index=False)
    raw = read_data_file(path)
    table, layout = read_preference_pairs(raw, path)
    assert layout == "text" and "text" in preference_layout(raw)[1]
    assert table["prompt"].tolist() == [[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
                                        [{"role": "user", "content": "bye now"}]]
    assert table["chosen"].tolist() == ["hello", "see you soon"]


def user(text):
    return [{"role": "user", "content": text}]


BAD_PAIRS = [  # (the second row of a file, what the sentence must say)
    ({"prompt": "", "chosen": "a", "rejected": "b"}, r"pairs without a prompt, chosen or rejected on row 2 \(no prompt\)"),
    ({"prompt": "hi", "chosen": None, "rejected": "b"}, r"pairs without a prompt, chosen or rejected on row 2 \(no chosen\)"),
    ({"prompt": "hi", "chosen": "same answer", "rejected": "same answer "}, r"chosen answer is the rejected one on row 2; .*says nothing"),
    ({"prompt": "hi", "chosen": "a", "rejected": [{"role": "assistant", "content": "  "}]}, r"with no text on row 2 \(its rejected answer\)"),
    ({"prompt": [{"role": "robot", "content": "hi"}], "chosen": "a", "rejected": "b"},
     r"a role tunesmith does not know on row 2 \(prompt message 1 is 'robot'\); the roles accepted are system, user"),
    ({"prompt": user("hi") + [{"role": "assistant", "content": "hello"}], "chosen": "a", "rejected": "b"},
     r"prompts that do not end with a user turn on row 2 \(it ends with an assistant turn\)"),
    ({"prompt": "hi", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"}, r"not the assistant's on row 2 \(its chosen is from 'user'\)"),
    ({"prompt": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "hi"}], "chosen": "a", "rejected": "b"},
     r"do not alternate between user and assistant on row 2"),
    ({"prompt": "hi", "chosen": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "c"}], "rejected": "b"},
     r"neither text nor messages on row 2 \(its chosen holds 2 messages, not one answer\)"),
]


@pytest.mark.parametrize("bad, expected", BAD_PAIRS, ids=[m.split(" on ")[0][:40] for _, m in BAD_PAIRS])
def test_each_bad_pair_is_one_sentence_naming_its_row(bad, expected):
    raw = pd.DataFrame([{"prompt": user("hi"), "chosen": "hello", "rejected": "bye"}, bad])
    with pytest.raises(TunesmithError, match=expected) as caught:
        read_preference_pairs(raw, "pairs.jsonl")
    assert str(caught.value).startswith("'pairs.jsonl' has ") and str(caught.value).count(". ") == 0


def test_a_bad_csv_row_is_named_by_its_line_and_missing_columns_are_one_sentence(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"prompt": ["hi", "bye"], "chosen": ["a", "b"], "rejected": ["c", "b"]}).to_csv(path, index=False)
    with pytest.raises(TunesmithError, match=r"on line 3; such a pair"):
        read_preference_pairs(read_data_file(path), path)
    with pytest.raises(TunesmithError, match=r"has chosen and rejected columns but no prompt they answer .*add a prompt column"):
        read_preference_pairs(pd.DataFrame({"chosen": ["a"], "rejected": ["b"]}), "pairs.jsonl")
    with pytest.raises(TunesmithError, match=r"holds no preference pairs .*give chosen and rejected columns"):
        read_preference_pairs(pd.DataFrame({"prompt": ["a"], "chosen": ["b"]}), "pairs.jsonl")


# -- tokens and labels ---------------------------------------------------------------------------------

def test_only_the_answer_tokens_and_their_end_of_turn_token_are_targets():
    tokenizer = word_tokenizer()
    table = pd.DataFrame({"prompt": [[{"role": "system", "content": "be brief"}] + user("hi")], "chosen": ["hello you"], "rejected": ["bye"]})
    features = Preference().encode(tokenizer, table, 64)
    prompt = turn("system", "be brief", False) + turn("user", "hi", False) + [("<|im_start|>", False), ("assistant", False), ("\n", False)]
    assert marked(tokenizer, features.chosen[0]) == prompt + turn("assistant", "hello you", True)[3:]
    assert marked(tokenizer, features.rejected[0]) == prompt + turn("assistant", "bye", True)[3:]
    assert features.lengths.tolist() == [len(prompt) * 2 + 4 + 3] and features.labels.tolist() == [3 + 2]
    batch = Preference().collate(features, [0], tokenizer.pad_token_id or 0)
    tokens = batch["labels"]["tokens"]
    assert tokens.shape == batch["input_ids"].shape == (2, len(prompt) + 4)  # the chosen row, then the rejected row, padded
    assert (tokens[1, len(prompt) + 3:] == IGNORE).all() and "reference" not in batch["labels"]


def encoded(prompt: int, answer: int, first: int = 0) -> EncodedChat:
    """A sequence of `prompt` prompt tokens then `answer` answer tokens, numbered from `first`."""
    ids = list(range(first, first + prompt + answer))
    return EncodedChat(ids, [IGNORE] * prompt + ids[prompt:])


def test_a_long_pair_keeps_the_prompt_end_and_the_answer_start():
    short = encoded(10, 5)
    assert cut_pair(short, encoded(10, 6), 16) == (short, encoded(10, 6))  # fits: untouched
    chosen, rejected = cut_pair(encoded(10, 30), encoded(10, 4, first=100), 20)  # a long answer: cut at its end
    assert chosen.input_ids == list(range(20)) and chosen.truncated == 20 and rejected.input_ids == list(range(100, 114))
    chosen, rejected = cut_pair(encoded(50, 6), encoded(50, 30, first=100), 20)  # a long prompt: cut at its start, the answers get half
    assert chosen.input_ids == list(range(40, 56)) and chosen.labels[:10] == [IGNORE] * 10 and chosen.targets == 6
    assert rejected.input_ids == list(range(140, 160)) and rejected.labels[:10] == [IGNORE] * 10 and rejected.targets == 10


# -- the loss ------------------------------------------------------------------------------------------

def test_the_losses_equal_a_hand_computation():
    policy, reference = torch.tensor([[-4.0, -9.0], [-12.0, -7.5]]), torch.tensor([[-5.0, -8.0], [-10.0, -9.0]])
    tokens = torch.tensor([[2, 4], [5, 3]])
    margins = [(-4 + 5) - (-9 + 8), (-12 + 10) - (-7.5 + 9)]  # 2.0 and -3.5
    softplus = lambda x: math.log1p(math.exp(x))  # noqa: E731  (-log sigmoid(z) = softplus(-z))
    sigmoid = dpo_losses(policy, reference, tokens, beta=0.1)
    assert sigmoid.tolist() == pytest.approx([softplus(-0.1 * m) for m in margins], abs=1e-12)
    smoothed = dpo_losses(policy, reference, tokens, beta=0.5, smoothing=0.2)
    assert smoothed.tolist() == pytest.approx([0.8 * softplus(-0.5 * m) + 0.2 * softplus(0.5 * m) for m in margins], abs=1e-12)
    per_token = [(1 / 2) - (-1 / 4), (-2 / 5) - (1.5 / 3)]  # each answer's log-ratio over its own tokens
    ipo = dpo_losses(policy, reference, tokens, beta=0.1, kind="ipo")
    assert ipo.tolist() == pytest.approx([(m - 5.0) ** 2 for m in per_token], abs=1e-12)


def test_the_task_loss_scores_each_answer_by_its_summed_token_log_probabilities():
    torch.manual_seed(0)
    logits, tokens = torch.randn(4, 5, 7), torch.full((4, 5), IGNORE)
    tokens[0, 3:], tokens[1, 2:4], tokens[2, 4], tokens[3, 1:] = torch.tensor([1, 2]), torch.tensor([3, 4]), 5, torch.tensor([6, 0, 1, 2])
    log_probs = logits.log_softmax(-1)
    summed = [sum(float(log_probs[row, t - 1, tokens[row, t]]) for t in range(1, 5) if tokens[row, t] != IGNORE) for row in range(4)]
    task = Preference(beta=0.2)
    policy, counts = task.answer_logprobs(logits, tokens)
    assert policy.flatten().tolist() == pytest.approx([summed[0], summed[2], summed[1], summed[3]], abs=1e-5)  # rows: chosen 0, 1 then rejected 0, 1
    assert counts.tolist() == [[2, 1], [2, 4]]
    reference = torch.tensor([[-3.0, -2.0], [-6.0, -9.0]])
    total, pairs = task.loss(type("Output", (), {"logits": logits})(), {"tokens": tokens, "reference": reference})
    assert pairs == 2 and float(total) == pytest.approx(float(dpo_losses(policy, reference, counts, 0.2).sum()), abs=1e-5)
    with pytest.raises(TunesmithError, match="needs the reference model's log-probabilities"):
        task.loss(type("Output", (), {"logits": logits.requires_grad_()})(), {"tokens": tokens})


def test_label_smoothing_with_ipo_is_refused_and_the_options_are_kept_in_run_json(tmp_path, cued_files, tiny_chat_model):
    with pytest.raises(TunesmithError, match="label.smoothing.* applies to the sigmoid loss only"):
        tunesmith.finetune(cued_files["train"], out=str(tmp_path / "run"), model=str(tiny_chat_model), dpo_loss="ipo",
                           dpo_label_smoothing=0.1, **OPTIONS)
    task = Preference("sharegpt", "chatml", 0.3, "ipo", 0.0)
    assert Preference.from_record(task.record()).record() == task.record()


# -- training ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss, first", [("sigmoid", math.log(2)), ("ipo", (1 / (2 * 0.1)) ** 2)])
def test_the_first_loss_is_that_of_a_policy_equal_to_its_reference(tmp_path, cued_files, tiny_chat_model, loss, first):
    """LoRA starts as the identity, so the reference (the model as built) is the policy of step 1: every margin 0."""
    run = tunesmith.finetune(cued_files["train"], validation=cued_files["validation"], out=str(tmp_path / "run"),
                             model=str(tiny_chat_model), dpo_loss=loss, **OPTIONS)
    assert run.record["method"] == "lora" and run.record["dpo_loss"] == loss
    assert run.metrics["curves"]["losses"][0] == [1, pytest.approx(first, abs=1e-4)]


def test_a_short_training_makes_held_out_pairs_prefer_their_chosen_answer(tmp_path, cued_files, tiny_chat_model):
    run = tunesmith.finetune(cued_files["train"], validation=cued_files["validation"], test=cued_files["test"], out=str(tmp_path / "run"),
                             model=str(tiny_chat_model), method="full", **dict(OPTIONS, epochs=4))
    validation, test = run.metrics["validation"], run.metrics["test"]
    assert test["examples"] == 16 and test["reward_accuracy"] >= 0.9 and validation["reward_accuracy"] >= 0.9  # 0.5 before; measured 1.0
    assert test["margins"] == pytest.approx(test["chosen_reward"] - test["rejected_reward"]) and test["margins"] > 0
    assert test["loss"] < math.log(2)
    predictions = pd.read_csv(tmp_path / "run" / "test_predictions.csv")
    assert len(predictions) == 16 and set(predictions.columns) >= {"prompt", "chosen", "rejected", "prefers", "chosen_logp"}
    held_out = [{"prompt": "how are you hi", "chosen": "hello", "rejected": "soon"}, {"prompt": "a bye bot", "chosen": "soon", "rejected": "hello"}]
    assert [p["prefers"] for p in run.predict(held_out)] == ["chosen", "chosen"]
    with pytest.raises(TunesmithError, match="predict scores pairs"):
        run.predict(["hi"])


def test_an_adapter_run_exports_merged_with_the_probe_pairs(tmp_path, cued_files, tiny_chat_model):
    run = tunesmith.finetune(cued_files["train"], out=str(tmp_path / "run"), model=str(tiny_chat_model), **OPTIONS)
    assert run.export(tmp_path / "merged", merge=True)["form"] == "plain"
    scored = tunesmith.load(tmp_path / "run").evaluate(cued_files["test"])
    assert scored["examples"] == 16 and "reward_accuracy" not in scored and 0 <= scored["logp_accuracy"] <= 1  # no reference at hand


def test_the_command_line_trains_a_llamafactory_file_and_writes_the_reward_accuracy(tmp_path, tiny_chat_model, capsys):
    from tunesmith.cli import main

    records = [{"conversations": [{"from": "human", "value": pair["prompt"][0]["content"]}],
                "chosen": {"from": "gpt", "value": pair["chosen"][0]["content"]}, "rejected": {"from": "gpt", "value": pair["rejected"][0]["content"]}}
               for pair in cued_pairs(40, 3)]
    path = tmp_path / "dpo_en_demo.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]
    assert main(["train", str(path), "--task", "preference", "--model", str(tiny_chat_model), "--out", str(tmp_path / "run"), *flags]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "preference" and 0 <= metrics["validation"]["reward_accuracy"] <= 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["layout"] == "sharegpt"
    assert "reward accuracy" in capsys.readouterr().out
