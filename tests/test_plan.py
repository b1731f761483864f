"""Choices made from the data: training length, refit, the selection metric, and precision."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

import tunesmith
from tunesmith.config import RunConfig
from tunesmith.diagnostics import prediction_warnings
from tunesmith.metrics import is_better
from tunesmith.train import plan, precision


@pytest.mark.parametrize("examples, batch, epochs", [
    (360, 32, 20.0),      # 12 steps an epoch: 25 would reach 300 steps, capped at 20
    (1_000, 32, 10.0),    # 32 steps an epoch -> ceil(300 / 32) = 10
    (3_000, 32, 4.0),     # 94 steps an epoch
    (9_808, 32, 3.0),     # rotten-tomatoes: the old default holds
    (100_000, 32, 3.0),
    (200, 8, 12.0),       # a smaller batch means more steps an epoch
])
def test_epochs_grow_on_small_data_and_stay_three_on_large(examples, batch, epochs):
    chosen, why = plan.choose_epochs(examples, batch)
    assert chosen == epochs
    assert f"{int(epochs)} epochs" in why
    assert chosen * plan.steps_per_epoch(examples, batch) >= min(plan.MIN_STEPS, plan.MAX_EPOCHS * plan.steps_per_epoch(examples, batch))


def test_refit_is_on_for_small_held_out_splits_only():
    assert plan.choose_refit("auto", 400, True)[0] is True
    assert plan.choose_refit("auto", plan.REFIT_MAX_EXAMPLES + 1, True)[0] is False
    assert plan.choose_refit("auto", 400, False)[0] is False   # a validation file stays separate
    assert plan.choose_refit("off", 400, True)[0] is False
    on, why = plan.choose_refit("on", 400, False)
    assert on is False and "nothing" in why
    assert plan.choose_refit("on", 50_000, True)[0] is True


def test_metric_is_macro_f1_on_imbalanced_labels():
    assert plan.choose_metric(1.2)[0] == "accuracy"
    metric, why = plan.choose_metric(19.0)
    assert metric == "macro_f1" and "19.0x" in why


def test_resolve_fills_only_what_was_left_automatic():
    cfg = RunConfig.from_dict({"data": "x.csv", "epochs": 2, "metric": "mcc"})
    refit, choices = plan.resolve_training_choices(cfg, 400, True, plan.choose_metric(10.0))
    assert (cfg.train.epochs, cfg.train.metric, cfg.train.refit, refit) == (2, "mcc", "on", True)
    assert len(choices.reasons) == 1 and choices.reasons[0].startswith("Refit")
    cfg = RunConfig.from_dict({"data": "x.csv"})
    refit, choices = plan.resolve_training_choices(cfg, 400, True, plan.choose_metric(10.0))
    assert cfg.train.epochs == 20 and cfg.train.metric == "macro_f1" and len(choices.reasons) == 3


def test_refit_epochs_are_those_of_the_best_pass():
    assert plan.refit_epochs(best_step=30, steps_done=50, per_epoch=10) == 3.0
    assert plan.refit_epochs(best_step=None, steps_done=50, per_epoch=10) == 5.0


def test_ties_of_the_metric_are_broken_by_validation_loss():
    assert is_better(0.9, 0.9, True, new_loss=0.2, best_loss=0.3)
    assert not is_better(0.9, 0.9, True, new_loss=0.4, best_loss=0.3)
    assert not is_better(0.89, 0.9, True, new_loss=0.1, best_loss=0.3)
    assert is_better(0.2, 0.3, higher_is_better=False)


@pytest.mark.parametrize("speedup, chosen", [(2.1, "bf16"), (1.1, "fp32"), (0.2, "fp32")])
def test_auto_precision_follows_the_measurement(monkeypatch, speedup, chosen):
    monkeypatch.setattr(precision, "bf16_speedup", lambda model: speedup)
    picked, why = precision.choose_precision("auto", torch.device("cpu"), torch.nn.Linear(4, 4))
    assert picked == chosen and f"{speedup:.1f}"[:3] in why
    assert precision.choose_precision("fp32", torch.device("cpu"), torch.nn.Linear(4, 4))[0] == "fp32"
    assert precision.choose_precision("bf16", torch.device("cpu"), torch.nn.Linear(4, 4))[0] == "bf16"


def test_the_measurement_is_cached_per_machine(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    calls = []
    monkeypatch.setattr(precision, "time_shapes", lambda shapes, dtype, repeats=5: calls.append(dtype) or (2.0 if dtype == torch.float32 else 1.0))
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 8))
    assert precision.bf16_speedup(model) == 2.0
    assert precision.bf16_speedup(model) == 2.0
    assert len(calls) == 2  # measured once (fp32 and bf16), then read from the cache
    cached = json.loads((tmp_path / "precision.json").read_text())
    assert any("(8, 16)" in key for key in cached)



def test_a_conv_net_is_timed_whole_at_its_input_size_and_left_untouched(monkeypatch, tmp_path):
    """A conv net's bf16 gain depends on its feature-map sizes: a training step of a copy is timed at config.image_size,
    cached per model and size, and the model itself (its weights, batch-norm statistics, mode, frozen weights) is left as it was."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path))
    torch.manual_seed(0)
    model = MobileNetV2ForImageClassification(MobileNetV2Config(image_size=32, depth_multiplier=0.35, num_labels=3)).eval().requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sides = []
    real = precision.time_images
    monkeypatch.setattr(precision, "time_images", lambda m, side, dtype, repeats=3: sides.append(side) or real(m, side, dtype, repeats=1))
    monkeypatch.setattr(precision, "time_shapes", lambda *a, **k: pytest.fail("a conv net is not timed by its matmul shapes"))
    picked, why = precision.choose_precision("auto", torch.device("cpu"), model)
    assert sides == [32, 32] and "a training step of this conv net ran" in why
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    model.config.image_size = 48  # --image-size: another measurement, cached apart
    precision.bf16_speedup(model)
    precision.bf16_speedup(model)
    assert sides == [32, 32, 48, 48]
    assert sorted(k.rsplit(" at ", 1)[1] for k in json.loads((tmp_path / "precision.json").read_text())) == ["32 px", "48 px"]

