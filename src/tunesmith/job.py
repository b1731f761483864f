"""The training job: config -> data -> tokens -> model -> method -> fit -> run folder.

Everything that can fail because of the user's input (options, files, model name, output folder)
is checked before the first training step.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from .assets.resolve import load_pretrained, resolve_model_source
from .config import RunConfig
from .data import load_labeled_data
from .errors import TunesmithError
from .methods import adapt_model, get_method, resolve_learning_rate
from .methods.groups import count_parameters
from .perf import compute_dtype, freeze_word_embeddings, measure_matmul_rate, throughput, training_flops_per_token
from .report.plots import plot_curves
from .rundir import default_run_dir, prepare_run_dir, read_record, write_record
from .tasks import get_task
from .train.checkpoint import atomic_write_text
from .train.events import ProgressPrinter
from .train.fit import fit, make_accelerator
from .train.frozen_cache import TopOfModel, prepare_fit_inputs
from .train.infer import predict_logits

TASK = "text-classification"


def environment(device) -> dict:
    import accelerate
    import peft
    import transformers

    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "transformers": transformers.__version__, "accelerate": accelerate.__version__, "peft": peft.__version__,
            "device": str(device), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_training(cfg: RunConfig, console) -> tuple[Path, dict]:
    """Train as configured; returns the finished run folder and its metrics."""
    job_started = time.perf_counter()
    resolve_learning_rate(cfg.validate())
    method = get_method(cfg.method.method)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir = Path(cfg.output.out or default_run_dir(cfg.data.data or "run"))
    cfg.output.out = str(run_dir)

    # -- preflight: data in full, model, output folder ------------------------------------
    data = load_labeled_data(cfg.data, cfg.train.seed)
    console.print(f"Data: {data.describe()}; text column '{data.text_column}', label column '{data.label_column}'.")
    source = resolve_model_source(cfg.model.model)
    from transformers import AutoTokenizer

    tokenizer = load_pretrained(AutoTokenizer, source, cfg.model)
    task = get_task(TASK)(data.label_names)
    torch.manual_seed(cfg.train.seed)
    model = task.build_model(source, cfg.model)
    resume_from = prepare_run_dir(run_dir, cfg.output, expected_bytes=expected_run_bytes(model, cfg))
    if cfg.output.resume:
        check_same_config(run_dir, cfg)

    model, groups = adapt_model(model, cfg.method)  # the method decides what trains; the task head always does
    if cfg.method.freeze_word_embeddings:
        freeze_word_embeddings(model)
    trainable, total = count_parameters(model)
    console.print(f"Model: {cfg.model.model} ({total / 1e6:.1f}M parameters), method {method.name}: {trainable:,} trainable ({100 * trainable / total:.2f}%).")

    record = {"status": "running", "task": TASK, "method": method.name, "adapter": method.adapter, "base_model": cfg.model.model,
              "label_names": data.label_names, "text_column": data.text_column, "label_column": data.label_column,
              "text_pair_column": data.text_pair_column, "sources": data.sources}
    write_record(run_dir, record)
    atomic_write_text(run_dir / "config.yaml", rerunnable_config(cfg).to_yaml())

    # -- train ----------------------------------------------------------------------------
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encode = lambda table: task.encode(tokenizer, table, cfg.model.max_length) if table is not None else None  # noqa: E731
    train, validation, test = encode(data.train), encode(data.validation), encode(data.test)
    callbacks = [ProgressPrinter(console, cfg.train.metric)]
    if method.callbacks:
        callbacks += method.callbacks(model, cfg.method, groups, cfg.train)
    # frozen bottom layers run in eval mode and, where supported, their outputs are computed once
    accelerator = make_accelerator(cfg.train)
    frozen_throughout = 0 if method.callbacks else None  # a schedule that unfreezes groups runs uncached
    inputs = prepare_fit_inputs(model, task, train, validation, groups, cfg, pad_id, console, accelerator.device,
                                accelerator.autocast, frozen_throughout, disk_dir=run_dir)
    result = fit(inputs.model, inputs.task, inputs.train, inputs.validation, cfg, run_dir, groups, callbacks, resume_from, pad_id)
    model, state = result.model, result.state
    if isinstance(model, TopOfModel):
        model = model.model  # the real model shares the trained weights; it is what gets scored and saved

    # -- score and save -------------------------------------------------------------------
    device = make_accelerator(cfg.train).device
    metrics = {"validation": None, "test": None}
    if result.best_scores is not None:  # the last validation pass scored these very weights
        metrics["validation"] = result.best_scores
    elif validation is not None:  # from the cached features when there are some: the frozen layers need not run again
        logits, loss = predict_logits(inputs.model, inputs.task, inputs.validation, cfg.train.eval_batch_size, pad_id, device)
        metrics["validation"] = task.score(logits, validation.labels, loss)
    if test is not None:
        started = time.perf_counter()
        logits, loss = predict_logits(model, task, test, cfg.train.eval_batch_size, pad_id, device)
        metrics["test"] = task.score(logits, test.labels, loss)
        metrics["test"]["seconds"] = round(time.perf_counter() - started, 3)
        write_predictions(run_dir / "test_predictions.csv", data.test, task, logits)
    metrics["train"] = {"examples": len(train), "steps": state.step, "epochs": round(state.step / state.steps_per_epoch, 3),
                        "seconds": round(state.train_seconds, 2), "frozen_cache_seconds": round(inputs.cache_seconds, 2), "tokens": state.tokens,
                        "tokens_per_second": round(state.tokens / max(state.train_seconds, 1e-9), 1),
                        "best_step": state.best_step, "stopped": state.stop_reason or "completed",
                        "skipped_batches": state.skipped_batches, "final_grad_accum": state.grad_accum}
    # model FLOPs per token (cached frozen layers ran once, not per step) over the measured matmul rate
    flops = training_flops_per_token(model, groups, frozen_forward=not inputs.cached)["total"]
    rate = measure_matmul_rate(device.type, compute_dtype(device, accelerator.mixed_precision))
    metrics["train"].update(throughput(state.tokens, state.train_seconds, flops, rate))
    # gradual unfreezing trains more weights by the end than at the start
    metrics["parameters"] = {"trainable": trainable, "total": total, "trainable_at_end": count_parameters(model)[0]}
    metrics["peak_memory_mb"] = round(peak_memory_mb(), 1)
    save_model(model, tokenizer, run_dir, method.adapter)
    plot_curves(state.losses, state.history, cfg.train.metric, run_dir / "curves.png", title=f"{cfg.model.model} / {method.name} on {Path(cfg.data.data).name}")
    metrics["job_seconds"] = round(time.perf_counter() - job_started, 2)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(run_dir / "environment.json", json.dumps(dict(environment(device), seed=cfg.train.seed), indent=2))
    record["status"] = "done"
    write_record(run_dir, record)
    return run_dir, metrics


def expected_run_bytes(model, cfg) -> int:
    """Final model + kept checkpoints (weights and two AdamW moments each) + best weights."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights * (2 + 3 * (cfg.train.keep_checkpoints + 1))


