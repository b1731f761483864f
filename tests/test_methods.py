"""Every registered method crossed with the toy models, as PEFT tests its tuners: which weights train
(and how many), frozen ones bitwise unchanged after real optimizer steps, save/load round trips,
merge equals unmerged, gradual unfreezing on schedule and across a resume, layer-wise learning rates.

Adding a method is one new file plus one line in TRAINABLE_RULES.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import tunesmith
from tunesmith.cli import main
from tunesmith.config import RunConfig
from tunesmith.errors import TunesmithError
from tunesmith.methods import METHODS, adapt_model, get_method
from tunesmith.methods.gradual import GradualUnfreezing
from tunesmith.architectures import count_parameters, parameter_groups
from tunesmith.methods.loading import load_run_model, save_run_model
from tunesmith.tasks import get_task
from tunesmith.tasks.text_classification import Features
from tunesmith.train.events import LoopContext, TrainState
from tunesmith.train.fit import fit
from tunesmith.train.infer import predict_outputs
from tunesmith.train.optim import build_optimizer, build_scheduler

LABELS = ["neg", "pos"]
MERGEABLE = {"lora", "dora", "ia3"}
ADAPTERS = {"lora", "dora", "ia3", "adapter"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Toy models gain nothing from threads, and on a busy machine threads waiting for a core cost seconds a step."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- toy models --------------------------------------------------------------------------------
def build_tiny_llama(folder: Path) -> Path:
    """A 2-layer Llama (hidden 32, grouped-query attention) saved as an HF folder."""
    from transformers import LlamaConfig, LlamaModel

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def toy_models(tiny_model, tmp_path_factory) -> dict[str, Path]:
    return {"bert": tiny_model, "llama": build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))}


def dims(model) -> dict:
    c = model.config
    kv = c.hidden_size // c.num_attention_heads * getattr(c, "num_key_value_heads", c.num_attention_heads)
    return {"H": c.hidden_size, "I": c.intermediate_size, "L": c.num_hidden_layers, "kv": kv, "arch": c.model_type}


def numel(params) -> int:
    return sum(p.numel() for _, p in params)


# -- each method's rule for how many weights train, computed from the unadapted model ----------
def lora_per_layer(d, r):
    H, I, kv = d["H"], d["I"], d["kv"]
    if d["arch"] == "bert":  # query, key, value, attention output (H->H); intermediate H->I; output I->H
        return r * (4 * 2 * H + (H + I) + (I + H))
    return r * (2 * H + 2 * (H + kv) + 2 * H + 2 * (H + I) + (I + H))  # q, k, v, o, gate, up, down


def dora_magnitudes_per_layer(d):
    H, I, kv = d["H"], d["I"], d["kv"]
    return 4 * H + I + H if d["arch"] == "bert" else H + 2 * kv + H + 2 * I + H


def ia3_per_layer(d):  # keys and values scaled on their outputs, the feed-forward output projection on its input
    return (2 * d["H"] if d["arch"] == "bert" else 2 * d["kv"]) + d["I"]


def adapter_per_layer(d, size, placement):
    one = 2 * d["H"] * size + size + d["H"]
    return one * (2 if placement == "houlsby" else 1)


def bias_count(base) -> int:
    head = {n for n, _ in parameter_groups(base).head}
    return sum(p.numel() for n, p in base.named_parameters() if n.endswith(".bias") and n not in head)


TRAINABLE_RULES = {
    "full": lambda base, g, d, o: numel(base.named_parameters()),
    "freeze": lambda base, g, d, o: numel(base.named_parameters()) - numel(g.embeddings)
    - sum(numel(layer) for layer in g.layers[:o.get("freeze_layers", d["L"] // 2)]),
    "head": lambda base, g, d, o: numel(g.head),
    "gradual": lambda base, g, d, o: numel(g.head),  # at the start; the schedule test covers the rest
    "bitfit": lambda base, g, d, o: bias_count(base) + numel(g.head),
    "lora": lambda base, g, d, o: d["L"] * lora_per_layer(d, 8) + numel(g.head),
    "dora": lambda base, g, d, o: d["L"] * (lora_per_layer(d, 8) + dora_magnitudes_per_layer(d)) + numel(g.head),
    "ia3": lambda base, g, d, o: d["L"] * ia3_per_layer(d) + numel(g.head),
    "adapter": lambda base, g, d, o: d["L"] * adapter_per_layer(d, o.get("adapter_size", 64), o.get("adapter_placement", "pfeiffer")) + numel(g.head),
}

CASES = [(m, arch, {}) for m in METHODS for arch in ("bert", "llama")] + [
    ("freeze", "bert", {"freeze_layers": 2}),
    ("adapter", "bert", {"adapter_placement": "houlsby", "adapter_size": 4}),
    ("adapter", "llama", {"adapter_placement": "houlsby", "adapter_size": 4}),
]


# -- helpers -----------------------------------------------------------------------------------
def toy_features(n: int = 24, vocab: int = 40, seed: int = 0) -> Features:
    """Random token sequences whose label is whether token 7 occurs: enough to move every weight."""
    rng = np.random.default_rng(seed)
    ids = [[2] + rng.integers(5, vocab, rng.integers(4, 12)).tolist() + [3] for _ in range(n)]
    labels = np.array([int(7 in x) for x in ids], dtype=np.int64)
    return Features(ids, np.array([len(x) for x in ids]), labels)


def make_config(source: Path, method: str, **options) -> RunConfig:
    train = {"epochs": 1, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0.0, "early_stopping": 0, "checkpoint_every": 0, "eval_batch_size": 64}
    return RunConfig.from_dict({"model": str(source), "method": method, **train, **options}).validate()


def adapted(source: Path, cfg: RunConfig):
    task = get_task("text-classification")(LABELS)
    torch.manual_seed(0)
    model, groups = adapt_model(task.build_model(str(source), cfg.model), cfg.method)
    return task, model, groups


def train_briefly(model, task, groups, cfg, run_dir, features, resume_from=None):
    method = get_method(cfg.method.method)
    callbacks = method.callbacks(model, cfg.method, groups, cfg.train) if method.callbacks else []
    return fit(model, task, features, None, cfg, run_dir, groups, callbacks, resume_from, pad_id=0).model


def logits(model, task, features) -> np.ndarray:
    return predict_outputs(model, task, features, 64, 0, torch.device("cpu"))[0]


# -- the table ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method, arch, options", CASES, ids=[f"{m}-{a}{'-' + '-'.join(map(str, o.values())) if o else ''}" for m, a, o in CASES])
def test_method_trains_exactly_its_weights_and_round_trips(method, arch, options, toy_models, tmp_path):
    source = toy_models[arch]
    cfg = make_config(source, method, **options)
    task, model, groups = adapted(source, cfg)
    base = task.build_model(str(source), cfg.model)
    base_groups = parameter_groups(base)

    # the trainable count follows the method's rule; the head always trains, PEFT's original copy of it never
    trainable, total = count_parameters(model)
    assert trainable == TRAINABLE_RULES[method](base, base_groups, dims(base), options)
    assert trainable < total or method == "full"
    assert all(p.requires_grad for n, p in groups.head if "original_module" not in n)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "original_module" in n)

    # after a few real optimizer steps frozen weights are bitwise unchanged and trainable ones all moved
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trains = {n for n, p in model.named_parameters() if p.requires_grad}
    model = train_briefly(model, task, groups, cfg, tmp_path / "run", toy_features())
    after = dict(model.named_parameters())
    unchanged = sorted(n for n in trains if torch.equal(before[n], after[n]))
    assert not unchanged, f"trainable weights that did not move: {unchanged[:3]}"
    moved = sorted(n for n in before if n not in trains and not torch.equal(before[n], after[n]))
    assert not moved, f"frozen weights that moved: {moved[:3]}"

    # save/load: adapter methods save only what trained; the loaded model predicts the same
    features = toy_features(16, seed=1)
    expected = logits(model, task, features)
    saved = tmp_path / "saved"
    save_run_model(model, None, saved)  # the toy models have no tokenizer
    if method in ADAPTERS:
        from safetensors.torch import load_file

        assert not (saved / "model.safetensors").exists()
        (weights,) = saved.glob("*.safetensors")
        assert sum(t.numel() for t in load_file(str(weights)).values()) == trainable
    record = {"base_model": str(source), "label_names": LABELS}
    loaded = load_run_model(saved, task, record, cfg).eval()
    np.testing.assert_allclose(logits(loaded, task, features), expected, atol=1e-5, rtol=0)

    # merge equals unmerged for the methods that are linear in the weights they adapt
    if method in MERGEABLE:
        from tunesmith.export import merge_adapter

        batch = task.collate(features, list(range(len(features))), 0)
        batch.pop("labels")
        merged = merge_adapter(loaded, batch)
        assert not any("lora_" in n or "ia3_" in n for n, _ in merged.named_parameters())
        np.testing.assert_allclose(logits(merged, task, features), expected, atol=1e-4, rtol=0)


def test_every_method_has_a_rule():
    assert set(TRAINABLE_RULES) == set(METHODS)


# -- layer-wise learning rates work with every method -------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
def test_layer_lr_decay_gives_each_group_its_rate(method, tiny_model):
    cfg = make_config(tiny_model, method, layer_lr_decay=0.5, lr=1e-3)
    _, model, groups = adapted(tiny_model, cfg)
    optimizer = build_optimizer(groups, cfg.train, cfg.method.layer_lr_decay)
    scheduler = build_scheduler(optimizer, 10, 0.2)
    for _ in range(3):  # the schedule scales every group alike, keeping the ratios
        optimizer.step()
        scheduler.step()
    factor = scheduler.get_last_lr()[0] / optimizer.param_groups[0]["initial_lr"]
    depth = {"head": 0, "layer.1": 1, "layer.0": 2, "embeddings": 3}
    lr_of = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            assert id(p) not in lr_of, "a parameter in two optimizer groups"
            lr_of[id(p)] = group["lr"]
    for name, p in model.named_parameters():  # each trainable weight, adapters included, by where it sits
        if p.requires_grad:
            layer = re.search(r"\.layer\.(\d+)\.", name)
            where = f"layer.{layer.group(1)}" if layer else "embeddings" if ".embeddings." in name else "head"
            assert lr_of[id(p)] == pytest.approx(1e-3 * factor * 0.5 ** depth[where]), name


# -- per-method rules and errors ----------------------------------------------------------------
def test_freeze_defaults_to_half_and_refuses_too_many_layers(tiny_model):
    _, model, groups = adapted(tiny_model, make_config(tiny_model, "freeze"))
    assert not any(p.requires_grad for _, p in groups.embeddings + groups.layers[0])
    assert all(p.requires_grad for _, p in groups.layers[1])
    with pytest.raises(TunesmithError, match="--freeze-layers 3 is more than the model's 2 transformer layers"):
        adapted(tiny_model, make_config(tiny_model, "freeze", freeze_layers=3))


def test_target_modules_override_and_bad_names(tiny_model):
    _, model, _ = adapted(tiny_model, make_config(tiny_model, "lora", target_modules="query,value"))
    adapted_names = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}
    assert adapted_names == {"query", "value"}
    with pytest.raises(TunesmithError, match="target modules 'q_proj'"):
        adapted(tiny_model, make_config(tiny_model, "lora", target_modules="q_proj"))


def test_gradual_unfreezes_one_group_from_the_top_every_k_steps(tiny_model):
    cfg = make_config(tiny_model, "gradual", unfreeze_every=2)
    _, model, groups = adapted(tiny_model, cfg)
    (callback,) = get_method("gradual").callbacks(model, cfg.method, groups, cfg.train)
    state = TrainState(steps_per_epoch=5)
    loop = LoopContext(model, None, state, cfg, groups)
    trains = lambda: [name for name, params in groups.ordered() if all(p.requires_grad for _, p in params)]  # noqa: E731
    schedule = {}
    for step in range(9):
        state.step = step
        callback.on_step_end(loop)
        schedule[step] = trains()
    assert schedule[0] == schedule[1] == ["head"]
    assert schedule[2] == schedule[3] == ["layer.1", "head"]
    assert schedule[4] == ["layer.0", "layer.1", "head"]
    assert schedule[6] == schedule[8] == ["embeddings", "layer.0", "layer.1", "head"]
    # a resumed run (train_start at step 3) sees the same set as the run that got there step by step
    state.step = 3
    _, fresh_model, fresh_groups = adapted(tiny_model, cfg)
    GradualUnfreezing(fresh_groups, 2).on_train_start(LoopContext(fresh_model, None, state, cfg, fresh_groups))
    assert [n for n, ps in fresh_groups.ordered() if all(p.requires_grad for _, p in ps)] == schedule[3]
    # without --unfreeze-every, one group per epoch
    by_epoch = GradualUnfreezing(groups, None)
    state.step = 9
    by_epoch.update(loop)
    assert trains() == ["layer.1", "head"]


def test_gradual_resumed_run_matches_the_uninterrupted_one(tiny_model, tmp_path):
    cfg = make_config(tiny_model, "gradual", epochs=3, unfreeze_every=2, checkpoint_every=2, keep_checkpoints=10)
    features = toy_features()
    task, model, groups = adapted(tiny_model, cfg)
    whole = train_briefly(model, task, groups, cfg, tmp_path / "whole", features)
    task, model, groups = adapted(tiny_model, cfg)
    resumed = train_briefly(model, task, groups, cfg, tmp_path / "resumed", features, resume_from=tmp_path / "whole" / "checkpoints" / "step-0000004")
    differ = {name: float((a - b).abs().max()) for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()) if not torch.equal(a, b)}
    assert not differ, f"{len(differ)} weights differ after the resume: {list(differ.items())[:4]}"
    assert all(p.requires_grad for p in whole.parameters())  # 9 steps: every group unfrozen by step 6


# -- run folders, predict, export ---------------------------------------------------------------
@pytest.fixture(scope="module")
def adapter_runs(tiny_model, tmp_path_factory) -> dict[str, Path]:
    """Short real runs (finetune) of each adapter method on the toy reviews."""
    from conftest import toy_reviews

    folder = tmp_path_factory.mktemp("adapter-runs")
    data = folder / "reviews.csv"
    toy_reviews(96).to_csv(data, index=False)
    options = {"model": str(tiny_model), "epochs": 2, "batch_size": 16, "lr": 1e-2, "early_stopping": 0, "checkpoint_every": 0, "threads": 1}
    return {m: tunesmith.finetune(data, out=str(folder / m), method=m, **options).path for m in sorted(ADAPTERS)}


@pytest.mark.parametrize("method", sorted(MERGEABLE))
def test_export_merge_writes_a_plain_model_with_the_same_outputs(method, adapter_runs, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    run = tunesmith.load(adapter_runs[method])
    assert json.loads((run.path / "metrics.json").read_text())["parameters"]["trainable"] > 0
    assert main(["export", str(run.path), "--out", str(tmp_path / "merged"), "--merge"]) == 0
    merged = tmp_path / "merged"
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    plain = AutoModelForSequenceClassification.from_pretrained(merged).eval()
    assert plain.config.id2label == {0: "neg", 1: "pos"}
    texts = ["the film was great and moving", "a dull and tedious plot", "the actors"]
    task = get_task("text-classification")(LABELS)
    features = task.encode(AutoTokenizer.from_pretrained(merged), pd.DataFrame({"text": texts}), 64)
    adapter_model = load_run_model(run.path, run.task, run.record, run.config).eval()
    np.testing.assert_allclose(logits(plain, task, features), logits(adapter_model, task, features), atol=1e-4, rtol=0)
    answers = pipeline("text-classification", model=str(merged))(texts)
    assert [a["label"] for a in answers] == [p["label"] for p in run.predict(texts)]


def test_bottleneck_adapter_run_predicts_and_refuses_to_merge(adapter_runs, tmp_path, capsys):
    run_dir = adapter_runs["adapter"]
    assert (run_dir / "bottleneck_adapter.safetensors").is_file() and not (run_dir / "model.safetensors").exists()
    assert main(["predict", str(run_dir), "a great film"]) == 0
    assert main(["export", str(run_dir), "--out", str(tmp_path / "m"), "--merge"]) == 2
    assert "cannot be merged" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(tmp_path / "copy")]) == 0
    copy = tmp_path / "copy"
    assert (copy / "bottleneck_adapter.json").is_file() and (copy / "tokenizer.json").is_file()
    # the exported adapter loads on its own and predicts like the run
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    record = json.loads((run_dir / "run.json").read_text())
    task = get_task("text-classification")(record["label_names"])
    features = toy_features(8, seed=2)
    a = logits(load_run_model(copy, task, record, cfg), task, features)
    b = logits(load_run_model(run_dir, task, record, cfg), task, features)
    np.testing.assert_array_equal(a, b)


def test_export_refuses_a_non_empty_folder(adapter_runs, tmp_path, capsys):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x.txt").write_text("keep me")
    assert main(["export", str(adapter_runs["lora"]), "--out", str(tmp_path / "taken"), "--merge"]) == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "taken" / "x.txt").read_text() == "keep me"
