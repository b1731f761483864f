"""The chat task end to end on a tiny random Llama with a ChatML word tokenizer: task inferred from an Alpaca
file, LoRA by default with the pretrained output layer left alone, packed training, held-out loss and
perplexity, an adapter run folder that plain transformers + peft load to the same logits, and the same
update from packed and padded batches."""
from __future__ import annotations

import json
import math
import random

import pytest
import torch

import tunesmith
from test_chat_data import WORDS, word_tokenizer

ANSWERS = {"hi": "hello you", "how are you": "fine thanks", "bye now": "see you soon"}
OPTIONS = {"epochs": 12, "batch_size": 8, "lr": 2e-2, "early_stopping": 0, "checkpoint_every": 0, "threads": 1, "refit": "off",
           "precision": "fp32", "max_length": 64, "forgetting_text": "off"}


def build_tiny_chat_model(folder):
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = word_tokenizer()
    tokenizer.pad_token = "<unk>"
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=128, tie_word_embeddings=True,
                         bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def alpaca_file(tmp_path_factory):
    rng = random.Random(0)
    rows = [{"instruction": q, "input": "", "output": a} for q, a in ANSWERS.items() for _ in range(16)]
    rng.shuffle(rows)
    path = tmp_path_factory.mktemp("data") / "instructions.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


def test_an_alpaca_file_is_chat_data_and_full_fine_tuning_learns_its_answers(tmp_path, alpaca_file, tiny_chat_model):
    run = tunesmith.finetune(alpaca_file, out=str(tmp_path / "run"), model=str(tiny_chat_model), method="full", **dict(OPTIONS, lr=1e-2))
    assert run.record["task"] == "chat" and run.record["layout"] == "alpaca"
    validation = run.metrics["validation"]
    assert validation["perplexity"] == pytest.approx(math.exp(validation["loss"]))
    assert validation["target_tokens"] == 34  # "hello you", "fine thanks", "see you soon" and an end-of-turn token each
    assert validation["loss"] < 0.5 * math.log(len(WORDS))  # a random model sits near log(vocab) = 3.2; measured 0.40


def test_held_out_loss_before_training_and_forgetting_on_a_general_text_are_reported(tmp_path, alpaca_file, tiny_chat_model, capsys):
    general = tmp_path / "general.txt"
    general.write_text(" ".join(random.Random(1).choice(WORDS[4:]) for _ in range(300)), encoding="utf-8")
    run = tunesmith.finetune(alpaca_file, out=str(tmp_path / "run"), model=str(tiny_chat_model), method="full",
                             **dict(OPTIONS, lr=1e-2, forgetting_text=str(general)))
    before, metrics = run.metrics["before"], run.metrics
    assert before["validation"]["loss"] > 2.5 > 1.0 > metrics["validation"]["loss"]  # the random base model, then the trained one
    assert before["validation"]["target_tokens"] == metrics["validation"]["target_tokens"]
    forgot = metrics["forgetting"]
    assert forgot["text"] == str(general) and forgot["tokens"] == 300 - 300 // 64 - 1  # 5 windows of 64 words, each predicts all but its first
    assert forgot["perplexity_before"] == pytest.approx(math.exp(before["reference"]["loss"]))
    assert forgot["change_percent"] == pytest.approx(100 * (forgot["perplexity_after"] / forgot["perplexity_before"] - 1), abs=0.01)
    assert run.record["before"] == before  # a resumed run keeps its base model's scores


