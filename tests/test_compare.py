"""`tunesmith compare`: each method in its own process on the same split and seed; table, CSV,
Markdown and plot; finished runs reused, unfinished ones resumed, failures reported, not fatal."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from tunesmith.cli import main
from tunesmith.compare import parse_method_list, parse_method_options
from tunesmith.errors import TunesmithError


def compare_args(data, model, out, methods: str, *extra) -> list[str]:
    return ["compare", str(data), "--methods", methods, "--model", str(model), "--epochs", "2", "--batch-size", "16",
            "--lr", "3e-3", "--early-stopping", "0", "--checkpoint-every", "0", "--refit", "off", "--out", str(out), *extra]


def read_run(run_dir) -> tuple[dict, dict]:
    return json.loads((run_dir / "run.json").read_text()), json.loads((run_dir / "metrics.json").read_text())


def test_compare_writes_the_table_and_plot_then_reuses_resumes_and_reports_failures(tmp_path, reviews_csv, tiny_model, capsys):
    from conftest import toy_reviews

    test_csv = tmp_path / "test.csv"
    toy_reviews(40, seed=3).to_csv(test_csv, index=False)
    out = tmp_path / "cmp"
    assert main(compare_args(reviews_csv, tiny_model, out, "full,freeze", "--test", str(test_csv))) == 0
    printed = capsys.readouterr().out

    table = pd.read_csv(out / "comparison.csv")
    assert list(table["method"]) == ["full", "freeze"] and list(table["status"]) == ["trained", "trained"]
    for row in table.itertuples():
        record, metrics = read_run(out / row.method)
        assert record["status"] == "done" and record["method"] == row.method
        assert row.trainable_params == metrics["parameters"]["trainable"] and row.total_params == metrics["parameters"]["total"]
        assert row.train_seconds == pytest.approx(metrics["train"]["seconds"] + metrics["train"]["frozen_cache_seconds"], abs=0.01)
        assert row.peak_memory_mb == metrics["peak_memory_mb"]
        assert row.val_accuracy == pytest.approx(metrics["validation"]["accuracy"])
        assert row.test_accuracy == pytest.approx(metrics["test"]["accuracy"])
        assert metrics["test"]["examples"] == 40 and metrics["validation"]["examples"] == 32  # the same split for every method
    full, freeze = table.iloc[0], table.iloc[1]
    assert full.trainable_params == full.total_params and freeze.trainable_params < freeze.total_params
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "comparison.md").read_text()
    assert "| method | status | lr | trainable |" in markdown and "| freeze | trained |" in markdown
    assert "Comparison on" in printed and "freeze" in printed

    # freeze was interrupted (its run.json says so), head fails in its own process: the others go on
    full_weights = out / "full" / "model.safetensors"
    full_mtime = full_weights.stat().st_mtime_ns
    record = json.loads((out / "freeze" / "run.json").read_text())
    (out / "freeze" / "run.json").write_text(json.dumps(dict(record, status="running")))
    code = main(compare_args(reviews_csv, tiny_model, out, "full,freeze,head", "--test", str(test_csv),
                             "--method-options", "head:text_column=no_such_column"))
    printed = capsys.readouterr().out
    assert code == 1
    table = pd.read_csv(out / "comparison.csv").set_index("method")
    assert list(table["status"]) == ["reused", "resumed", "failed"]
    assert full_weights.stat().st_mtime_ns == full_mtime  # not retrained
    assert "finished run reused" in printed and "resuming" in printed
    assert read_run(out / "freeze")[0]["status"] == "done"
    assert table.loc["freeze", "test_accuracy"] == pytest.approx(freeze.test_accuracy)
    assert "no_such_column" in table.loc["head", "message"] and "head failed" in printed
    assert "head failed" in (out / "comparison.md").read_text()
    assert (out / "logs" / "head.log").is_file()

    # a finished run made with other options is not passed off as this comparison's
    assert main(compare_args(reviews_csv, tiny_model, out, "full", "--test", str(test_csv), "--epochs", "3")) == 1
    table = pd.read_csv(out / "comparison.csv")
    assert list(table["status"]) == ["failed"] and "epochs" in table["message"][0] and "--overwrite" in table["message"][0]
    assert full_weights.stat().st_mtime_ns == full_mtime


def test_method_options_are_parsed_and_checked():
    methods = ["full", "lora", "head"]
    assert parse_method_options("lora:lr=5e-4, head:lr=1e-3,lora:lora-rank=16", methods) == {
        "lora": {"lr": "5e-4", "lora_rank": "16"}, "head": {"lr": "1e-3"}}
    assert parse_method_options(None, methods) == {}
    with pytest.raises(TunesmithError, match="method:option=value"):
        parse_method_options("lora=5e-4", methods)
    with pytest.raises(TunesmithError, match="not in --methods"):
        parse_method_options("bitfit:lr=1e-3", methods)
    assert parse_method_list("full, head,full") == ["full", "head"]
    with pytest.raises(TunesmithError, match="Unknown method 'lroa'"):
        parse_method_list("full,lroa")


def test_bad_options_stop_before_anything_trains(tmp_path, reviews_csv, tiny_model, capsys):
    out = tmp_path / "cmp"
    assert main(compare_args(reviews_csv, tiny_model, out, "full,head", "--method-options", "head:lr=abc")) == 2
    assert "--lr must be float" in capsys.readouterr().err and not out.exists()
    assert main(compare_args(reviews_csv, tiny_model, out, "full", "--method", "lora")) == 2
    assert "drop --method" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_freeze_and_head_on_minilm_rotten_tomatoes(tmp_path, capsys):
    """The real model: both methods train from cached frozen layers; freeze beats the linear probe."""
    out = tmp_path / "cmp"
    assert main(["compare", "rotten-tomatoes", "--methods", "freeze,head", "--max-train-examples", "3000", "--epochs", "1.5",
                 "--lr", "1e-4", "--method-options", "head:lr=3e-3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("computed once") == 2  # both runs trained from cached frozen-layer outputs
    table = pd.read_csv(out / "comparison.csv").set_index("method")
    freeze, head = table.loc["freeze"], table.loc["head"]
    assert freeze.test_accuracy >= 0.74, freeze.to_dict()
    assert 0.58 <= head.test_accuracy < freeze.test_accuracy, head.to_dict()
    assert head.trainable_params < freeze.trainable_params < freeze.total_params
    assert (freeze.lr, head.lr) == (1e-4, 3e-3)
