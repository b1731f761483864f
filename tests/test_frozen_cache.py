"""Frozen bottom layers: eval mode on both paths, outputs computed once, and training from the cache
gives the same model as training through the frozen layers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tunesmith.config import RunConfig
from tunesmith.architectures import parameter_groups, set_trainable
from tunesmith.tasks.text_classification import Features, TextClassification
from tunesmith.train import frozen_cache
from tunesmith.architectures.bert import encoder_parts
from tunesmith.train.frozen_cache import (CachedFeaturesTask, FrozenPrefixInEvalMode, TopOfModel, cache_hidden_states,
                                          frozen_prefix_length, prepare_fit_inputs)

TASK = TextClassification(["neg", "pos"])


def tiny_classifier(kind: str, layers: int = 3):
    """A random 3-layer sequence classifier of the given family, with dropout, in eval mode."""
    import transformers as tf

    common = dict(vocab_size=60, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=48,
                  max_position_embeddings=64, num_labels=2, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    configs = {"bert": lambda: tf.BertConfig(**common), "roberta": lambda: tf.RobertaConfig(**common, pad_token_id=1),
               "electra": lambda: tf.ElectraConfig(**common, embedding_size=16),  # has embeddings_project
               "distilbert": lambda: tf.DistilBertConfig(vocab_size=60, dim=32, n_layers=layers, n_heads=2, hidden_dim=48,
                                                         max_position_embeddings=64, num_labels=2)}
    torch.manual_seed(0)
    return tf.AutoModelForSequenceClassification.from_config(configs[kind]()).eval()


def random_features(n: int = 23, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    ids = [[2] + rng.integers(5, 60, rng.integers(1, 20)).tolist() + [3] for _ in range(n)]
    return Features(ids, np.array([len(x) for x in ids]), rng.integers(0, 2, n))


def freeze_bottom(model, layers: int):
    groups = parameter_groups(model)
    model.requires_grad_(True)
    set_trainable(groups.embeddings, False)
    for layer in groups.layers[:layers]:
        set_trainable(layer, False)
    return groups


@pytest.mark.parametrize("kind", ["bert", "roberta", "electra"])
def test_top_of_model_on_cached_states_gives_the_real_models_logits(kind):
    model = tiny_classifier(kind)
    pad = model.config.pad_token_id or 0
    features = random_features()
    indices = list(range(0, len(features), 2))  # a batch with padding
    batch = {k: v for k, v in TASK.collate(features, indices, pad).items() if k != "labels"}
    with torch.no_grad():
        expected = model(**batch).logits
        for cached_layers in range(1, 4):  # 3 = every layer: only the first token is kept
            parts = encoder_parts(model)
            cache = cache_hidden_states(parts, TASK, features, cached_layers, batch_size=5, pad_id=pad, device="cpu")
            assert cache.per_token == (cached_layers < 3)
            top = TopOfModel(parts, parameter_groups(model), cached_layers)
            cached_batch = CachedFeaturesTask(TASK).collate(cache, indices, pad)
            assert torch.equal(cached_batch["attention_mask"], batch["attention_mask"])  # token counts as uncached
            logits = top(cached_batch["hidden_states"], cached_batch["attention_mask"]).logits
            torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # checkpoints name parameters as the real model does
    assert [n for n, _ in top.named_parameters()] == [n for n, _ in model.named_parameters()]


def test_a_large_cache_goes_to_an_unlinked_file_with_the_same_values(tmp_path):
    model = tiny_classifier("bert")
    features = random_features()
    parts = encoder_parts(model)
    in_memory = cache_hidden_states(parts, TASK, features, 2, 8, 0, "cpu")
    on_disk = cache_hidden_states(parts, TASK, features, 2, 8, 0, "cpu", disk_dir=tmp_path, memory_limit=0)
    assert isinstance(in_memory.states, torch.Tensor) and isinstance(on_disk.states, np.memmap)
    assert list(tmp_path.iterdir()) == []  # nothing left behind, even after a crash
    indices = [3, 0, 7, 11]
    a, b = in_memory.collate(indices), on_disk.collate(indices)
    assert set(a) == set(b) == {"hidden_states", "attention_mask", "labels"}
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_frozen_layers_run_in_eval_mode_and_follow_unfreezing():
    model = tiny_classifier("bert")
    groups = freeze_bottom(model, 1)
    assert frozen_prefix_length(groups) == 2  # embeddings + layer 0
    model.register_forward_pre_hook(FrozenPrefixInEvalMode(model, groups))
    batch = {k: v for k, v in TASK.collate(random_features(4), [0, 1, 2, 3], 0).items() if k != "labels"}
    layers = model.bert.encoder.layer
    model.train()
    model(**batch)
    assert not model.bert.embeddings.training and not model.bert.embeddings.dropout.training and not layers[0].training
    assert layers[1].training and layers[1].output.dropout.training and model.dropout.training
    set_trainable(groups.layers[0], True)  # gradual unfreezing thaws layer 0: the embeddings alone are no feature extractor
    model(**batch)
    assert model.bert.embeddings.training and layers[0].training
    model.eval()
    model(**batch)
    assert not any(m.training for m in model.modules())


def test_lora_style_frozen_embeddings_alone_keep_dropout():
    model = tiny_classifier("bert")
    groups = parameter_groups(model)
    set_trainable(groups.embeddings, False)
    assert frozen_prefix_length(groups) == 0


def fit_both_ways(model_dir, tmp_path, train_mode: bool, gradual_every: int | None = None):
    """Train with and without the cache straight through fit(), optionally in train mode (dropout on):
    freeze-1, or gradual unfreezing every `gradual_every` steps with the groups it never thaws cached."""
    import io

    from rich.console import Console
    from transformers import AutoTokenizer

    from conftest import toy_reviews
    from tunesmith.methods.gradual import GradualUnfreezing, groups_unfrozen
    from tunesmith.train.fit import fit

    class TrainMode:  # what a loop that calls model.train() would do
        def on_train_start(self, loop):
            loop.model.train(train_mode)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    table = toy_reviews(96).rename(columns={"review": "text"})
    table["label"] = (table.pop("sentiment") == "pos").astype("int64")
    train, validation = TASK.encode(tokenizer, table[:80], 64), TASK.encode(tokenizer, table[80:].reset_index(drop=True), 64)
    results = {}
    for mode in ("auto", "off"):
        cfg = RunConfig.from_dict({"model": str(model_dir), "epochs": 2, "batch_size": 16, "lr": 3e-3, "early_stopping": 0,
                                   "checkpoint_every": 0, "dropout": 0.2, "cache_frozen": mode, "data": "x"})
        torch.manual_seed(0)
        model = TASK.build_model(str(model_dir), cfg.model)
        groups = freeze_bottom(model, 1 if gradual_every is None else len(parameter_groups(model).layers))
        callbacks, frozen_throughout = [TrainMode()], None
        if gradual_every:  # 10 steps: the last one runs with groups_unfrozen(9) groups thawed
            callbacks.append(GradualUnfreezing(groups, gradual_every))
            frozen_throughout = len(groups.ordered()) - 1 - groups_unfrozen(9, gradual_every, len(groups.ordered()) - 1)
        inputs = prepare_fit_inputs(model, TASK, train, validation, groups, cfg, 0, Console(file=io.StringIO()), "cpu",
                                    frozen_throughout=frozen_throughout)
        assert inputs.cached == (mode == "auto")
        result = fit(inputs.model, inputs.task, inputs.train, inputs.validation, cfg, tmp_path / f"{mode}-{train_mode}", groups, callbacks)
        assert result.state.step == 10
        results[mode] = ({n: p.detach().clone() for n, p in model.named_parameters()}, result.state.losses)
    return results


def assert_same_fit(results) -> list[float]:
    (cached, cached_losses), (plain, plain_losses) = results["auto"], results["off"]
    assert [s for s, _ in cached_losses] == [s for s, _ in plain_losses]
    np.testing.assert_allclose([v for _, v in cached_losses], [v for _, v in plain_losses], atol=1e-4)
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-4, rtol=1e-4, msg=name)
    return [v for _, v in plain_losses]


def test_fit_from_the_cache_matches_fit_through_the_frozen_layers_with_dropout_on_or_off(tmp_path, tiny_model):
    losses = {train_mode: assert_same_fit(fit_both_ways(tiny_model, tmp_path, train_mode)) for train_mode in (False, True)}
    # dropout above the frozen layers really was on in train mode, on both paths alike
    assert not np.allclose(losses[True], losses[False], atol=1e-3)


def test_gradual_unfreezing_caches_the_groups_it_never_thaws(tmp_path):
    from conftest import build_tiny_model

    deep = build_tiny_model(tmp_path / "deep", layers=4)  # embeddings + 4 layers; 2 groups thaw in 10 steps
    assert_same_fit(fit_both_ways(deep, tmp_path, train_mode=True, gradual_every=4))


def assert_same_model(cached_dir, plain_dir, base_dir, method: str) -> None:
    """Cached and uncached runs saved the same weights; the frozen ones are exactly the base model's."""
    cached, plain = load_file(str(cached_dir / "model.safetensors")), load_file(str(plain_dir / "model.safetensors"))
    base = load_file(str(base_dir / "model.safetensors"))
    for name in plain:
        torch.testing.assert_close(cached[name], plain[name], atol=1e-4, rtol=1e-4, msg=name)
    frozen = [n for n in plain if n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) or (method == "head" and ".encoder." in n)]
    assert len(frozen) > 10
    for name in frozen:
        assert torch.equal(cached[name], base[name.removeprefix("bert.")]), name
    trained = "bert.pooler.dense.weight" if method == "head" else "bert.encoder.layer.1.output.dense.weight"
    assert not torch.equal(cached[trained], base[trained.removeprefix("bert.")])


