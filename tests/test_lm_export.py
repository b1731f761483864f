"""A chat run's model outside tunesmith, and as the start of another run: the adapter alone and a merged model
both load in plain transformers, give the adapter model's logits and write the same greedy text as `tunesmith
generate`; `--from RUN` starts from exactly the model the run made (its held-out loss is the new run's 'before')."""
from __future__ import annotations

import pytest
import torch

import tunesmith
from tunesmith.cli import main
from test_chat_task import OPTIONS, alpaca_file, tiny_chat_model  # noqa: F401  (fixtures)

PROMPTS = ["hi", "how are you", "bye now"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, alpaca_file, tiny_chat_model):  # noqa: F811
    out = tmp_path_factory.mktemp("runs") / "lora"
    return tunesmith.finetune(alpaca_file, out=str(out), model=str(tiny_chat_model), method="lora", lora_rank=4,
                              **dict(OPTIONS, epochs=3, lr=5e-2, answer_prompts=0))


def plain_greedy(folder, prompts: list[str]) -> list[str]:
    """What a user of plain transformers gets: the folder's tokenizer, its chat template, model.generate greedily."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    answers = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        out = model.generate(**ids, do_sample=False, max_new_tokens=8)
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    return answers


def logits_of(model, tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "how are you"}, {"role": "assistant", "content": "fine thanks"}],
                                        return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        return model(**ids).logits


def test_the_adapter_and_the_merged_model_load_in_plain_transformers_and_write_what_generate_writes(tmp_path, lora_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert main(["export", str(lora_run.path), "--out", str(tmp_path / "adapter")]) == 0
    assert main(["export", str(lora_run.path), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file() and not (tmp_path / "merged" / "adapter_config.json").exists()
    ours = lora_run.generate(PROMPTS, temperature=0, max_new_tokens=8)
    assert plain_greedy(tmp_path / "merged", PROMPTS) == ours
    assert plain_greedy(tmp_path / "adapter", PROMPTS) == ours  # transformers loads a PEFT folder through peft
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    model, _ = lora_run._load()
    adapter_logits = logits_of(model, tokenizer)
    merged_logits = logits_of(AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval(), tokenizer)
    base_logits = logits_of(AutoModelForCausalLM.from_pretrained(lora_run.record["base_model"]).eval(), tokenizer)
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    assert (adapter_logits - base_logits).abs().max() > 1e-2  # the adapter changed the model: the comparison means something


def test_from_run_starts_where_the_run_ended(tmp_path, lora_run, alpaca_file, monkeypatch):  # noqa: F811
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    second = tunesmith.finetune(alpaca_file, out=str(tmp_path / "second"), model=str(lora_run.path), method="lora", lora_rank=4,
                                **dict(OPTIONS, epochs=1, lr=5e-2, answer_prompts=0))
    # the same data and seed give the same validation split: the merged start scores what the first run scored
    assert second.metrics["before"]["validation"]["loss"] == pytest.approx(lora_run.metrics["validation"]["loss"], abs=1e-4)
    merged = list((tmp_path / "cache" / "merged-runs").iterdir())
    assert len(merged) == 1 and (merged[0] / "config.json").is_file()
    assert second.generate(["hi"], temperature=0, max_new_tokens=4)  # the second run reloads through the cached merge


def test_from_a_run_that_is_not_finished_or_not_mergeable_is_one_sentence(tmp_path, alpaca_file, capsys):  # noqa: F811
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text('{"status": "running", "task": "chat"}')
    assert main(["train", str(alpaca_file), "--from", str(tmp_path / "half"), "--out", str(tmp_path / "out")]) == 2
    assert "did not finish" in capsys.readouterr().err


@pytest.mark.parametrize("argv, cuda, message", [
    (["--quantize", "4bit", "--method", "full"], True, "only an adapter can train"),
    (["--quantize", "4bit"], False, "needs a CUDA GPU"),
    (["--quantize", "8bit"], True, "needs the bitsandbytes package"),
])
def test_quantize_where_it_cannot_work_is_one_sentence(tmp_path, alpaca_file, tiny_chat_model, capsys, monkeypatch,  # noqa: F811
                                                       argv, cuda, message):
    import builtins
    real_import = builtins.__import__

    def no_bitsandbytes(name, *args, **kwargs):
        if name == "bitsandbytes":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(builtins, "__import__", no_bitsandbytes)
    assert main(["train", str(alpaca_file), "--model", str(tiny_chat_model), "--out", str(tmp_path / "q"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "q").exists()  # refused before the run folder was made


def test_quantize_is_refused_for_a_classifier(tmp_path, capsys):
    path = tmp_path / "reviews.csv"
    path.write_text("text,label\n" + "".join(f"good {i},pos\nbad {i},neg\n" for i in range(20)))
    assert main(["train", str(path), "--quantize", "4bit", "--out", str(tmp_path / "c")]) == 2
    assert "--quantize is for language models" in capsys.readouterr().err
