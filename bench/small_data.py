"""Small data: tunesmith's old defaults x its new defaults x the Hugging Face Trainer, by data size.

    python bench/small_data.py --quick        # one case: tweet-sentiment, 400 training rows
    python bench/small_data.py                # tweet-sentiment 400; rotten-tomatoes 400 and 3,000
    python bench/small_data.py --full         # and rotten-tomatoes' whole train split (9,808 rows: ~30 min more)
    python bench/small_data.py --compare      # instead: `tunesmith compare` of five methods on the 400-row tweet file

Three arms on every case, on the same train and test files:
- old:     `tunesmith train` with round 1's defaults spelled out as flags (OLD_DEFAULTS below);
- new:     `tunesmith train TRAIN --test TEST --out DIR` and no other flag (the new defaults: epochs
           from the data size, refit on train + validation, metric and precision chosen automatically);
- Trainer: peer_trainer.py `dynamic` (dynamic padding + length-grouped batches, its best practice)
           on all the training rows (no validation split), 3 epochs, batch 32, lr 5e-5.
Cases: tweet-sentiment (3 classes), a stratified seeded subset of its train split tested on a
stratified seeded 1,000-row subset of its test split; rotten-tomatoes (2 classes), stratified
seeded subsets of its train split tested on its whole 2,000-row test split.

Round r trains every arm with seed S + r (the data files stay those of --seed S), so with --rounds
the accuracies are means over training seeds and the times medians; the arms' order alternates.
Only tunesmith's default seed (42) leaves the new arm with no flag at all; other seeds add --seed.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from common import (NOT_RECORDED, PYTHON, RESULTS, alternate, count_rows, dataset_case, describe, machine, median, peer_command,
                    print_table, read_run_config, read_tunesmith_metrics, save_result, tunesmith_command, try_job)

TUNESMITH_SEED = 42  # `tunesmith train`'s default --seed
OLD_DEFAULTS = ["--epochs", "3", "--val-fraction", "0.1", "--refit", "off", "--metric", "accuracy", "--precision", "fp32"]
PEER = {"mode": "dynamic", "epochs": 3.0, "batch_size": 32, "lr": 5e-5, "max_length": 128}
# dataset: training sizes by default, test rows (None: the whole test split)
DATASETS = {"tweet-sentiment": {"sizes": ["400"], "test": 1000}, "rotten-tomatoes": {"sizes": ["400", "3000"], "test": None}}
FULL_CASE = ("rotten-tomatoes", "all")
ARMS = ["old", "new", "Trainer"]
COMPARE_METHODS = "full,head,lora,bitfit,gradual"
CONFIG_KEYS = ("epochs", "val_fraction", "refit", "metric", "precision", "lr", "seed")  # what config.yaml says was run


@dataclass
class Case:
    dataset: str
    train_examples: int | None  # None: the whole train split
    test_examples: int | None

    @property
    def name(self) -> str:
        return f"{self.dataset}-{self.train_examples or 'all'}"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small case: tweet-sentiment at 400 training rows")
    parser.add_argument("--full", action="store_true", help="also rotten-tomatoes' whole train split (9,808 rows; slow)")
    parser.add_argument("--datasets", help=f"comma-separated, from {', '.join(DATASETS)} (default: both; tweet-sentiment with --quick)")
    parser.add_argument("--sizes", help="training rows for every chosen dataset, comma-separated, 'all' = the whole split "
                                        "(default: tweet-sentiment 400; rotten-tomatoes 400,3000)")
    parser.add_argument("--test-examples", type=int, help="test rows for every dataset (default: tweet-sentiment 1,000, rotten-tomatoes all 2,000; "
                                                          "fewer only to try the script out)")
    parser.add_argument("--rounds", type=int, default=1, help="train every arm this many times, round r with seed S + r")
    parser.add_argument("--seed", type=int, default=TUNESMITH_SEED, help="seed of the data subsets and of round 0's training (default: tunesmith's, 42)")
    parser.add_argument("--compare", action="store_true", help=f"instead of the table: `tunesmith compare --methods {COMPARE_METHODS}` with the new "
                                                               "defaults on the 400-row tweet-sentiment file (the first of --sizes), ranked by test metric")
    parser.add_argument("--compare-methods", default=COMPARE_METHODS, help="the methods --compare trains")
    args = parser.parse_args()
    unknown = set((args.datasets or "").split(",")) - set(DATASETS) - {""}
    if unknown:
        parser.error(f"--datasets: unknown {', '.join(sorted(unknown))}; choose from {', '.join(DATASETS)}")
    return args


def cases(args) -> list[Case]:
    names = args.datasets.split(",") if args.datasets else (["tweet-sentiment"] if args.quick else list(DATASETS))
    chosen = []
    for name in names:
        sizes = args.sizes.split(",") if args.sizes else DATASETS[name]["sizes"] + ([FULL_CASE[1]] if args.full and name == FULL_CASE[0] else [])
        test = args.test_examples or DATASETS[name]["test"]
        chosen += [Case(name, None if size == "all" else int(size), test) for size in sizes]
    return chosen


def seed_flags(seed: int) -> list[str]:
    """--seed only where it differs from tunesmith's default, so that the new arm keeps no flags at all."""
    return [] if seed == TUNESMITH_SEED else ["--seed", str(seed)]


