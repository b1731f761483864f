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


def data_split(train_examples: int | None = None, seed: int = 0) -> dict[str, Path]:
    """The bundled rotten-tomatoes split; with train_examples, a fixed random subset of train.csv
    written once, so that both sides read the very same file."""
    import pandas as pd

    from tunesmith.assets import dataset_files

    files = dict(dataset_files("rotten-tomatoes"))
    if train_examples:
        table = pd.read_csv(files["train"])
        if train_examples < len(table):
            path = RESULTS / "data" / f"train-{train_examples}-seed{seed}.csv"
            if not path.is_file():
                path.parent.mkdir(parents=True, exist_ok=True)
                table.sample(n=train_examples, random_state=seed).to_csv(path, index=False)
            files["train"] = path
    return files


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


def machine(matmul_seconds: float = 2.0) -> dict:
    """What ran the benchmark: CPU, vector extensions, threads, versions and the measured matmul rates."""
    import torch
    import transformers

    from tunesmith.perf import measure_matmul_rate

    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    rates = {f"fp32_{n}": round(measure_matmul_rate("cpu", torch.float32, n, matmul_seconds) / 1e9, 1) for n in (1024, 2048)}
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "vector_flags": [f for f in wanted if f" {f}" in flags], "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "matmul_gflops": rates, "load_average": [round(x, 2) for x in os.getloadavg()]}


def tunesmith_train(data: dict, out: Path, epochs: float, batch_size: int, lr: float, seed: int, max_length: int = 128,
                    extra: list[str] = ()) -> list[str]:
    """The `tunesmith train` command of a benchmark run: no validation split (the peer has none), test scored at the end."""
    return [PYTHON, "-m", "tunesmith.cli", "train", str(data["train"]), "--test", str(data["test"]), "--val-fraction", "0",
            "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(lr), "--seed", str(seed),
            "--max-length", str(max_length), "--out", str(out), "--overwrite", *extra]


def read_tunesmith_metrics(out: Path) -> dict:
    metrics = json.loads((Path(out) / "metrics.json").read_text())
    train = metrics["train"]
    return {"accuracy": metrics["test"]["accuracy"], "train_s": train["seconds"], "tokens": train["tokens"],
            "tokens_per_second": train["tokens_per_second"], "flops_per_token": train.get("flops_per_token"),
            "eval_s": metrics["test"].get("seconds"), "job_s_inside": metrics["job_seconds"]}


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
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{scenario}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(payload, indent=2))
    print(f"\nSaved {path}")
    return path
