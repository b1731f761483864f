"""fp32 against bf16 for every fine-tuning method: the same job twice, `--precision fp32` and `--precision bf16`.

    python bench/precision.py                         # every method of `tunesmith methods`, 3,000 rows, 1 epoch
    python bench/precision.py --methods full,lora --rounds 2

Each job: `tunesmith train TRAIN --test TEST --method M --val-fraction 0 --epochs E --seed S
--precision P` on a fixed seeded subset of rotten-tomatoes' train split (the file full_finetune.py
--quick uses), tested on its 2,000-row test split; every other option at its default (the
method's own learning rate). The table: test accuracy of each, the difference in points, train
seconds (the training loop plus any frozen-layer cache) and fp32 / bf16 as the speed ratio; with
the CPU's bf16-relevant flags (avx512_bf16, amx_bf16, avx2) and its fp32 and bf16 matmul rates.
Rounds alternate which precision goes first; accuracy is the mean, times the median.
"""
from __future__ import annotations

import argparse

from common import (BF16_FLAGS, RESULTS, alternate, count_rows, cpu_flags, data_split, machine, median, print_table,
                    read_tunesmith_metrics, save_result, tunesmith_command, try_job)

PRECISIONS = ["fp32", "bf16"]


def parse_args():
    from tunesmith.methods import METHODS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated (default: all, {', '.join(METHODS)})")
    parser.add_argument("--train-examples", type=int, default=3000, help="a fixed random subset of rotten-tomatoes' train split (default 3,000)")
    parser.add_argument("--test-examples", type=int, help="a fixed stratified subset of its test split (default: all 2,000; fewer only to try the script out)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every job this many times, alternating which precision goes first")
    args = parser.parse_args()
    unknown = set(args.methods.split(",")) - set(METHODS)
    if unknown:
        parser.error(f"--methods: unknown {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}")
    return args


def run_precision(method: str, precision: str, data: dict, args, round_: int) -> dict:
    tag = f"precision-{method}-{precision}-r{round_}"
    out = RESULTS / "runs" / tag
    flags = ["--method", method, "--val-fraction", "0", "--epochs", str(args.epochs), "--seed", str(args.seed), "--precision", precision]
    job = try_job(tag, tunesmith_command(data, out, flags))
    if "failed" not in job:
        job.update(read_tunesmith_metrics(out))
        job["train_s"] = round(job["train_s"] + job["frozen_cache_s"], 2)
        print(f"  {tag}: train {job['train_s']:.1f} s, whole job {job['wall_s']:.1f} s, accuracy {job['accuracy']:.4f}"
              f" (ran in {job['precision'] or 'precision not recorded'})", flush=True)
    return job


def summarise(method: str, jobs: dict[str, list[dict]]) -> dict:
    row = {"method": method}
    for precision in PRECISIONS:
        done = [j for j in jobs[precision] if "failed" not in j]
        row[f"{precision}_accuracy"] = sum(j["accuracy"] for j in done) / len(done) if done else None
        row[f"{precision}_train_s"] = median([j["train_s"] for j in done]) if done else None
        row[f"{precision}_job_s"] = median([j["wall_s"] for j in done]) if done else None
    row["recorded"] = "/".join(str(jobs[p][0].get("precision")) if "failed" not in jobs[p][0] else "-" for p in PRECISIONS)
    both = row["fp32_accuracy"] is not None and row["bf16_accuracy"] is not None
    row["points"] = 100 * (row["bf16_accuracy"] - row["fp32_accuracy"]) if both else None
    row["speedup"] = row["fp32_train_s"] / row["bf16_train_s"] if both else None
    row["job_speedup"] = row["fp32_job_s"] / row["bf16_job_s"] if both else None
    return row


def main():
    args = parse_args()
    methods = args.methods.split(",")
    data = data_split(args.train_examples, args.seed, args.test_examples)
    host = machine(1.0, bf16=True)
    flags = cpu_flags(BF16_FLAGS)
    print(f"precision: {count_rows(data['train']):,} training rows x {args.epochs:g} epochs, no validation split, seed {args.seed}, "
          f"test {count_rows(data['test']):,}; methods {', '.join(methods)}.\nMachine: {host['cpu']}, {host['cores']} cores; "
          f"bf16-relevant flags: " + ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in BF16_FLAGS)
          + f"; matmul {host['matmul_gflops']} GFLOP/s; load {host['load_average']}.", flush=True)
    jobs = {}
    for method in methods:
        jobs[method] = {p: [] for p in PRECISIONS}
        for round_, precision in alternate(PRECISIONS, args.rounds):
            jobs[method][precision].append(run_precision(method, precision, data, args, round_))
    rows = [summarise(m, jobs[m]) for m in methods]
    print(f"\nTest accuracy: mean over {args.rounds} round(s); seconds: medians; speed ratio = fp32 s / bf16 s (above 1: bf16 faster).")
    table = print_table(rows, [("method", "method", ""), ("fp32_accuracy", "fp32 acc", ".4f"), ("bf16_accuracy", "bf16 acc", ".4f"),
                               ("points", "bf16 - fp32 (points)", "+.2f"), ("fp32_train_s", "fp32 train s", ".1f"),
                               ("bf16_train_s", "bf16 train s", ".1f"), ("speedup", "train speed ratio", ".2f"),
                               ("fp32_job_s", "fp32 job s", ".1f"), ("bf16_job_s", "bf16 job s", ".1f"), ("job_speedup", "job speed ratio", ".2f"),
                               ("recorded", "metrics.json precision", "")])
    failed = [f"{m} {p}: {j['failed']}" for m in methods for p in PRECISIONS for j in jobs[m][p] if "failed" in j]
    if failed:
        print("\nFailed jobs (their cells are '-'):\n  " + "\n  ".join(failed))
    cpu_line = f"CPU: {host['cpu']}; " + ", ".join(f"{f}: {'yes' if f in flags else 'no'}" for f in BF16_FLAGS) + f"; matmul GFLOP/s {host['matmul_gflops']}."
    payload = {"scenario": "precision", "settings": vars(args), "machine": host, "bf16_flags": {f: f in flags for f in BF16_FLAGS},
               "machine_load_after": machine(0.3)["load_average"], "rows": rows, "jobs": jobs, "failed": failed,
               "markdown": cpu_line + "\n\n" + table}
    save_result("precision", payload)


if __name__ == "__main__":
    main()
