"""Shared pieces of the benchmark commands: data, timed child processes, the machine, tables, JSON.

Every job (tunesmith or the peer) runs as its own child process and is timed from its start to its
exit, so imports, loading, tokenisation, training and evaluation count the same way on both sides.
Peak memory is the child's own maximum resident set (os.wait4), not the parent's.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PYTHON = sys.executable


def data_split(train_examples: int | None = None, seed: int = 0, test_examples: int | None = None) -> dict[str, Path]:
    """The bundled rotten-tomatoes split; with train_examples, a fixed random subset of train.csv
    written once, so that both sides read the very same file (test_examples: the same for test.csv,
    stratified, for trying a script out)."""
    files = dict(bundled_files("rotten-tomatoes"))
    if train_examples:
        files["train"] = subset_file(files["train"], train_examples, seed, "train")
    if test_examples:
        files["test"] = subset_file(files["test"], test_examples, seed, "test", stratify=True)
    return files


def bundled_files(name: str) -> dict[str, Path]:
    """train/validation/test CSVs of a bundled dataset (tunesmith.assets.registry.dataset_files)."""
    from tunesmith.assets import dataset_files

    return dataset_files(name)


def subset_file(source: Path, rows: int | None, seed: int, tag: str, stratify: bool = False, label: str = "label") -> Path:
    """A fixed seeded subset of `rows` rows of a CSV, written once under results/data/ (the same file
    for every arm and every later run); stratified keeps the label proportions. The source itself
    when rows is None or not smaller."""
    import pandas as pd

    table = pd.read_csv(source)
    if not rows or rows >= len(table):
        return Path(source)
    path = RESULTS / "data" / (f"{tag}-{rows}-seed{seed}.csv" if not stratify else f"{tag}-{rows}-stratified-seed{seed}.csv")
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        if stratify:
            from sklearn.model_selection import train_test_split

            table, _ = train_test_split(table, train_size=rows, stratify=table[label], random_state=seed)
        else:
            table = table.sample(n=rows, random_state=seed)
        table.to_csv(path, index=False)
    return path


def dataset_case(name: str, train_examples: int | None, test_examples: int | None, seed: int) -> dict[str, Path]:
    """A bundled dataset's train and test files cut to stratified seeded subsets (None: the whole split)."""
    files = bundled_files(name)
    return {"train": subset_file(files["train"], train_examples, seed, f"{name}-train", stratify=True),
            "test": subset_file(files["test"], test_examples, seed, f"{name}-test", stratify=True)}


def count_rows(path: Path) -> int:
    import pandas as pd

    return len(pd.read_csv(path))


def run_job(name: str, command: list[str], env: dict | None = None, log: Path | None = None) -> dict:
    """Run one whole job as a child process: wall seconds from spawn to exit and its peak RSS."""
    log = log or RESULTS / "logs" / f"{name}-{int(time.time())}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=BENCH.parent)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} failed with exit code {code}; log {log}:\n{tail}")
    return {"name": name, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "load_before": round(load_before, 2), "log": str(log)}


def try_job(name: str, command: list[str], env: dict | None = None) -> dict:
    """run_job, but a failing job becomes {"name", "failed": message} so the other arms still run and report."""
    try:
        return run_job(name, command, env)
    except RuntimeError as error:
        print(f"  {name} FAILED: {error}", flush=True)
        lines = [line for line in str(error).splitlines() if line.strip()]
        return {"name": name, "failed": f"{lines[0]} ... {lines[-1].strip()}" if len(lines) > 1 else lines[0]}


BF16_FLAGS = ("avx2", "avx512_bf16", "amx_bf16")