def test_head_trains_the_same_from_the_cache(tmp_path, reviews_csv, tiny_options, tiny_model, capsys):
    options = dict(tiny_options, epochs=3, method="head")
    runs = {mode: tunesmith.finetune(reviews_csv, out=str(tmp_path / mode), cache_frozen=mode, **options) for mode in ("auto", "off")}
    assert capsys.readouterr().out.count("computed once") == 1  # only the cached run says so
    assert_same_model(tmp_path / "auto", tmp_path / "off", tiny_model, "head")
    a, b = runs["auto"].metrics["validation"], runs["off"].metrics["validation"]
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_freeze_trains_the_same_from_a_cache_computed_once_however_many_epochs(tmp_path, reviews_csv, tiny_options, tiny_model, monkeypatch):
    from transformers.models.bert.modeling_bert import BertEmbeddings

    counts = {"embeddings": 0, "cache": 0}
    embeddings_forward, cache = BertEmbeddings.forward, frozen_cache.cache_hidden_states

    def counted_embeddings(self, *args, **kwargs):
        counts["embeddings"] += 1
        return embeddings_forward(self, *args, **kwargs)

    def counted_cache(*args, **kwargs):
        counts["cache"] += 1
        return cache(*args, **kwargs)

    monkeypatch.setattr(BertEmbeddings, "forward", counted_embeddings)
    monkeypatch.setattr(frozen_cache, "cache_hidden_states", counted_cache)
    seen, metrics = {}, {}
    for mode, epochs in (("auto", 3), ("auto", 5), ("off", 3)):
        counts.update(embeddings=0, cache=0)
        options = dict(tiny_options, epochs=epochs, method="freeze", freeze_layers=1, cache_frozen=mode)
        metrics[mode, epochs] = tunesmith.finetune(reviews_csv, out=str(tmp_path / f"{mode}-{epochs}"), **options).metrics
        seen[mode, epochs] = dict(counts)
    assert seen["auto", 3]["cache"] == seen["auto", 5]["cache"] == 2  # training and validation examples, once each
    assert seen["auto", 3]["embeddings"] == seen["auto", 5]["embeddings"]  # the frozen layers never run in training
    assert seen["off", 3]["cache"] == 0 and seen["off", 3]["embeddings"] > seen["auto", 3]["embeddings"]
    assert_same_model(tmp_path / "auto-3", tmp_path / "off-3", tiny_model, "freeze")
    a, b = metrics["auto", 3]["validation"], metrics["off", 3]["validation"]
    assert a["accuracy"] == b["accuracy"] and a["loss"] == pytest.approx(b["loss"], abs=1e-4)


