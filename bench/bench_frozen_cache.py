"""Frozen-layer cache: the same method with and without it, whole job time and results side by side.

    python bench/bench_frozen_cache.py                       # freeze and head, minilm-l6, rotten-tomatoes
    python bench/bench_frozen_cache.py --train-examples 3000 --epochs 2 --methods freeze,head

Each run is its own `tunesmith train` process (as a user runs it), uncached then cached. On a
shared machine whose load drifts, whole-job times of separate runs can mislead, so the script also
times training steps of both paths in one process, alternating batch by batch (A/B interleaved):
that ratio is the robust one. The results must match: the same test predictions (up to float
rounding) and metrics within tolerance; the script exits non-zero when they do not.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from common import PYTHON, machine, median, print_table, run_job, save_result


def interleaved_step_times(method: str, args, batches: int) -> dict:
    """Median seconds per training step (forward, loss, backward) uncached vs cached, alternating."""
    import io

    from rich.console import Console
    from transformers import AutoTokenizer

    from tunesmith.assets.resolve import load_pretrained, resolve_model_source
    from tunesmith.config import RunConfig
    from tunesmith.data import load_labeled_data
    from tunesmith.data.batching import length_grouped_batches
    from tunesmith.methods import adapt_model
    from tunesmith.tasks import get_task
    from tunesmith.train.frozen_cache import prepare_fit_inputs

    cfg = RunConfig.from_dict({"data": args.data, "model": args.model, "method": method,
                               "max_train_examples": args.train_examples, "seed": args.seed})
    data = load_labeled_data(cfg.data, cfg.train.seed)
    source = resolve_model_source(cfg.model.model)
    task = get_task("text-classification")(data.label_names)
    tokenizer = load_pretrained(AutoTokenizer, source, cfg.model)
    train = task.encode(tokenizer, data.train, cfg.model.max_length)
    model, groups = adapt_model(task.build_model(source, cfg.model), cfg.method)
    model.train()  # as fit() trains: dropout on above the frozen layers
    quiet = Console(file=io.StringIO())
    started = time.perf_counter()
    cached = prepare_fit_inputs(model, task, train, None, groups, cfg, tokenizer.pad_token_id, quiet, "cpu")
    cache_seconds = time.perf_counter() - started
    cfg.train.cache_frozen = "off"
    plain = prepare_fit_inputs(model, task, train, None, groups, cfg, tokenizer.pad_token_id, quiet, "cpu")
    times = {"off": [], "auto": []}
    for k, indices in enumerate(length_grouped_batches(train.lengths, cfg.train.batch_size, cfg.train.seed, 0)[1:batches + 1]):
        for name in (("off", "auto") if k % 2 else ("auto", "off")):
            inputs = plain if name == "off" else cached
            begun = time.perf_counter()
            batch = inputs.task.collate(inputs.train, indices, tokenizer.pad_token_id)
            labels = batch.pop("labels")
            model.zero_grad(set_to_none=True)
            task.loss_sum(inputs.model(**batch).logits, labels).backward()
            times[name].append(time.perf_counter() - begun)
    off, auto = median(times["off"]), median(times["auto"])
    steps_per_epoch = -(-len(train) // cfg.train.batch_size)
    return {"method": method, "step_s_uncached": off, "step_s_cached": auto, "step_speedup": off / auto,
            "cache_build_s": cache_seconds, "epoch_s_saved": (off - auto) * steps_per_epoch}


def train(method: str, cache: str, args, out: Path) -> dict:
    command = [PYTHON, "-m", "tunesmith.cli", "train", args.data, "--model", args.model, "--method", method,
               "--cache-frozen", cache, "--max-train-examples", str(args.train_examples), "--epochs", str(args.epochs),
               "--early-stopping", "0", "--seed", str(args.seed), "--out", str(out), *args.extra]
    job = run_job(f"frozen-cache-{method}-{cache}", command)
    metrics = json.loads((out / "metrics.json").read_text())
    note = next((line for line in Path(job["log"]).read_text().splitlines() if "computed once" in line), "")
    return {"method": method, "cache": cache, "process_s": job["wall_s"], "job_s": metrics["job_seconds"],
            "train_s": metrics["train"]["seconds"], "cache_s": metrics["train"].get("frozen_cache_seconds", 0.0),
            "val_accuracy": metrics["validation"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
            "test_loss": metrics["test"]["loss"], "peak_rss_mb": job["peak_rss_mb"], "load_before": job["load_before"],
            "cache_note": note.strip(), "predictions": pd.read_csv(out / "test_predictions.csv")}


def compare_runs(plain: dict, cached: dict) -> dict:
    """How far the cached run's results are from the uncached run's."""
    a, b = plain.pop("predictions"), cached.pop("predictions")
    probs = [c for c in a if c.startswith("p(")]
    return {"predictions_agree": float((a["prediction"] == b["prediction"]).mean()),
            "max_probability_difference": float((a[probs] - b[probs]).abs().to_numpy().max()),
            "test_accuracy_difference": abs(plain["test_accuracy"] - cached["test_accuracy"]),
            "job_speedup": plain["job_s"] / cached["job_s"], "process_speedup": plain["process_s"] / cached["process_s"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="rotten-tomatoes")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--methods", default="freeze,head")
    parser.add_argument("--train-examples", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--step-batches", type=int, default=30, help="batches timed A/B interleaved per method (0 = skip)")
    parser.add_argument("--skip-jobs", action="store_true", help="only the interleaved step timing")
    parser.add_argument("extra", nargs="*", help="more `tunesmith train` flags, after --")
    args = parser.parse_args()

    about = machine()
    print(f"{about['cpu']}, {about['cores']} cores, {about['torch_threads']} threads; fp32 matmul {about['matmul_gflops']} GFLOP/s; "
          f"load average {about['load_average']}")
    steps, jobs, failures = [], [], []
    for method in args.methods.split(",") if args.step_batches else []:
        steps.append(interleaved_step_times(method, args, args.step_batches))
    if steps:
        print_table(steps, [("method", "method", ""), ("step_s_uncached", "step s, uncached", ".3f"), ("step_s_cached", "step s, cached", ".3f"),
                            ("step_speedup", "speed-up", ".2f"), ("cache_build_s", "cache built in s", ".1f"), ("epoch_s_saved", "s saved per epoch", ".1f")])
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as tmp:
        for method in [] if args.skip_jobs else args.methods.split(","):
            plain, cached = (train(method, cache, args, Path(tmp) / f"{method}-{cache}") for cache in ("off", "auto"))
            match = compare_runs(plain, cached)
            cached.update(match)
            jobs += [plain, cached]
            print(f"{method}: {cached['cache_note']}")
            if match["predictions_agree"] < 0.995 or match["test_accuracy_difference"] > 0.005 or match["max_probability_difference"] > 1e-2:
                failures.append(method)
    if jobs:
        print_table(jobs, [("method", "method", ""), ("cache", "cache", ""), ("process_s", "process s", ".1f"), ("job_s", "job s", ".1f"),
                           ("train_s", "train s", ".1f"), ("cache_s", "cache s", ".1f"), ("job_speedup", "job speed-up", ".2f"),
                           ("val_accuracy", "val acc", ".4f"), ("test_accuracy", "test acc", ".4f"), ("predictions_agree", "same predictions", ".2%"),
                           ("max_probability_difference", "max p diff", ".1e"), ("peak_rss_mb", "peak MB", ".0f"), ("load_before", "load", ".1f")])
    save_result("frozen_cache", {"machine": about, "settings": vars(args), "interleaved_steps": steps, "jobs": jobs})
    if failures:
        print(f"Results differ with and without the cache for: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