def cpu_flags(wanted=("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")) -> list[str]:
    """Which of these vector extensions /proc/cpuinfo lists (empty where it cannot be read)."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    flags = set(line.split(":", 1)[1].split())
    return [f for f in wanted if f in flags]


def machine(matmul_seconds: float = 2.0, bf16: bool = False) -> dict:
    """What ran the benchmark: CPU, vector extensions, threads, versions and the measured matmul rates
    (fp32; bf16 too with bf16=True)."""
    import torch
    import transformers

    from tunesmith.perf import measure_matmul_rate

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if bf16 else {})}
    rates = {f"{kind}_{n}": round(measure_matmul_rate("cpu", dtype, n, matmul_seconds) / 1e9, 1) for kind, dtype in dtypes.items() for n in (1024, 2048)}
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "vector_flags": cpu_flags(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "matmul_gflops": rates, "load_average": [round(x, 2) for x in os.getloadavg()]}


def tunesmith_command(data: dict, out: Path, flags: list[str] = ()) -> list[str]:
    """`tunesmith train TRAIN --test TEST --out OUT --overwrite` with these flags and no others (each option at its default)."""
    return [PYTHON, "-m", "tunesmith.cli", "train", str(data["train"]), "--test", str(data["test"]), *flags, "--out", str(out), "--overwrite"]


def tunesmith_train(data: dict, out: Path, epochs: float, batch_size: int, lr: float, seed: int, max_length: int = 128,
                    extra: list[str] = ()) -> list[str]:
    """The `tunesmith train` command of a benchmark run: no validation split (the peer has none), test scored at the end."""
    return tunesmith_command(data, out, ["--val-fraction", "0", "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(lr),
                                         "--seed", str(seed), "--max-length", str(max_length), *extra])


NOT_RECORDED = "not recorded"


def read_tunesmith_metrics(out: Path) -> dict:
    """The figures a benchmark reads from a run folder's metrics.json. refit and choices: whatever the run
    records (refit None: no refit; NOT_RECORDED where metrics.json has no such entry)."""
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    train = metrics["train"]
    return {"accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"].get("macro_f1"), "train_s": train["seconds"],
            "frozen_cache_s": train.get("frozen_cache_seconds", 0.0), "tokens": train["tokens"],
            "tokens_per_second": train["tokens_per_second"], "flops_per_token": train.get("flops_per_token"),
            "epochs": train.get("epochs"), "steps": train.get("steps"), "precision": train.get("precision"),
            "refit": metrics.get("refit", NOT_RECORDED), "choices": metrics.get("choices"),
            "eval_s": metrics["test"].get("seconds"), "job_s_inside": metrics["job_seconds"]}


def read_run_config(out: Path) -> dict:
    """The options a run folder's config.yaml records, flattened ({} when it has none)."""
    import yaml

    path = Path(out) / "config.yaml"
    if not path.is_file():
        return {}
    sections = yaml.safe_load(path.read_text()) or {}
    return {key: value for section in sections.values() if isinstance(section, dict) for key, value in section.items()}


def describe(value) -> str:
    """A short one-line form of a recorded value (a dict as key=value pairs) for a table cell."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={describe(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def peer_command(mode: str, data: dict, out_json: Path, epochs: float, batch_size: int, lr: float, seed: int,
                 max_length: int = 128, extra: list[str] = ()) -> list[str]:
    return [PYTHON, str(BENCH / "peer_trainer.py"), mode, str(data["train"]), str(data["test"]), str(epochs), str(out_json),
            "--model", base_model_folder(), "--batch-size", str(batch_size), "--lr", str(lr), "--seed", str(seed),
            "--max-length", str(max_length), *extra]


def base_model_folder(name: str = "minilm-l6") -> str:
    """The local folder of the embedded model tunesmith trains (fetched on first use): the peer loads the same files."""
    from tunesmith.assets.resolve import resolve_model_source

    return resolve_model_source(name)


def alternate(arms: list, rounds: int) -> list[tuple[int, object]]:
    """(round, arm) in an order that alternates which arm goes first, so drift in machine load
    does not always fall on the same side."""
    order = []
    for r in range(rounds):
        order.extend((r, arm) for arm in (arms if r % 2 == 0 else list(reversed(arms))))
    return order


def median(values: list[float]) -> float:
    values = sorted(values)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, heading, format); returns the table as text (markdown) and prints it."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    rule = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, rule]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            cells.append("-" if value is None else format(value, fmt) if fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def save_result(scenario: str, payload: dict) -> Path:
    """The payload as JSON in results/; its "markdown" (the tables) also beside it as .md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2))
    saved = [path]
    if payload.get("markdown"):
        saved.append(path.with_suffix(".md"))
        saved[-1].write_text(payload["markdown"] + "\n")
    print(f"\nSaved {', '.join(map(str, saved))}")
    return path