def test_unsupported_architectures_and_off_train_uncached(capsys):
    from rich.console import Console

    console = Console(force_terminal=False, width=200)
    cfg = RunConfig.from_dict({"data": "x"})
    features = random_features(6)
    model = tiny_classifier("distilbert")
    groups = freeze_bottom(model, 1)
    inputs = prepare_fit_inputs(model, TASK, features, None, groups, cfg, 0, console, "cpu")
    assert inputs.model is model and inputs.train is features and not inputs.cached
    assert "not cached for DistilBertForSequenceClassification" in capsys.readouterr().out
    model = tiny_classifier("bert")
    groups = freeze_bottom(model, 1)
    inputs = prepare_fit_inputs(model, TASK, features, None, groups, RunConfig.from_dict({"cache_frozen": "off"}), 0, console, "cpu")
    assert inputs.model is model and not inputs.cached and capsys.readouterr().out == ""
    full = tiny_classifier("bert")  # nothing frozen: nothing to cache, nothing to say
    inputs = prepare_fit_inputs(full, TASK, features, None, parameter_groups(full), cfg, 0, console, "cpu")
    assert inputs.model is full and capsys.readouterr().out == ""


# -- conv nets and audio encoders: the same cache, rows per position or frame ------------------------------------
class InputFeatures:
    """Fixed-size model inputs (pixel values, log-mel frames), a cost of 1 each, as image and audio tasks have."""

    def __init__(self, key: str, inputs: torch.Tensor, labels: np.ndarray):
        self.key, self.inputs, self.labels = key, inputs, labels
        self.lengths = np.ones(len(inputs), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.inputs)


