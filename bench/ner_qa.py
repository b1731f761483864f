"""NER and extractive QA: tunesmith against the Hugging Face Trainer as run_ner.py / run_qa.py run it.

    python bench/ner_qa.py ner --quick          # wnut16, 2 epochs at lr 2e-4, batch 16, max length 64: a few minutes
    python bench/ner_qa.py qa --quick           # 1,000 facts-qa questions (200 test), 2 epochs at lr 1e-4
    python bench/ner_qa.py all                  # both, whole splits, the examples' own settings
    python bench/ner_qa.py ner --peers example,grouped,bf16 --rounds 2

Every arm is a whole job in its own process (common.run_job: wall time from spawn to exit, the
child's peak RSS), on the same train and test files, model (minilm-l6's folder), epochs, batch
size, learning rate, seed and max length; rounds alternate the order of the arms.
- ner: wnut16 (1,914 train / 240 test tweets), 3 epochs, batch 8, lr 5e-5, max length 128: run_ner.py's
  own defaults (the TrainingArguments defaults). Metric: entity F1 (seqeval, default mode, micro), and
  precision/recall.
- qa: facts-qa (3,000 train / 500 test questions, SQuAD v2 style, generated; built here from
  tunesmith/assets/generated_qa.py if the registry has no such name yet), 2 epochs, batch 12, lr 3e-5,
  max length 384, doc stride 128, max answer length 30: run_qa.py's README settings. Metrics: SQuAD EM and F1.
tunesmith: `tunesmith train TRAIN --test TEST --task T --val-fraction 0 --epochs E --batch-size B --lr LR
--seed S --max-length L [--doc-stride D --max-answer-length A]` and its defaults otherwise (precision
by measurement, warmup, weight decay); no validation split, as the peer has none, so nothing is tuned
on validation (QA's null threshold stays at its default). Peers: see PEERS.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from common import (BENCH, PYTHON, RESULTS, alternate, base_model_folder, machine, median, print_table, save_result,
                    try_job, tunesmith_command)


@dataclass
class TaskSetup:
    key: str                  # ner | qa
    title: str
    tunesmith_task: str       # the --task name
    dataset: str              # bundled dataset name
    peer_script: str
    epochs: float
    batch_size: int
    lr: float
    max_length: int
    peers: dict               # name -> (arm label, peer script flags)
    default_peers: str
    metrics: list             # (key, column heading): percentages on both sides
    quick: dict = field(default_factory=dict)   # --quick: settings that replace the task's own
    tunesmith_flags: list = field(default_factory=list)


SETUPS = {
    "ner": TaskSetup("ner", "NER", "token-classification", "wnut16", "peer_ner.py", 3, 8, 5e-5, 128,
                     {"example": ("Trainer (run_ner.py)", []),
                      "grouped": ("Trainer (run_ner.py) + length grouping", ["--group-by-length"]),
                      "bf16": ("Trainer (run_ner.py) bf16", ["--bf16"])},
                     "example,grouped,bf16", [("f1", "entity F1"), ("precision", "precision"), ("recall", "recall")],
                     # the whole 1,914 tweets (500 tweets and 1 epoch at 5e-5 find no entity on either side), 2 epochs at
                     # the rate small BERTs take for tagging, batch 16: 240 steps
                     quick={"epochs": 2.0, "lr": 2e-4, "batch_size": 16, "max_length": 64}),
    "qa": TaskSetup("qa", "extractive QA", "question-answering", "facts-qa", "peer_qa.py", 2, 12, 3e-5, 384,
                    {"example": ("Trainer (run_qa.py, pad to max length)", []),
                     "dynamic": ("Trainer (run_qa.py) dynamic padding", ["--dynamic"]),
                     "dynamic-bf16": ("Trainer (run_qa.py) dynamic padding bf16", ["--dynamic", "--bf16"])},
                    "example,dynamic-bf16", [("exact", "EM"), ("f1", "F1")],
                    # 1,000 questions, 2 epochs at 1e-4 (167 steps): 500 questions, 1 epoch at 3e-5 left every arm
                    # below 8 F1, which says nothing about quality
                    quick={"epochs": 2.0, "lr": 1e-4, "train_examples": 1000, "test_examples": 200}),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=["ner", "qa", "all"])
    p.add_argument("--quick", action="store_true", help="a few minutes a task: NER 2 epochs at lr 2e-4, batch 16, max length 64; "
                                                     "QA 1,000 training and 200 test questions, 2 epochs at lr 1e-4")
    p.add_argument("--train-examples", type=int, help="a fixed seeded subset of the training split (default: all)")
    p.add_argument("--test-examples", type=int, help="a fixed seeded subset of the test split (default: all; fewer only to try a script out)")
    p.add_argument("--train-file", help="another training file (JSONL; QA also SQuAD JSON) instead of the bundled split")
    p.add_argument("--test-file", help="another test file, with --train-file")
    p.add_argument("--epochs", type=float, help="default: the task's (NER 3, QA 2; 1 with --quick)")
    p.add_argument("--batch-size", type=int, help="default: the task's (NER 8, QA 12)")
    p.add_argument("--lr", type=float, help="default: the task's (NER 5e-5, QA 3e-5)")
    p.add_argument("--max-length", type=int, help="default: the task's (NER 128, QA 384)")
    p.add_argument("--doc-stride", type=int, default=128, help="QA: tokens shared by neighbouring windows")
    p.add_argument("--max-answer-length", type=int, default=30, help="QA: longest answer in tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rounds", type=int, default=1, help="repeat every arm this many times, alternating the order")
    p.add_argument("--peers", help="comma-separated peer arms (NER: example,grouped,bf16; QA: example,dynamic,dynamic-bf16); "
                                   "default NER all three, QA example,dynamic-bf16")
    p.add_argument("--tunesmith-flags", default="", help="extra `tunesmith train` flags")
    p.add_argument("--no-tunesmith", action="store_true", help="run the peer arms only")
    return p.parse_args()


# -- data: the same files for both sides --------------------------------------------------------
def bundled_or_generated(setup: TaskSetup) -> tuple[dict, str]:
    """The bundled split's files, and where they come from; facts-qa falls back to generating it here."""
    from tunesmith.assets.registry import DATASETS, dataset_files

    if setup.dataset in DATASETS:
        return dataset_files(setup.dataset), f"bundled `{setup.dataset}`"
    if setup.dataset == "facts-qa":
        from tunesmith.assets.generated_qa import GENERATOR_VERSION, build_generated_qa

        out = RESULTS / "data" / f"facts-qa-generated-v{GENERATOR_VERSION}"
        files = {split: out / f"{split}.jsonl" for split in ("train", "validation", "test")}
        if not all(path.is_file() for path in files.values()):
            files = build_generated_qa(out)
        return files, f"facts-qa generated by tunesmith.assets.generated_qa (v{GENERATOR_VERSION}; not in the registry yet)"
    raise SystemExit(f"No bundled dataset '{setup.dataset}' in this tunesmith; pass --train-file and --test-file.")


