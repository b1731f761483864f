"""`tunesmith compare`: several fine-tuning methods on the same data, split and seed, side by side.

Each method trains in its own process (`python -m tunesmith.cli train --config OUT/configs/M.yaml`,
the config holding `--method M --out OUT/M` and every other option), so its time and peak memory
are its own and one method's failure cannot take the others down. Finished run folders are
reused and unfinished ones continue with --resume, so a comparison that was stopped picks up where
it left off. The table goes to the terminal, OUT/comparison.csv and OUT/comparison.md; the plot of
metric against train time to OUT/comparison.png.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig
from .errors import TunesmithError
from .rundir import read_record
from .atomic import atomic_file, atomic_write_text


@dataclass
class MethodResult:
    method: str
    status: str             # trained, resumed, reused or failed
    run_dir: Path
    metrics: dict | None = None
    message: str = ""       # why it failed
    lr: float | None = None  # its peak learning rate (--lr, or the method's default)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class Comparison:
    out: Path
    metric: str
    results: list[MethodResult] = field(default_factory=list)

    @property
    def failed(self) -> list[MethodResult]:
        return [r for r in self.results if not r.ok]


# -- options ----------------------------------------------------------------------------------

def parse_method_list(text: str | None) -> list[str]:
    """'full,lora, head' -> ['full', 'lora', 'head'] (default: every registered method), each checked."""
    from .methods import METHODS, get_method

    names = [n.strip() for n in (text or ",".join(METHODS)).split(",") if n.strip()]
    if not names:
        raise TunesmithError("--methods is empty; give method names separated by commas, e.g. --methods full,freeze,lora.")
    for name in names:
        get_method(name)
    return list(dict.fromkeys(names))


def parse_method_options(text: str | None, methods: list[str]) -> dict[str, dict[str, str]]:
    """'lora:lr=5e-4,head:lr=1e-3' -> {'lora': {'lr': '5e-4'}, 'head': {'lr': '1e-3'}}."""
    options: dict[str, dict[str, str]] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        method, _, setting = item.partition(":")
        key, eq, value = setting.partition("=")
        if not (method and eq and key.strip() and value.strip()):
            raise TunesmithError(f"--method-options item '{item}' must look like method:option=value, e.g. lora:lr=5e-4.")
        if method.strip() not in methods:
            raise TunesmithError(f"--method-options item '{item}' names method '{method.strip()}', which is not in --methods ({', '.join(methods)}).")
        options.setdefault(method.strip(), {})[key.strip().replace("-", "_")] = value.strip()
    return options


def default_compare_dir(data: str) -> Path:
    return Path("runs") / f"compare-{Path(data).name.split('.')[0] or 'data'}"


def method_config(base: RunConfig, method: str, overrides: dict, run_dir: Path) -> RunConfig:
    cfg = copy.deepcopy(base)
    cfg.update(overrides, source=f"--method-options for {method}")
    cfg.method.method = method
    cfg.output.out = str(run_dir)
    cfg.output.resume = cfg.output.overwrite = False  # per call, as flags
    return cfg.validate()  # lr None: each run resolves its method's default for its model, unless --lr or --method-options set one


# -- running one method -----------------------------------------------------------------------

def run_child(command: list[str], log_path: Path, label: str, console) -> tuple[int, str]:
    """Run one `tunesmith train`, echoing its lines and keeping them in the log; (exit code, its error)."""
    from rich.text import Text

    # the child's console is a pipe: give it the parent's width (less the prefix) instead of 80 columns
    env = dict(os.environ, COLUMNS=str(max(console.width - len(label) - 5, 100)), PYTHONUNBUFFERED="1")
    error = ""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8") as log, subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env) as child:
        try:
            for line in child.stdout:
                log.write(line)
                console.print(Text(f"  {label} | ", style="dim") + Text(line.rstrip()), highlight=False, soft_wrap=True)
                if line.startswith("error: "):
                    error = line[len("error: "):].strip()
        except KeyboardInterrupt:
            child.wait()  # Ctrl-C reached the child too: it writes a checkpoint and stops
            raise
    if child.returncode and not error:
        error = f"exit code {child.returncode}; see {log_path}"
    return child.returncode, error


def run_method(cfg: RunConfig, out: Path, overwrite: bool, console) -> MethodResult:
    """Reuse a finished run, resume an unfinished one, or train from scratch."""
    from .job import config_differences

    method, run_dir = cfg.method.method, Path(cfg.output.out)
    record = read_record(run_dir)
    if record is not None and record.get("status") == "done" and not overwrite:
        diffs = config_differences(run_dir, cfg)
        if diffs:
            return MethodResult(method, "failed", run_dir, message=f"its finished run in {run_dir} was made with other options: {', '.join(diffs[:4])}; "
                                                                     f"pass --overwrite to retrain it, or choose another --out")
        console.print(f"[bold]{method}[/bold]: finished run reused ({run_dir}).")
        return MethodResult(method, "reused", run_dir, read_metrics(run_dir))
    config_path = out / "configs" / f"{method}.yaml"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_path, cfg.to_yaml())
    resume = record is not None and not overwrite
    flags = ["--resume"] if resume else ["--overwrite"] if overwrite else []
    console.print(f"[bold]{method}[/bold]: {'resuming' if resume else 'training'}: tunesmith train --config {config_path} {' '.join(flags)}".rstrip())
    code, error = run_child([sys.executable, "-m", "tunesmith.cli", "train", "--config", str(config_path), *flags],
                            out / "logs" / f"{method}.log", method, console)
    if code:
        return MethodResult(method, "failed", run_dir, message=error)
    return MethodResult(method, "resumed" if resume else "trained", run_dir, read_metrics(run_dir))


def read_metrics(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))


# -- the comparison ---------------------------------------------------------------------------

def compare(base: RunConfig, methods: list[str], method_options: dict[str, dict] | None = None, console=None) -> Comparison:
    """Train (or reuse) every method in its own process, then write the table and the plot.

    `base` holds the options shared by all methods; its --out is the comparison folder.
    """
    if console is None:
        from rich.console import Console

        console = Console(highlight=False)
    out = Path(base.output.out or default_compare_dir(base.data.data or "data"))
    configs = [method_config(base, m, (method_options or {}).get(m, {}), out / m) for m in methods]  # every option checked first
    out.mkdir(parents=True, exist_ok=True)
    comparison = Comparison(out, base.train.metric)
    for cfg in configs:
        result = run_method(cfg, out, base.output.overwrite, console)
        result.lr = cfg.train.lr if cfg.train.lr is not None else (read_record(result.run_dir) or {}).get("lr")
        comparison.results.append(result)
    comparison.metric = chosen_metric(comparison)
    if base.model.model == "auto":  # the runs chose the task's default: name it in the table and plot
        chosen = (read_record(r.run_dir) for r in comparison.results if r.status != "failed")
        base.model.model = next((record["base_model"] for record in chosen if record and record.get("base_model")), base.model.model)
    rows = table_rows(comparison)
    write_csv(rows, out / "comparison.csv")
    write_markdown(rows, base, method_options or {}, out / "comparison.md")
    plot_comparison(comparison, out / "comparison.png", title=f"{Path(base.data.data).name}, {base.model.model}")
    print_table(rows, console, title=f"Comparison on {base.data.data} ({base.model.model}, seed {base.train.seed})")
    done = len(comparison.results) - len(comparison.failed)
    console.print(f"{done} of {len(comparison.results)} methods finished. Table: {out / 'comparison.md'}, {out / 'comparison.csv'}; plot: {out / 'comparison.png'}.")
    for r in comparison.failed:
        console.print(f"[red]{r.method} failed[/red]: {r.message}")
    return comparison


def chosen_metric(comparison: Comparison) -> str:
    """The metric the runs picked their weights by: --metric, or what `auto` chose for this data (the same for every method)."""
    if comparison.metric != "auto":
        return comparison.metric
    for r in comparison.results:
        if r.ok:
            return RunConfig.from_yaml(r.run_dir / "config.yaml").train.metric
    return "loss"  # no run finished: every task has a loss


def train_seconds(metrics: dict) -> float:
    """The training loop plus computing the frozen layers' outputs, when they were cached."""
    return round(metrics["train"]["seconds"] + metrics["train"].get("frozen_cache_seconds", 0.0), 2)