def config_differences(run_dir: Path, cfg: RunConfig) -> list[str]:
    """Options (other than where and how fast it runs) in which cfg differs from the run folder's config.yaml."""
    saved = RunConfig.from_yaml(Path(run_dir) / "config.yaml").to_dict()
    now = cfg.to_dict()
    ignore = {"resume", "overwrite", "out", "threads", "device", "cache_frozen"}
    return [f"{k} ({saved[s][k]!r} -> {now[s][k]!r})" for s in saved for k in saved[s] if k not in ignore and saved[s][k] != now[s][k]]


def rerunnable_config(cfg: RunConfig) -> RunConfig:
    """The config as saved in the run folder: `--config` on it starts the same run afresh."""
    import copy

    saved = copy.deepcopy(cfg)
    saved.output.resume = saved.output.overwrite = False
    return saved


def check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    diffs = config_differences(run_dir, cfg)
    if diffs:
        raise TunesmithError(f"--resume continues the run as it was configured, but these options differ from its config.yaml: {', '.join(diffs[:5])}; "
                             f"drop them, or start a new run in another --out.")


def write_predictions(path: Path, table: pd.DataFrame, task, logits) -> None:
    labels, probs = task.decode(logits)
    out = pd.DataFrame({"text": table["text"]})
    if "text_pair" in table:
        out["text_pair"] = table["text_pair"]
    out["label"] = [task.label_names[i] for i in table["label"]]
    out["prediction"] = labels
    out["confidence"] = probs.max(-1).round(5)
    for i, name in enumerate(task.label_names):
        out[f"p({name})"] = probs[:, i].round(5)
    tmp = path.with_name(f".tmp-{path.name}")
    out.to_csv(tmp, index=False)
    tmp.replace(path)


def save_model(model, tokenizer, run_dir: Path, adapter: bool) -> None:
    """HF format (safetensors) at the top of the run folder, written beside it then moved in;
    adapter methods save the adapter alone (methods/loading.py)."""
    from .methods.loading import save_run_model

    tmp = run_dir / ".tmp-model"
    shutil.rmtree(tmp, ignore_errors=True)
    save_run_model(model, tmp)
    tokenizer.save_pretrained(tmp)
    for path in tmp.iterdir():
        os.replace(path, run_dir / path.name)
    tmp.rmdir()


def finished_record(run_dir: Path) -> dict:
    """run.json of a finished run, or a clear error."""
    run_dir = Path(run_dir)
    record = read_record(run_dir)
    if not run_dir.is_dir():
        raise TunesmithError(f"Run folder '{run_dir}' does not exist; give the --out folder of a `tunesmith train` run.")
    if record is None:
        raise TunesmithError(f"'{run_dir}' is not a tunesmith run folder (no run.json); give the --out folder of a `tunesmith train` run.")
    if record.get("status") != "done":
        raise TunesmithError(f"The run in '{run_dir}' did not finish (status: {record.get('status')}); resume it with `tunesmith train ... --out {run_dir} --resume`.")
    return record