class InputTask:
    def collate(self, features, indices, pad_id):
        return {features.key: features.inputs[indices], "labels": torch.as_tensor(features.labels[indices])}


def tiny_vision_or_audio(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    if kind == "mobilenet_v2":
        model = tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=3))
        return model.eval(), InputFeatures("pixel_values", torch.randn(9, 3, 32, 32), np.arange(9) % 3)
    if kind == "efficientnet_lite":
        from tunesmith.assets.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification

        model = EfficientNetLiteForImageClassification(EfficientNetLiteConfig(num_labels=3))
        return model.eval(), InputFeatures("pixel_values", torch.randn(9, 3, 32, 32), np.arange(9) % 3)
    config = tf.WhisperConfig(d_model=16, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                              encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=10, vocab_size=64,
                              pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, num_labels=3)
    return tf.WhisperForAudioClassification(config).eval(), InputFeatures("input_features", torch.randn(9, 8, 20), np.arange(9) % 3)


@pytest.mark.parametrize("kind", ["mobilenet_v2", "efficientnet_lite", "whisper"])
def test_top_of_a_conv_net_or_audio_encoder_on_cached_states_gives_the_real_logits(kind):
    from tunesmith.architectures import frozen_split

    model, features = tiny_vision_or_audio(kind)
    task, indices = InputTask(), [4, 0, 7]
    split = frozen_split(model)
    with torch.no_grad():
        expected = model(**{k: v for k, v in task.collate(features, indices, 0).items() if k != "labels"}).logits
        for cached_layers in (1, split.num_layers - 1, split.num_layers):
            cache = cache_hidden_states(split, task, features, cached_layers, batch_size=4, pad_id=0, device="cpu")
            assert not cache.per_token and len(set(np.diff(cache.offsets))) == 1  # the same rows for every example
            top = TopOfModel(split, parameter_groups(model), cached_layers)
            batch = CachedFeaturesTask(task).collate(cache, indices, 0)
            torch.testing.assert_close(top(batch["hidden_states"]).logits, expected, atol=1e-5, rtol=1e-5)
    # every block cached: the pooled vector the classifier reads (MobileNetV2); a row per encoder position (Whisper)
    assert cache.offsets[1] == (10 if kind == "whisper" else 1)
    assert [n for n, _ in top.named_parameters()] == [n for n, _ in model.named_parameters()]


@pytest.mark.parametrize("method,kept", [("lora", True), ("head", True), ("full", False)])
def test_frozen_batchnorm_layers_keep_their_running_statistics(method, kept):
    """An adapter does not save BatchNorm statistics, so BatchNorm layers with frozen weights must not update
    them in training (the reloaded run would see others); layers that train update them as usual."""
    import transformers as tf

    from tunesmith.config import MethodConfig
    from tunesmith.methods import adapt_model

    torch.manual_seed(0)
    config = tf.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=3, tf_padding=False)
    model, groups = adapt_model(tf.MobileNetV2ForImageClassification(config), MethodConfig(method=method))
    before = {n: b.clone() for n, b in model.named_buffers() if n.endswith("running_mean")}
    model.register_forward_pre_hook(FrozenPrefixInEvalMode(model, groups))
    model.train()
    model(pixel_values=torch.randn(4, 3, 32, 32) * 3 + 1)
    after = dict(model.named_buffers())
    unchanged = [torch.equal(before[n], after[n]) for n in before]
    assert len(unchanged) > 30 and all(unchanged) == kept and (kept or not any(unchanged))
