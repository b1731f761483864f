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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - started) / 1e9


def interleaved_step_times(method: str, args, batches: int) -> dict:
    """Median seconds per training step (forward, loss, backward) uncached vs cached, alternating."""
    import io
    import statistics

    import torch
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
    off, auto = statistics.median(times["off"]), statistics.median(times["auto"])
    steps_per_epoch = -(-len(train) // cfg.train.batch_size)
    return {"method": method, "step_s_uncached": round(off, 4), "step_s_cached": round(auto, 4), "step_speedup": round(off / auto, 2),
            "cache_build_s": round(cache_seconds, 1), "epoch_s_saved": round((off - auto) * steps_per_epoch, 1)}


def train(method: str, cache: str, args, out: Path) -> dict:
    command = [sys.executable, "-m", "tunesmith.cli", "train", args.data, "--model", args.model, "--method", method,
               "--cache-frozen", cache, "--max-train-examples", str(args.train_examples), "--epochs", str(args.epochs),
               "--early-stopping", "0", "--seed", str(args.seed), "--out", str(out), *args.extra]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    cached_line = next((line for line in done.stdout.splitlines() if "computed once" in line), "")
    return {"method": method, "cache": cache, "process_s": round(wall, 1), "job_s": metrics["job_seconds"],
            "train_s": metrics["train"]["seconds"], "tokens_per_s": metrics["train"]["tokens_per_second"],
            "val_accuracy": metrics["validation"]["accuracy"], "test_accuracy": metrics["test"]["accuracy"],
            "test_loss": metrics["test"]["loss"], "peak_mb": metrics["peak_memory_mb"], "cache_note": cached_line.strip(),
            "predictions": pd.read_csv(out / "test_predictions.csv")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="rotten-tomatoes")
    parser.add_argument("--model", default="minilm-l6")
    parser.add_argument("--methods", default="freeze,head")
    parser.add_argument("--train-examples", type=int, default=3000)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default=None, help="write results.json and results.md here")
    parser.add_argument("--step-batches", type=int, default=30, help="batches timed A/B interleaved per method (0 = skip)")
    parser.add_argument("--skip-jobs", action="store_true", help="only the interleaved step timing")
    parser.add_argument("extra", nargs="*", help="more `tunesmith train` flags, after --")
    args = parser.parse_args()

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
          f"fp32 matmul {matmul_gflops():.0f} GFLOP/s (1024^3); cuda: {torch.cuda.is_available()}")
    rows, failures, steps = [], [], []
    if args.step_batches:
        for method in args.methods.split(","):
            steps.append(interleaved_step_times(method, args, args.step_batches))
            print(f"{method}: training step {steps[-1]['step_s_uncached']:.3f} s uncached, {steps[-1]['step_s_cached']:.3f} s cached "
                  f"({steps[-1]['step_speedup']:.2f}x, median of {args.step_batches} interleaved); cache built in {steps[-1]['cache_build_s']} s, "
                  f"saves {steps[-1]['epoch_s_saved']} s per epoch")
    with tempfile.TemporaryDirectory(prefix="bench-frozen-") as tmp:
        for method in [] if args.skip_jobs else args.methods.split(","):
            runs = {cache: train(method, cache, args, Path(tmp) / f"{method}-{cache}") for cache in ("off", "auto")}
            plain, cached = runs["off"], runs["auto"]
            probs = [c for c in plain["predictions"] if c.startswith("p(")]
            agree = float((plain["predictions"]["prediction"] == cached["predictions"]["prediction"]).mean())
            prob_diff = float((plain["predictions"][probs] - cached["predictions"][probs]).abs().to_numpy().max())
            speedup = plain["job_s"] / cached["job_s"]
            for run in (plain, cached):
                run.pop("predictions")
                rows.append(run)
            print(f"{method}: job {plain['job_s']:.1f} s -> {cached['job_s']:.1f} s ({speedup:.2f}x), train {plain['train_s']:.1f} s -> "
                  f"{cached['train_s']:.1f} s ({plain['train_s'] / cached['train_s']:.2f}x); test accuracy {plain['test_accuracy']:.4f} vs "
                  f"{cached['test_accuracy']:.4f}; {agree:.2%} of test predictions agree, max probability difference {prob_diff:.1e}")
            print(f"  {cached['cache_note']}")
            rows[-1].update(speedup_job=round(speedup, 2), speedup_train=round(plain["train_s"] / cached["train_s"], 2),
                            predictions_agree=agree, max_probability_difference=prob_diff)
            if agree < 0.995 or abs(plain["test_accuracy"] - cached["test_accuracy"]) > 0.005 or prob_diff > 1e-2:
                failures.append(method)
    tables = [markdown(pd.DataFrame(steps))] if steps else []
    tables += [markdown(pd.DataFrame(rows).drop(columns=["cache_note"]))] if rows else []
    print("\n\n".join(tables))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps({"interleaved_steps": steps, "jobs": rows}, indent=2))
        (Path(args.out) / "results.md").write_text("\n\n".join(tables) + "\n")
    if failures:
        print(f"Results differ with and without the cache for: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