def test_a_bf16_run_trains_scores_and_reports_against_the_bf16_rate(tmp_path, reviews_csv, tiny_options):
    options = {k: v for k, v in tiny_options.items() if k != "precision"}
    run = tunesmith.finetune(reviews_csv, out=str(tmp_path / "bf16"), precision="bf16", **options)
    metrics = run.metrics
    assert metrics["train"]["precision"] == "bf16"
    assert json.loads((tmp_path / "bf16" / "run.json").read_text())["precision"] == "bf16"
    assert metrics["validation"]["accuracy"] >= 0.8
    assert metrics["train"]["matmul_gflops"] == pytest.approx(
        precision_rate_gflops(torch.bfloat16), rel=0.99)  # the same cached measurement


def precision_rate_gflops(dtype) -> float:
    from tunesmith.perf import measure_matmul_rate

    return measure_matmul_rate("cpu", dtype) / 1e9


def test_small_data_gets_refit_and_config_records_the_choices(tmp_path, reviews_csv, tiny_options):
    options = {k: v for k, v in tiny_options.items() if k not in ("epochs", "refit", "early_stopping")}
    out = tmp_path / "refit"
    run = tunesmith.finetune(reviews_csv, out=str(out), refit="auto", early_stopping=2, **options)
    metrics = run.metrics
    refit = metrics["refit"]
    assert refit is not None and refit["examples"] == 160 and refit["selection_examples"] < 160
    # the refit trains for the epochs of the best validation pass (at least one step)
    per_epoch = plan.steps_per_epoch(refit["examples"], options["batch_size"])
    best_epochs = refit["best_step"] / plan.steps_per_epoch(refit["selection_examples"], options["batch_size"])
    assert refit["steps"] == pytest.approx(best_epochs * per_epoch, abs=1)
    assert metrics["validation"]["accuracy"] >= 0.8 and metrics["train"]["examples"] == 160
    text = (out / "config.yaml").read_text()
    assert "# Chosen automatically" in text and "Training length" in text and "Refit" in text
    saved = yaml.safe_load(text)
    assert saved["train"]["epochs"] == plan.choose_epochs(refit["selection_examples"], options["batch_size"])[0]
    assert saved["train"]["refit"] == "on"
    assert saved["data"]["data"] == str(reviews_csv.resolve())
    assert not (out / "selection.json").exists() or json.loads((out / "selection.json").read_text())["best_step"] == refit["best_step"]
    assert run.predict(["a great and lovely film"])[0]["label"] == "pos"


def test_warnings_name_one_class_predictions_and_missed_labels():
    one_class = {"mcc": 0.0, "confusion_matrix": {"labels": ["a", "b"], "matrix": [[50, 0], [48, 2]]}}
    warnings = prediction_warnings(one_class, "test")
    assert len(warnings) == 1 and "'a' for 98%" in warnings[0]
    missed = {"mcc": 0.5, "confusion_matrix": {"labels": ["a", "b", "c"], "matrix": [[40, 2, 0], [3, 40, 0], [4, 1, 0]]}}
    warnings = prediction_warnings(missed, "validation")
    assert len(warnings) == 1 and "never finds 'c'" in warnings[0] and "--metric macro_f1" in warnings[0]
    near_zero = {"mcc": 0.03, "confusion_matrix": {"labels": ["a", "b"], "matrix": [[26, 24], [25, 25]]}}
    assert "MCC" in prediction_warnings(near_zero, "test")[0]
    good = {"mcc": 0.9, "confusion_matrix": {"labels": ["a", "b"], "matrix": [[48, 2], [3, 47]]}}
    assert prediction_warnings(good, "test") == []


def test_imbalanced_data_picks_by_macro_f1_shows_recall_and_warns(tmp_path, tiny_options):
    import io

    from rich.console import Console

    from conftest import toy_reviews

    rows = toy_reviews(200, seed=4)
    data = tmp_path / "skewed.csv"
    # 95/5: keep every 'neg' and one 'pos' in ten
    skewed = rows[(rows["sentiment"] == "neg") | (rows.index % 20 == 1)]
    skewed.to_csv(data, index=False)
    options = dict(tiny_options, metric="auto", lr=1e-7, epochs=1)  # barely trained: it predicts the majority label
    printed = io.StringIO()
    run = tunesmith.finetune(data, out=str(tmp_path / "skewed"), console=Console(file=printed, width=200), **options)
    text = printed.getvalue()
    assert run.config.train.metric == "macro_f1" and "picked by macro-F1" in text
    assert "Per-label recall (validation)" in text
    assert run.metrics["warnings"]  # one label for everything, MCC near 0, or a label never found
    assert "Warning:" in text