# -- one job of an arm ------------------------------------------------------------------------

def run_tunesmith(arm: str, data: dict, tag: str, seed: int) -> dict:
    out = RESULTS / "runs" / tag
    flags = (OLD_DEFAULTS if arm == "old" else []) + seed_flags(seed)
    job = try_job(tag, tunesmith_command(data, out, flags))
    if "failed" not in job:
        job.update(read_tunesmith_metrics(out))
        config = read_run_config(out)
        job["config"] = {key: config.get(key) for key in CONFIG_KEYS}
    job["flags"] = flags
    return job


def run_peer(data: dict, tag: str, seed: int) -> dict:
    out = RESULTS / "runs" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = peer_command(PEER["mode"], data, out, PEER["epochs"], PEER["batch_size"], PEER["lr"], seed, PEER["max_length"])
    job = try_job(tag, command)
    if "failed" not in job:
        job.update(json.loads(out.read_text()))
    return job


def run_arm(arm: str, case: Case, data: dict, round_: int, seed: int) -> dict:
    tag = f"small-{case.name}-{arm.lower()}-r{round_}"
    job = run_peer(data, tag, seed) if arm == "Trainer" else run_tunesmith(arm, data, tag, seed)
    if "failed" not in job:
        print(f"  {tag}: whole job {job['wall_s']:.1f} s, accuracy {job['accuracy']:.4f}, macro-F1 {job['macro_f1']:.4f}"
              + (f", {job['epochs']} epochs, {job['steps']} steps, {job['precision']}, refit {refit_cell(job['refit'])}" if arm != "Trainer" else ""),
              flush=True)
        for reason in job.get("choices") or []:
            print(f"    {reason}")
    return job


REFIT_KEYS = ("examples", "epochs", "steps", "best_step", "selection_steps")  # shown in the table where the run records them


def refit_cell(refit) -> str:
    """What the run says about refit, short: '-' where metrics.json has no entry, 'no' for None."""
    if refit == NOT_RECORDED:
        return "-"
    if refit is None or refit is False:
        return "no"
    if isinstance(refit, dict) and any(k in refit for k in REFIT_KEYS):
        return describe({k: refit[k] for k in REFIT_KEYS if k in refit})
    return describe(refit)


# -- the table --------------------------------------------------------------------------------

def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarise(case: Case, data: dict, jobs: dict[str, list[dict]]) -> dict:
    row = {"dataset": case.dataset, "size": count_rows(data["train"]), "test": count_rows(data["test"])}
    for arm in ARMS:
        done = [j for j in jobs[arm] if "failed" not in j]
        key = arm.lower()
        row[f"{key}_accuracy"] = mean([j["accuracy"] for j in done])
        row[f"{key}_macro_f1"] = mean([j["macro_f1"] for j in done])
        row[f"{key}_job_s"] = median([j["wall_s"] for j in done]) if done else None
        row[f"{key}_failed"] = len(jobs[arm]) - len(done)
    new = next((j for j in jobs["new"] if "failed" not in j), {})
    row["new_epochs_set"] = (new.get("config") or {}).get("epochs")
    row["new_epochs"], row["new_steps"], row["new_precision"] = new.get("epochs"), new.get("steps"), new.get("precision")
    row["new_refit"] = refit_cell(new.get("refit", NOT_RECORDED))
    return row