def trainable_count(metrics: dict) -> int:
    """Trainable parameters; gradual unfreezing reports how many train by the end."""
    params = metrics["parameters"]
    return max(params["trainable"], params.get("trainable_at_end") or 0)


def table_rows(comparison: Comparison) -> list[dict]:
    metric = comparison.metric
    rows = []
    for r in comparison.results:
        m = r.metrics or {}
        split = lambda name: (m.get(name) or {}).get(metric)  # noqa: E731
        rows.append({"method": r.method, "status": r.status, "lr": r.lr,
                     "trainable_params": trainable_count(m) if m else None,
                     "total_params": m["parameters"]["total"] if m else None,
                     "train_seconds": train_seconds(m) if m else None,
                     "peak_memory_mb": m.get("peak_memory_mb"),
                     f"val_{metric}": split("validation"), f"test_{metric}": split("test"),
                     "run_dir": str(r.run_dir), "message": r.message})
    return rows


def compact_count(n: int) -> str:
    """1,122 / 24.4k / 22.71M: parameter counts at a glance (the CSV keeps them exact)."""
    if n < 10_000:
        return f"{n:,}"
    return f"{n / 1e3:.1f}k" if n < 1_000_000 else f"{n / 1e6:.2f}M"


def cell(key: str, value) -> str:
    if value is None:
        return "-"
    if key.endswith("_params"):
        return compact_count(value)
    if key == "train_seconds":
        return f"{value:,.1f}"
    if key == "peak_memory_mb":
        return f"{value:,.0f}"
    if key == "lr":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