def jsonl_subset(source: Path, rows: int | None, seed: int, tag: str, cover=None) -> Path:
    """A fixed seeded subset of a JSONL file's lines, written once under results/data/ (the source when rows
    is None or not smaller). cover(record) -> labels: the subset first takes one random line for each label
    of the file (tunesmith refuses a test entity type that training never shows), then fills up at random."""
    import random

    if not rows:
        return Path(source)
    if Path(source).suffix != ".jsonl":
        raise SystemExit(f"--train-examples/--test-examples cut JSONL files only; {source} is not one.")
    lines = [line for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    if rows >= len(lines):
        return Path(source)
    path = RESULTS / "data" / f"{tag}-{rows}-seed{seed}{'-covering' if cover else ''}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        rng, keep = random.Random(seed), set()
        if cover:
            labels = [cover(json.loads(line)) for line in lines]
            for label in sorted(set().union(*labels)):
                if not any(label in labels[i] for i in keep):
                    keep.add(rng.choice([i for i, found in enumerate(labels) if label in found]))
        rest = [i for i in range(len(lines)) if i not in keep]
        keep |= set(rng.sample(rest, max(rows - len(keep), 0)))
        path.write_text("\n".join(lines[i] for i in sorted(keep)) + "\n", encoding="utf-8")
    return path


def entity_types(record: dict) -> set[str]:
    """The entity types a tagged sentence mentions (B-person, I-person -> person)."""
    tags = record.get("tags", record.get("ner_tags", []))
    return {t.split("-", 1)[1] for t in tags if "-" in t}


def count_lines(path: Path) -> int | None:
    path = Path(path)
    return sum(1 for line in path.open(encoding="utf-8") if line.strip()) if path.suffix == ".jsonl" else None


def task_data(setup: TaskSetup, settings: dict) -> tuple[dict, str]:
    if settings["train_file"]:
        if not settings["test_file"]:
            raise SystemExit("--train-file needs --test-file.")
        files, source = {"train": Path(settings["train_file"]), "test": Path(settings["test_file"])}, "given files"
    else:
        files, source = bundled_or_generated(setup)
    tag = f"{setup.dataset if not settings['train_file'] else Path(files['train']).stem}"
    cover = entity_types if setup.key == "ner" else None
    return {"train": jsonl_subset(files["train"], settings["train_examples"], settings["seed"], f"{tag}-train", cover),
            "test": jsonl_subset(files["test"], settings["test_examples"], settings["seed"], f"{tag}-test")}, source


# -- the two sides ------------------------------------------------------------------------------
def tunesmith_missing_task(setup: TaskSetup) -> str | None:
    """Why `tunesmith train --task T` cannot run here, or None when the task is registered."""
    from tunesmith.tasks import TASKS

    if setup.tunesmith_task in TASKS:
        return None
    return (f"tunesmith cannot run the {setup.tunesmith_task} task yet: tunesmith.tasks registers only {', '.join(TASKS)} "
            f"(tasks/__init__.py does not import its module); the Trainer arms ran alone")


def run_tunesmith(setup: TaskSetup, data: dict, settings: dict, tag: str) -> dict:
    """One `tunesmith train` job through the CLI, and what its metrics.json says (metrics in percent)."""
    missing = tunesmith_missing_task(setup)
    if missing:
        print(f"  {tag}: {missing}", flush=True)
        return {"name": tag, "failed": missing}
    out = RESULTS / "runs" / tag
    flags = ["--task", setup.tunesmith_task, "--val-fraction", "0", "--epochs", f"{settings['epochs']:g}", "--batch-size", str(settings["batch_size"]),
             "--lr", f"{settings['lr']:g}", "--seed", str(settings["seed"]), "--max-length", str(settings["max_length"])]
    if setup.key == "qa":
        flags += ["--doc-stride", str(settings["doc_stride"]), "--max-answer-length", str(settings["max_answer_length"])]
    job = try_job(tag, tunesmith_command(data, out, flags + settings["tunesmith_flags"].split()))
    if "failed" not in job:
        job.update(read_tunesmith_run(setup, out))
    return job


def read_tunesmith_run(setup: TaskSetup, out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    test, train = metrics["test"], metrics["train"]
    scores = ({"f1": 100 * test["f1"], "precision": 100 * test["precision"], "recall": 100 * test["recall"]} if setup.key == "ner" else
              {"exact": 100 * test["exact_match"], "f1": 100 * test["f1"],
               **{f"{prefix}_{m}": 100 * test[f"{name}_{key}"] for prefix, name in (("HasAns", "has_answer"), ("NoAns", "no_answer"))
                  for m, key in (("exact", "exact_match"), ("f1", "f1")) if f"{name}_{key}" in test}})
    return {**scores, "train_s": train["seconds"] + train.get("frozen_cache_seconds", 0.0), "tokens": train["tokens"],
            "tokens_per_second": train["tokens_per_second"], "steps": train.get("steps"), "precision_used": train.get("precision"),
            "eval_s": test.get("seconds"), "job_s_inside": metrics.get("job_seconds"), "peak_memory_mb_inside": metrics.get("peak_memory_mb")}


def run_peer(setup: TaskSetup, peer: str, data: dict, settings: dict, tag: str) -> dict:
    out = RESULTS / "runs" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [PYTHON, str(BENCH / setup.peer_script), str(data["train"]), str(data["test"]), f"{settings['epochs']:g}", str(out),
               "--model", base_model_folder(), "--batch-size", str(settings["batch_size"]), "--lr", f"{settings['lr']:g}",
               "--seed", str(settings["seed"]), "--max-length", str(settings["max_length"]), *setup.peers[peer][1]]
    if setup.key == "qa":
        command += ["--doc-stride", str(settings["doc_stride"]), "--max-answer-length", str(settings["max_answer_length"])]
    job = try_job(tag, command)
    if "failed" not in job:
        result = json.loads(out.read_text())
        if setup.key == "ner":  # seqeval's fractions, in percent as the tables show them
            result.update({key: 100 * result[key] for key in ("f1", "precision", "recall")})
        job.update(result, precision_used="bf16" if result["bf16"] else "fp32")
    return job


# -- one task: arms, rounds, tables ---------------------------------------------------------------
def task_settings(setup: TaskSetup, args) -> dict:
    quick = setup.quick if args.quick else {}
    return {"epochs": args.epochs or quick.get("epochs", setup.epochs), "batch_size": args.batch_size or quick.get("batch_size", setup.batch_size),
            "lr": args.lr or quick.get("lr", setup.lr), "max_length": args.max_length or quick.get("max_length", setup.max_length),
            "seed": args.seed, "doc_stride": args.doc_stride, "max_answer_length": args.max_answer_length,
            "train_examples": args.train_examples or quick.get("train_examples"),
            "test_examples": args.test_examples or quick.get("test_examples"),
            "train_file": args.train_file, "test_file": args.test_file, "tunesmith_flags": args.tunesmith_flags, "rounds": args.rounds}


def summarise(arm: str, side: str, setup: TaskSetup, jobs: list[dict]) -> dict:
    done = [j for j in jobs if "failed" not in j]
    row = {"arm": arm, "side": side, "runs": len(done)}
    if not done:
        return {**row, "failed": jobs[0]["failed"] if jobs else "not run"}
    row.update(job_s=median([j["wall_s"] for j in done]), train_s=median([j["train_s"] for j in done]),
               tokens_per_s=median([j["tokens_per_second"] for j in done]), peak_mb=max(j["peak_rss_mb"] for j in done),
               dtype=done[0].get("precision_used"))
    for key, _ in setup.metrics:
        row[key] = sum(j[key] for j in done) / len(done)
    return row


def ratio_rows(setup: TaskSetup, rows: list[dict]) -> list[dict]:
    """tunesmith against each peer: speedups are peer / tunesmith time, memory tunesmith / peer, metrics in points."""
    ratios = []
    for ours in (r for r in rows if r["side"] == "tunesmith" and r["runs"]):
        for peer in (r for r in rows if r["side"] == "peer" and r["runs"]):
            ratio = {"pair": f"tunesmith vs {peer['arm']}", "job_speedup": peer["job_s"] / ours["job_s"], "train_speedup": peer["train_s"] / ours["train_s"],
                     "tokens_ratio": ours["tokens_per_s"] / peer["tokens_per_s"], "memory_ratio": ours["peak_mb"] / peer["peak_mb"]}
            ratio.update({f"{key}_points": ours[key] - peer[key] for key, _ in setup.metrics})
            ratios.append(ratio)
    return ratios


def describe_run(setup: TaskSetup, source: str, data: dict, settings: dict) -> str:
    """One sentence naming the files and the settings both sides ran with (the table's heading)."""
    qa = f", doc stride {settings['doc_stride']}, max answer length {settings['max_answer_length']}" if setup.key == "qa" else ""
    files = ", ".join(f"{role} {path} ({count_lines(path) or '?'} rows)" for role, path in data.items())
    return (f"{setup.title}: {source}, {files}; {settings['epochs']:g} epochs, batch {settings['batch_size']}, lr {settings['lr']:g}, "
            f"max length {settings['max_length']}{qa}, seed {settings['seed']}, {settings['rounds']} round(s).")


def run_task(setup: TaskSetup, args) -> dict:
    settings = task_settings(setup, args)
    peers = (args.peers or setup.default_peers).split(",")
    unknown = [p for p in peers if p not in setup.peers]
    if unknown:
        raise SystemExit(f"--peers: {setup.key} has no peer {', '.join(unknown)}; choose from {', '.join(setup.peers)}")
    data, source = task_data(setup, settings)
    arms = ([] if args.no_tunesmith else [("tunesmith", "tunesmith", None)]) + [(setup.peers[p][0], "peer", p) for p in peers]
    header = describe_run(setup, source, data, settings)
    print(f"\n{header}", flush=True)
    jobs = {name: [] for name, _, _ in arms}
    for round_, (name, side, peer) in alternate(arms, args.rounds):
        tag = f"{setup.key}-{'tunesmith' if side == 'tunesmith' else 'peer-' + peer}-r{round_}"
        job = run_tunesmith(setup, data, settings, tag) if side == "tunesmith" else run_peer(setup, peer, data, settings, tag)
        if "failed" not in job:
            metrics = ", ".join(f"{title} {job[key]:.2f}" for key, title in setup.metrics)
            print(f"  {tag}: whole job {job['wall_s']:.1f} s, train {job['train_s']:.1f} s, {job['tokens_per_second']:,.0f} tokens/s, "
                  f"{metrics}, peak {job['peak_rss_mb']:,.0f} MB, {job.get('precision_used')} (load {job['load_before']})", flush=True)
        jobs[name].append(job)
    rows = [summarise(name, side, setup, jobs[name]) for name, side, _ in arms]
    print()
    table = print_table([r for r in rows if r["runs"]], [("arm", "arm", ""), ("job_s", "whole job s", ".1f"), ("train_s", "train s", ".1f"),
                                                          ("tokens_per_s", "train tokens/s", ",.0f"), ("peak_mb", "peak MB", ",.0f"),
                                                          ("dtype", "precision", "")] + [(k, f"test {t}", ".2f") for k, t in setup.metrics])
    ratios = ratio_rows(setup, rows)
    print()
    ratio_table = print_table(ratios, [("pair", "comparison", ""), ("job_speedup", "whole-job speedup", ".2f"), ("train_speedup", "train speedup", ".2f"),
                                       ("tokens_ratio", "tokens/s ratio", ".2f"), ("memory_ratio", "peak memory ratio", ".2f")]
                              + [(f"{k}_points", f"{t} (points)", "+.2f") for k, t in setup.metrics]) if ratios else ""
    failures = [f"- {r['arm']}: {r['failed']}" for r in rows if not r["runs"]]
    for line in failures:
        print(line)
    markdown = "\n\n".join(part for part in (f"### {header}", table, ratio_table, "\n".join(failures)) if part)
    return {"settings": {k: v for k, v in settings.items()}, "source": source, "files": {k: str(v) for k, v in data.items()},
            "peers": peers, "rows": rows, "ratios": ratios, "jobs": jobs, "markdown": markdown}


def main():
    args = parse_args()
    keys = ["ner", "qa"] if args.task == "all" else [args.task]
    host = machine()
    print(f"Machine: {host['cpu']}, {host['cores']} cores, {host['vector_flags']}, fp32 matmul {host['matmul_gflops']} GFLOP/s, "
          f"load {host['load_average']}.", flush=True)
    results = {key: run_task(SETUPS[key], args) for key in keys}
    payload = {"scenario": "ner_qa", "arguments": vars(args), "machine": host, "machine_load_after": machine(0.5)["load_average"],
               "tasks": results, "markdown": "\n\n".join(r["markdown"] for r in results.values())}
    save_result(f"ner_qa-{args.task}", payload)


if __name__ == "__main__":
    main()