def test_lora_is_the_default_and_its_run_folder_holds_the_adapter_alone(tmp_path, alpaca_file, tiny_chat_model):
    """(LoRA on a tiny random base learns these answers slowly, in PEFT alone too: the real model's slow test shows it learning.)"""
    from safetensors.torch import load_file

    run = tunesmith.finetune(alpaca_file, out=str(tmp_path / "run"), model=str(tiny_chat_model), **dict(OPTIONS, epochs=1))
    assert run.record["method"] == "lora" and run.metrics["validation"]["loss"] > 0
    adapter = load_file(str(tmp_path / "run" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in name for name in adapter)  # the adapter alone: no lm_head, no embeddings
    assert (tmp_path / "run" / "chat_template.jinja").is_file() or "chat_template" in json.loads(
        (tmp_path / "run" / "tokenizer_config.json").read_text())


def test_the_adapter_folder_loads_in_plain_peft_with_the_same_logits(tmp_path, alpaca_file, tiny_chat_model):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    run = tunesmith.finetune(alpaca_file, out=str(tmp_path / "run"), model=str(tiny_chat_model), **dict(OPTIONS, epochs=1))
    tokenizer = AutoTokenizer.from_pretrained(run.path)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    theirs = AutoPeftModelForCausalLM.from_pretrained(str(run.path)).eval()
    ours = tunesmith.load(run.path, precision="fp32")._load()[0]
    with torch.no_grad():
        assert torch.allclose(theirs(**ids).logits, ours(**ids).logits, atol=1e-5)


def test_packed_and_padded_training_give_the_same_weights(tmp_path, alpaca_file, tiny_chat_model):
    """Packing changes only the layout of a step: the same conversations, the same targets, the same update."""
    from safetensors.torch import load_file

    runs = {packing: tunesmith.finetune(alpaca_file, out=str(tmp_path / packing), model=str(tiny_chat_model), method="full", packing=packing,
                                        **dict(OPTIONS, epochs=1, lr=1e-3)) for packing in ("on", "off")}
    on, off = (load_file(str(tmp_path / p / "model.safetensors")) for p in ("on", "off"))
    assert on.keys() == off.keys() and all(torch.allclose(on[k], off[k], atol=2e-5) for k in on)
    assert runs["on"].metrics["validation"]["loss"] == pytest.approx(runs["off"].metrics["validation"]["loss"], abs=1e-4)


def test_a_file_without_conversations_for_task_chat_is_one_sentence(tmp_path, tiny_chat_model):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\nnice,pos\nbad,neg\n", encoding="utf-8")
    with pytest.raises(tunesmith.errors.TunesmithError, match="holds no conversations the chat task reads"):
        tunesmith.finetune(path, task="chat", out=str(tmp_path / "run"), model=str(tiny_chat_model), **OPTIONS)


def test_training_micro_batches_are_bounded_by_tokens():
    from tunesmith.train.fit import within_tokens

    lengths = [700, 900, 500, 2600, 100, 100]
    assert within_tokens([0, 1, 2, 3, 4, 5], lengths, 2048) == [[0, 1], [2], [3], [4, 5]]  # 2,600 alone: one example at least
    assert within_tokens([0, 1, 2], lengths, None) == [[0, 1, 2]]
    assert sorted(i for part in within_tokens(list(range(6)), lengths, 1000) for i in part) == list(range(6))


def test_a_step_cut_by_the_token_budget_gives_the_same_weights(tmp_path, alpaca_file, tiny_chat_model, monkeypatch):
    """The loop divides by the whole step's target tokens, so cutting a step into micro-batches changes nothing."""
    from safetensors.torch import load_file

    from tunesmith.tasks.chat import Chat

    options = dict(OPTIONS, epochs=1, lr=1e-3, method="full")
    tunesmith.finetune(alpaca_file, out=str(tmp_path / "whole"), model=str(tiny_chat_model), **options)
    monkeypatch.setattr(Chat, "micro_batch_tokens", 40)  # a few conversations a micro-batch
    tunesmith.finetune(alpaca_file, out=str(tmp_path / "cut"), model=str(tiny_chat_model), **options)
    whole, cut = (load_file(str(tmp_path / p / "model.safetensors")) for p in ("whole", "cut"))
    assert all(torch.allclose(whole[k], cut[k], atol=2e-5) for k in whole)


def test_predict_scores_whole_conversations_and_refuses_a_bare_prompt(tmp_path, alpaca_file, tiny_chat_model):
    run = tunesmith.finetune(alpaca_file, out=str(tmp_path / "run"), model=str(tiny_chat_model), **dict(OPTIONS, epochs=1))
    scored = run.predict([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello you"}]])
    assert scored[0]["target_tokens"] == 3 and scored[0]["loss"] > 0
    with pytest.raises(tunesmith.errors.TunesmithError, match="answering a prompt is the generate and chat commands' job"):
        run.predict(["hi"])


def test_a_killed_chat_run_resumes_to_the_same_weights_and_keeps_its_before_scores(tmp_path, alpaca_file, tiny_chat_model):
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    def train(out, *extra, fault=None):
        env = {k: v for k, v in os.environ.items() if k != "TUNESMITH_FAULT"}
        env.update({"HF_HUB_OFFLINE": "1", **({"TUNESMITH_FAULT": fault} if fault else {})})
        command = [sys.executable, "-m", "tunesmith.cli", "train", str(alpaca_file), "--model", str(tiny_chat_model), "--out", str(out),
                   "--method", "full", "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--refit", "off", "--early-stopping", "0",
                   "--checkpoint-every", "3", "--threads", "1", "--precision", "fp32", "--max-length", "64", "--forgetting-text", "off", *extra]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)

    assert train(tmp_path / "reference").returncode == 0
    assert train(tmp_path / "killed", fault="kill-at=step:5").returncode != 0
    resumed = train(tmp_path / "killed", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Before fine-tuning" not in resumed.stdout  # measured once, when the run started
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("reference", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    records = [json.loads((tmp_path / name / "run.json").read_text()) for name in ("reference", "killed")]
    assert records[0]["before"] == records[1]["before"] and "validation" in records[1]["before"]


def test_the_cli_summary_of_a_chat_run_suggests_no_predict_on_a_bare_prompt(tmp_path, alpaca_file, tiny_chat_model, capsys):
    from tunesmith.cli import main

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in dict(OPTIONS, epochs=1).items()]
    assert main(["train", str(alpaca_file), "--model", str(tiny_chat_model), "--out", str(tmp_path / "run"), *flags]) == 0
    printed = capsys.readouterr().out
    assert "Held-out validation loss" in printed and "Try: tunesmith predict" not in printed


def test_conversations_cut_to_max_length_are_counted_in_a_note(tmp_path, alpaca_file, tiny_chat_model, capsys):
    tunesmith.finetune(alpaca_file, out=str(tmp_path / "run"), model=str(tiny_chat_model), method="full",
                       **dict(OPTIONS, epochs=1, max_length=12, answer_prompts=0))
    out = " ".join(capsys.readouterr().out.split())
    assert "Note (training): Cut 38 of 38 conversations to --max-length 12" in out
    assert "Note (validation): Cut 10 of 10 conversations" in out