HEADERS = {"method": "method", "status": "status", "trainable_params": "trainable", "total_params": "total params",
           "train_seconds": "train s", "peak_memory_mb": "peak MB"}


def header(key: str, sep: str = " ") -> str:
    """Column titles; the terminal table puts the metric's name on a second line to stay narrow."""
    return HEADERS.get(key) or key.replace("val_", f"val{sep}").replace("test_", f"test{sep}")


def shown_columns(rows: list[dict]) -> list[str]:
    return [k for k in rows[0] if k not in ("run_dir", "message")]


def print_table(rows: list[dict], console, title: str) -> None:
    print_fitted_table(console, lambda keys, titled: comparison_table(rows, keys, title if titled else None), shown_columns(rows))


def comparison_table(rows: list[dict], keys: list[str], title: str | None):
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD)
    for key in keys:
        table.add_column(header(key, sep="\n"), justify="left" if key in ("method", "status") else "right", overflow="fold")
    for row in rows:
        table.add_row(*(cell(k, row[k]) for k in keys), style="red" if row["status"] == "failed" else None)
    return table


def print_fitted_table(console, make_table, keys: list[str]) -> None:
    """Print make_table(keys, titled) within the console's width, never cutting a cell: a table too wide for it
    is printed as several, each repeating the first column (as pandas wraps a wide frame), so every number
    stays whole on one line; only a single column wider than the console folds its cells."""
    for i, block in enumerate(column_blocks(console, make_table, keys)):
        console.print(make_table([keys[0], *block], i == 0))


def column_blocks(console, make_table, keys: list[str]) -> list[list[str]]:
    """keys[1:] in consecutive groups, each as many as fit beside keys[0] in the console's width."""
    blocks: list[list[str]] = [[]]
    for key in keys[1:]:
        if blocks[-1] and natural_width(console, make_table([keys[0], *blocks[-1], key], False)) > console.width:
            blocks.append([])
        blocks[-1].append(key)
    return blocks


def natural_width(console, table) -> int:
    """The table's width with no limit on it (a measurement is capped at the width it is given)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update_width(10**6), table).maximum


def write_csv(rows: list[dict], path: Path) -> None:
    import pandas as pd

    with atomic_file(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def write_markdown(rows: list[dict], base: RunConfig, method_options: dict, path: Path) -> None:
    keys = shown_columns(rows)
    overrides = "; ".join(f"{m}: " + ", ".join(f"{k}={v}" for k, v in o.items()) for m, o in method_options.items() if o)
    lines = [f"# Fine-tuning methods compared on {base.data.data}", "",
             f"Base model {base.model.model}; every method on the same split and seed ({base.train.seed}); "
             + (f"{base.train.epochs:g} epochs" if base.train.epochs is not None else "epochs chosen from the data size (each run's config.yaml)")
             + f", batch size {base.train.batch_size}, "
             + (f"lr {base.train.lr:g}" if base.train.lr is not None else "each method's default lr (in the table)")
             + (f"; per method: {overrides}." if overrides else "."),
             "Train time is the training loop plus computing cached frozen-layer outputs (not loading or the final scoring); peak memory is the training process's (RSS on CPU, allocated on GPU).", "",
             "| " + " | ".join(header(k) for k in keys) + " |",
             "|" + "|".join("---" if k in ("method", "status") else "---:" for k in keys) + "|"]
    lines += ["| " + " | ".join(cell(k, row[k]) for k in keys) + " |" for row in rows]
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        lines += ["", *(f"- {row['method']} failed: {row['message']}" for row in failed)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def plot_comparison(comparison: Comparison, path: Path, title: str = "") -> None:
    """Metric against train time; point area grows with the trainable parameters."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in comparison.results if r.ok]
    use_test = any((r.metrics or {}).get("test") for r in done)
    split = "test" if use_test else "validation"
    points = [(r.method, train_seconds(r.metrics), r.metrics[split][comparison.metric], trainable_count(r.metrics))
              for r in done if (r.metrics.get(split) or {}).get(comparison.metric) is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if points:
        largest = max(p[3] for p in points) or 1
        for name, seconds, value, trainable in points:
            area = 30 + 1200 * trainable / largest  # points^2
            ax.scatter(seconds, value, s=area, alpha=0.55, edgecolors="black", linewidths=0.6)
            ax.annotate(f"{name}\n{compact_count(trainable)} trained", (seconds, value), textcoords="offset points",
                        xytext=((area / 3.14) ** 0.5 + 4, 0), va="center", fontsize=8)
        times = [p[1] for p in points if p[1] > 0]
        if times and max(times) / min(times) > 20:
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "no finished method to plot", ha="center", va="center", transform=ax.transAxes)
    ax.margins(x=0.2, y=0.2)  # room for the labels beside the largest points
    ax.set_xlabel("train time (s)")
    ax.set_ylabel(f"{split} {comparison.metric}")
    ax.set_title(f"{title}\npoint area grows with trainable parameters", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