def points(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else 100 * (a - b)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


def differences(row: dict) -> dict:
    return {"case": f"{row['dataset']} {row['size']:,}",
            "new_old_accuracy": points(row["new_accuracy"], row["old_accuracy"]), "new_old_f1": points(row["new_macro_f1"], row["old_macro_f1"]),
            "new_peer_accuracy": points(row["new_accuracy"], row["trainer_accuracy"]), "new_peer_f1": points(row["new_macro_f1"], row["trainer_macro_f1"]),
            "old_new_time": ratio(row["new_job_s"], row["old_job_s"]), "peer_new_time": ratio(row["new_job_s"], row["trainer_job_s"])}


TABLE = [("dataset", "dataset", ""), ("size", "train rows", ","), ("test", "test rows", ","),
         ("old_accuracy", "old acc", ".4f"), ("old_macro_f1", "old F1", ".4f"),
         ("new_accuracy", "new acc", ".4f"), ("new_macro_f1", "new F1", ".4f"),
         ("trainer_accuracy", "Trainer acc", ".4f"), ("trainer_macro_f1", "Trainer F1", ".4f"),
         ("old_job_s", "old job s", ".1f"), ("new_job_s", "new job s", ".1f"), ("trainer_job_s", "Trainer job s", ".1f"),
         ("new_epochs_set", "new epochs set", ""), ("new_epochs", "new epochs run", ""), ("new_steps", "new steps", ""),
         ("new_precision", "new precision", ""), ("new_refit", "new refit", "")]
DIFFERENCES = [("case", "case", ""), ("new_old_accuracy", "new - old acc (points)", "+.2f"), ("new_old_f1", "new - old F1 (points)", "+.2f"),
               ("new_peer_accuracy", "new - Trainer acc (points)", "+.2f"), ("new_peer_f1", "new - Trainer F1 (points)", "+.2f"),
               ("old_new_time", "new / old job time", ".2f"), ("peer_new_time", "new / Trainer job time", ".2f")]


def size_table(args) -> dict:
    host = machine(1.0)
    print(f"small_data: old = `tunesmith train {' '.join(OLD_DEFAULTS)}`, new = no flags, Trainer = {PEER['mode']} on all training rows, "
          f"{PEER['epochs']:g} epochs, batch {PEER['batch_size']}, lr {PEER['lr']:g}; {args.rounds} round(s) from seed {args.seed}.\n"
          f"Machine: {host['cpu']}, {host['cores']} cores, {host['vector_flags']}, fp32 matmul {host['matmul_gflops']} GFLOP/s, "
          f"load {host['load_average']}.", flush=True)
    rows, all_jobs = [], {}
    for case in cases(args):
        data = dataset_case(case.dataset, case.train_examples, case.test_examples, args.seed)
        print(f"\n{case.dataset}: {count_rows(data['train']):,} training rows ({data['train']}), {count_rows(data['test']):,} test rows.", flush=True)
        jobs = {arm: [] for arm in ARMS}
        for round_, arm in alternate(ARMS, args.rounds):
            jobs[arm].append(run_arm(arm, case, data, round_, args.seed + round_))
        rows.append(summarise(case, data, jobs))
        all_jobs[case.name] = jobs
    print(f"\nAccuracy and macro-F1 on the test file: means over {args.rounds} round(s); whole-job seconds: medians.")
    table = print_table(rows, TABLE)
    print()
    diff_table = print_table([differences(r) for r in rows], DIFFERENCES)
    failed = [f"{case}: {arm} {job['failed']}" for case, jobs in all_jobs.items() for arm, runs in jobs.items() for job in runs if "failed" in job]
    if failed:
        print("\nFailed jobs (their cells are '-'):\n  " + "\n  ".join(failed))
    payload = {"scenario": "small_data", "settings": vars(args), "old_defaults": OLD_DEFAULTS, "peer": PEER, "machine": host,
               "machine_load_after": machine(0.3)["load_average"], "rows": rows, "jobs": all_jobs, "failed": failed,
               "markdown": table + "\n\n" + diff_table}
    save_result("small_data", payload)
    return payload


# -- --compare: the methods on the small multi-class file -------------------------------------

def ranking_metric(out, methods: list[str]) -> str:
    """The metric the runs picked their weights by (config.yaml's, where it is a concrete one), else accuracy."""
    for method in methods:
        metric = read_run_config(out / method).get("metric")
        if metric in ("accuracy", "macro_f1", "mcc"):
            return metric
    return "accuracy"


def method_rows(out, methods: list[str]) -> list[dict]:
    rows = []
    for method in methods:
        path = out / method / "metrics.json"
        if not path.is_file():
            rows.append({"method": method, "status": "failed"})
            continue
        metrics = json.loads(path.read_text())
        test, train = metrics.get("test") or {}, metrics["train"]
        rows.append({"method": method, "status": "done", "accuracy": test.get("accuracy"), "macro_f1": test.get("macro_f1"), "mcc": test.get("mcc"),
                     "train_s": train["seconds"] + train.get("frozen_cache_seconds", 0.0), "epochs": train.get("epochs"),
                     "steps": train.get("steps"), "refit": refit_cell(metrics.get("refit", NOT_RECORDED))})
    return rows


def rank(rows: list[dict], metric: str) -> list[dict]:
    done = sorted((r for r in rows if r.get(metric) is not None), key=lambda r: -r[metric])
    for place, row in enumerate(done, 1):
        row["rank"] = place
    return done + [r for r in rows if r.get(metric) is None]


def method_comparison(args) -> dict:
    size = (args.sizes or DATASETS["tweet-sentiment"]["sizes"][0]).split(",")[0]
    case = Case("tweet-sentiment", None if size == "all" else int(size), args.test_examples or DATASETS["tweet-sentiment"]["test"])
    data = dataset_case(case.dataset, case.train_examples, case.test_examples, args.seed)
    methods = args.compare_methods.split(",")
    out = RESULTS / "runs" / f"small-compare-{case.name}"
    command = [PYTHON, "-m", "tunesmith.cli", "compare", str(data["train"]), "--methods", ",".join(methods), "--test", str(data["test"]),
               *seed_flags(args.seed), "--out", str(out), "--overwrite"]
    print(f"small_data --compare: {count_rows(data['train']):,} training rows, {count_rows(data['test']):,} test rows, the new defaults:\n  "
          + " ".join(command[1:]), flush=True)
    job = try_job(f"small-compare-{case.name}", command)
    metric = ranking_metric(out, methods)
    rows = rank(method_rows(out, methods), metric)
    print(f"\nRanked by test {metric} (tunesmith compare's own table: {out / 'comparison.md'}):")
    table = print_table(rows, [("rank", "rank", ""), ("method", "method", ""), ("status", "status", ""), ("accuracy", "test acc", ".4f"),
                               ("macro_f1", "test macro-F1", ".4f"), ("mcc", "test MCC", ".4f"), ("train_s", "train s", ".1f"),
                               ("epochs", "epochs run", ""), ("steps", "steps", ""), ("refit", "refit", "")])
    places = {r["method"]: r.get("rank") for r in rows}
    verdict = ""
    if places.get("head") and places.get("full"):
        verdict = f"head ranks {places['head']}, full {places['full']}: head {'below' if places['head'] > places['full'] else 'NOT below'} full."
        print("\n" + verdict)
    payload = {"scenario": "small_data_compare", "settings": vars(args), "command": command, "job": job, "metric": metric,
               "rows": rows, "verdict": verdict, "markdown": table + ("\n\n" + verdict if verdict else "")}
    save_result("small_data_compare", payload)
    return payload


def main():
    args = parse_args()
    if args.compare:
        method_comparison(args)
    else:
        size_table(args)


if __name__ == "__main__":
    main()
