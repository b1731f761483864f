"""The training job: config -> data -> tokens -> model -> method -> fit -> run folder.

Everything that can fail because of the user's input (options, files, model name, output folder)
is checked before the first training step.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import resource
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .answers import ANSWERS_MD, answer, held_out_prompts, write_answers
from .assets.resolve import resolve_model_source
from .config import RunConfig
from .data.sources import read_data_file, resolve_sources
from .errors import TunesmithError
from .methods import adapt_model, get_method, resolve_learning_rate, resolve_method
from .methods.quantize import check_quantize
from .architectures import count_parameters
from .perf import (compute_dtype, counts_every_flop, freeze_word_embeddings, measure_matmul_rate, throughput,
                   training_flops_per_token)
from .report.plots import plot_curves
from .rundir import default_run_dir, hold_run_lock, prepare_run_dir, read_record, write_record
from .tasks import choose_task, metric_named, resolve_max_length
from .tasks.protocol import pad_id_of
from .atomic import atomic_file, atomic_write_text
from .train.checkpoint import list_checkpoints
from .train.events import ProgressPrinter
from .train.fit import fit, make_accelerator
from .train.frozen_cache import TopOfModel, prepare_fit_inputs
from .train.infer import predict_outputs
from .train.plan import refit_epochs, resolve_training_choices
from .train.precision import autocast_for, choose_precision


def environment(device) -> dict:
    from importlib.metadata import version  # not `import peft`: a quarter second for its version string

    return {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
            "transformers": version("transformers"), "accelerate": version("accelerate"), "peft": version("peft"),
            "device": str(device), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_training(cfg: RunConfig, console) -> tuple[Path, dict]:
    """Train as configured; returns the finished run folder and its metrics."""
    with ExitStack() as stack:  # holds the run folder's lock from the preflight's end to the last file written
        return train_in_run_folder(cfg, console, stack)


def train_in_run_folder(cfg: RunConfig, console, stack: ExitStack) -> tuple[Path, dict]:
    job_started = time.perf_counter()
    cfg.validate()  # the method is resolved with the task, the learning rate with the model (build_adapted_model)
    if cfg.method.method != "auto":
        get_method(cfg.method.method)  # a misspelled --method before any data is read
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    run_dir = (Path(cfg.output.out) if cfg.output.out
               else default_run_dir(cfg.data.data or "run", cfg.output.resume, cfg.output.overwrite, say=console.print))
    cfg.output.out = str(run_dir)

    # -- preflight: task and data in full, training choices, model, output folder -----------
    task, data = prepare_task_data(cfg, console)
    method = get_method(resolve_method(cfg, task).method.method)
    check_quantize(cfg.model, method.name, task)
    refit, choices = resolve_training_choices(cfg, len(data.train), data.validation_from_split, task.default_metric(data))
    for reason in choices.reasons:
        console.print(reason)
    source = resolve_model_source(cfg.model.model)
    tokenizer = task.load_preprocessor(source, cfg.model)  # a tokenizer for text, an image processor for images
    model, groups = build_adapted_model(task, source, cfg)
    resume_from = prepare_run_dir(run_dir, cfg.output, expected_bytes=expected_run_bytes(model, cfg))
    stack.enter_context(hold_run_lock(run_dir))  # after prepare_run_dir, which may empty and create the folder
    previous = read_record(run_dir) if cfg.output.resume else None
    if cfg.output.resume:
        check_same_config(run_dir, cfg)
    device = make_accelerator(cfg.train).device
    # a resumed run keeps the precision it started with: a new measurement must not change its arithmetic
    precision, why = (previous["precision"], "as the run started") if previous and previous.get("precision") else \
        choose_precision(cfg.train.precision, device, model)
    console.print(f"Precision: {why}.")
    trainable, total = count_parameters(model)
    console.print(f"Model: {cfg.model.model} ({total / 1e6:.1f}M parameters), method {method.name}: {trainable:,} trainable ({100 * trainable / total:.2f}%).")

    record = {**({"before_answers": previous["before_answers"]} if previous and "before_answers" in previous else {}),
              "status": "running", "task": task.name, "method": method.name, "adapter": method.adapter, "base_model": cfg.model.model,
              **task.record(), "sources": data.sources, "precision": precision, "lr": cfg.train.lr}
    write_record(run_dir, record)
    atomic_write_text(run_dir / "config.yaml", config_file_text(rerunnable_config(cfg), choices.reasons))

    # -- train: pick the epochs on validation, then (refit) train again on all the data ----
    pad_id = pad_id_of(tokenizer)
    encode = lambda table: task.encode(tokenizer, table, cfg.model.max_length) if table is not None else None  # noqa: E731
    train, validation, test = encode(data.train), encode(data.validation), encode(data.test)
    for split, features in (("training", train), ("validation", validation), ("test", test)):
        for note in getattr(features, "notes", None) or ():  # what encoding changed (conversations cut to --max-length)
            console.print(f"Note ({split}): {note}")
    attach_base_outputs(task, model, (train, validation, test), cfg, pad_id, device, precision)
    reference = task.reference_features(tokenizer, cfg.model.max_length) if hasattr(task, "reference_features") else None
    before = (previous or {}).get("before")  # a resumed run measured its base model when it started
    if getattr(task, "scores_before_training", False) and before is None:
        before = score_splits(model, task, {"validation": validation, "test": test, "reference": reference and reference[1]},
                              cfg, pad_id, device, precision)
        for split, scores in before.items():
            console.print(f"Before fine-tuning, {reference[0] if split == 'reference' else split}: loss {scores['loss']:.4f}, "
                          f"perplexity {scores['perplexity']:.2f}.")
    answer_split, prompts = held_out_answer_prompts(task, data, cfg)
    if prompts and "before_answers" not in record:  # a resumed run keeps the answers its base model gave
        record["before_answers"] = answer(model, tokenizer, prompts)
    if before is not None:  # run.json keeps them: a resumed run does not measure a base model it no longer has
        record["before"] = before
    if before is not None or prompts:
        write_record(run_dir, record)
    selection = read_selection(run_dir) if cfg.output.resume else None
    if selection is None:
        phase = train_phase(model, groups, task, train, validation, cfg, run_dir, resume_from, pad_id, precision, console, method)
        selection = summarise_phase(phase, validation, task, cfg, pad_id, device, precision)
        if refit:
            atomic_write_text(run_dir / SELECTION_FILE, json.dumps(selection))
    tuned = selection.get("tuned", {})  # a selection.json written before tasks tuned anything has none
    task.use_tuned(tuned)
    for name, value in tuned.items():
        console.print(f"Tuned on validation: {name} = {value:.4g}.")
    record.update(task.record())
    final = phase if not refit else None
    if refit:
        phase = model = groups = None  # the selection model is not kept: free it before building the next
        epochs = refit_epochs(selection["best_step"], selection["steps"], selection["steps_per_epoch"])
        console.print(f"Refit: training again on {len(data.train) + len(data.validation):,} examples (training + validation) "
                      f"for {epochs:.3g} epochs, the length that scored best.")
        all_data = encode(pd.concat([data.train, data.validation], ignore_index=True))
        refit_cfg = copy.deepcopy(cfg)
        refit_cfg.train.epochs, refit_cfg.train.early_stopping = epochs, 0
        model, groups = build_adapted_model(task, source, cfg)
        attach_base_outputs(task, model, (all_data,), cfg, pad_id, device, precision)
        refit_dir = run_dir / "refit"
        checkpoints = list_checkpoints(refit_dir / "checkpoints")
        final = train_phase(model, groups, task, all_data, None, refit_cfg, refit_dir, checkpoints[-1] if checkpoints else None,
                            pad_id, precision, console, method)
    model, state, inputs = final.model, final.state, final.inputs

    # -- score and save -------------------------------------------------------------------
    autocast = autocast_for(precision, device)
    metrics = {"validation": selection["validation"], "test": None}
    if test is not None:
        started = time.perf_counter()
        outputs, loss = predict_outputs(model, task, test, cfg.train.eval_batch_size, pad_id, device, autocast)
        metrics["test"] = task.score(outputs, test, loss)
        metrics["test"]["seconds"] = round(time.perf_counter() - started, 3)
        with atomic_file(run_dir / "test_predictions.csv") as tmp:
            task.predictions_table(outputs, data.test).to_csv(tmp, index=False)
    if before is not None:
        metrics["before"] = before
    if reference is not None and before and "reference" in before:
        after = score_splits(model, task, {"reference": reference[1]}, cfg, pad_id, device, precision)["reference"]
        metrics["forgetting"] = forgetting(reference[0], before["reference"], after)
        console.print(forgetting_line(metrics["forgetting"]))
    # a refit run's training is both phases: the selection's loop and cache, then the refit's
    loop_seconds = state.train_seconds + (selection["seconds"] if refit else 0.0)
    cache_seconds = inputs.cache_seconds + (selection["cache_seconds"] if refit else 0.0)
    train_seconds = loop_seconds + cache_seconds
    tokens = state.tokens + (selection["tokens"] if refit else 0)
    metrics["train"] = {"examples": len(inputs.train), "steps": state.step, "epochs": round(state.step / state.steps_per_epoch, 3),
                        "seconds": round(loop_seconds, 2), "frozen_cache_seconds": round(cache_seconds, 2), "tokens": tokens,
                        "tokens_per_second": round(tokens / max(train_seconds, 1e-9), 1), "unit": getattr(task, "throughput_unit", "tokens"),
                        "precision": precision,
                        "best_step": selection["best_step"], "stopped": selection["stopped"],
                        "skipped_batches": state.skipped_batches, "final_grad_accum": state.grad_accum}
    metrics["refit"] = ({"selection_examples": len(train), "selection_steps": selection["steps"], "selection_seconds": selection["seconds"],
                         "best_step": selection["best_step"], "examples": len(inputs.train), "epochs": round(state.step / state.steps_per_epoch, 3),
                         "steps": state.step, "seconds": round(state.train_seconds, 2)} if refit else None)
    metrics["choices"] = choices.reasons
    metrics["tuned"] = tuned
    metrics["curves"] = {"losses": selection["losses"], "history": selection["history"], "refit_losses": state.losses if refit else None}
    # model FLOPs per token (cached frozen layers ran once, not per step) over the matmul rate of the precision used
    flops = training_flops_per_token(model, groups, frozen_forward=not inputs.cached)["total"] if counts_every_flop(model) else None
    rate = measure_matmul_rate(device.type, compute_dtype(precision))
    metrics["train"].update(throughput(tokens, train_seconds, flops, rate))
    # gradual unfreezing trains more weights by the end than at the start
    metrics["parameters"] = {"trainable": trainable, "total": total, "trainable_at_end": count_parameters(model)[0]}
    metrics["peak_memory_mb"] = round(peak_memory_mb(), 1)
    scored = "test" if metrics["test"] else "validation"
    metrics["warnings"] = task.warnings(metrics[scored], scored) if metrics[scored] else []
    metrics["task"] = task.name
    for name, value in tuned.items():  # stored with the model too: config.json's tunesmith_threshold, ...
        setattr(model.config, f"tunesmith_{name}", value)
    save_model(model, tokenizer, run_dir, method.adapter)
    if prompts:
        write_answers(run_dir, answer_split, prompts, record["before_answers"], answer(model, tokenizer, prompts))
        console.print(f"Answers to {len(prompts)} held-out {answer_split} prompts, before and after fine-tuning: {run_dir / ANSWERS_MD}.")
    # the loss has its own panel: the right one shows the selection metric, or the task's first other one
    plotted = cfg.train.metric if cfg.train.metric != "loss" else next((m.name for m in task.metrics if m.name != "loss"), "loss")
    plot_curves(selection["losses"], selection["history"], plotted, run_dir / "curves.png",
                title=f"{cfg.model.model} / {method.name} on {Path(cfg.data.data).name}")
    metrics["job_seconds"] = round(time.perf_counter() - job_started, 2)
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2))
    atomic_write_text(run_dir / "environment.json", json.dumps(dict(environment(device), seed=cfg.train.seed), indent=2))
    record["status"] = "done"
    write_record(run_dir, record)
    for line in task.summary_lines(metrics[scored], scored) if metrics[scored] else []:
        console.print(line)
    for warning in metrics["warnings"]:
        console.print(f"[bold yellow]Warning:[/bold yellow] {warning}")
    return run_dir, metrics


def score_splits(model, task, splits: dict, cfg, pad_id: int, device, precision: str) -> dict:
    """The task's scores of each given split (None: left out) with the model as it is."""
    scored = {}
    for split, features in splits.items():
        if features is not None:
            outputs, loss = predict_outputs(model, task, features, cfg.train.eval_batch_size, pad_id, device, autocast_for(precision, device))
            scored[split] = task.score(outputs, features, loss)
    return scored


def held_out_answer_prompts(task, data, cfg) -> tuple[str, list[dict]]:
    """(split, prompts) a task that writes text answers before and after training (answers.py); none for the others."""
    if not getattr(task, "writes_answers", False) or not cfg.task.answer_prompts:
        return "", []
    split, table = ("test", data.test) if data.test is not None else ("validation", data.validation)
    return split, held_out_prompts(table, cfg.task.answer_prompts)


def attach_base_outputs(task, model, splits, cfg, pad_id: int, device, precision: str) -> None:
    """For a task that compares the tuned model with the model it started from (DPO's frozen reference), the
    base model's outputs on each split, as `features.base_outputs`: computed once here, before the first step
    (an adapter starts as the identity, so the model as built is the base), so that no second copy of the
    model is held in memory while training. A resumed run computes them again from the rebuilt base."""
    if getattr(task, "needs_base_outputs", False):
        for features in splits:
            if features is not None:
                features.base_outputs = None  # the pass below runs the base model alone
                features.base_outputs = predict_outputs(model, task, features, cfg.train.eval_batch_size, pad_id, device,
                                                        autocast_for(precision, device))[0]


def forgetting(text: str, before: dict, after: dict) -> dict:
    """How much worse the model predicts a general text it was not fine-tuned on: what it lost."""
    return {"text": text, "tokens": before.get("target_tokens"), "perplexity_before": before["perplexity"],
            "perplexity_after": after["perplexity"], "change_percent": round(100 * (after["perplexity"] / before["perplexity"] - 1), 2)}


def forgetting_line(result: dict) -> str:
    change = result["change_percent"]
    verdict = "it lost little" if change < 5 else "it forgot some of its general language" if change < 25 else \
        "it forgot much of its general language: try fewer epochs, a lower --lr, or --method lora"
    return (f"Forgetting: perplexity on {result['text']} went from {result['perplexity_before']:.2f} to {result['perplexity_after']:.2f} "
            f"({change:+.1f}%): {verdict}.")


SELECTION_FILE = "selection.json"  # the first phase of a refit run: how long to train, and its validation scores


@dataclass
class Phase:
    model: torch.nn.Module
    state: object
    inputs: object
    best_scores: dict | None


def prepare_task_data(cfg: RunConfig, console):
    """The task (--task, or inferred from the training file) and its validated splits, with notes printed."""
    sources = resolve_sources(cfg.data)
    raw = read_data_file(sources["train"], cfg.data.encoding, role="training")
    task_cls, why = choose_task(cfg.task.task, raw, cfg.data)
    if cfg.train.metric != "auto":
        metric_named(task_cls, cfg.train.metric)  # a wrong --metric is refused before the data is prepared
    resolve_max_length(cfg, task_cls)  # before prepare, which may size windows by it
    if cfg.model.model == "auto":  # before prepare, which may check the base model fits the task
        cfg.model.model = task_cls.default_model
        console.print(f"Base model: {task_cls.default_model}, the embedded default for {task_cls.name}; --model to choose another.")
    task, data = task_cls.prepare(raw, sources, cfg, cfg.train.seed)
    if cfg.task.task == "auto":
        cfg.task.task = task.name  # config.yaml records what ran
        console.print(f"Task: {task.name} ({why}); --task to choose another.")

    console.print(f"Data: {data.summary}; {data.columns}.")
    for note in data.notes:
        console.print(f"Note: {note}")
    return task, data


def build_adapted_model(task, source, cfg):
    """The task model from the base weights, seeded, with the method applied: the same every time."""
    torch.manual_seed(cfg.train.seed)
    model = task.build_model(source, cfg.model)
    resolve_learning_rate(cfg, model)  # --lr, else the default of the method for this model family
    model, groups = adapt_model(model, cfg.method, task)  # the method decides what trains; the task head always does
    if cfg.method.freeze_word_embeddings:
        freeze_word_embeddings(model)
    return model, groups


def train_phase(model, groups, task, train, validation, cfg, run_dir: Path, resume_from, pad_id: int, precision: str, console, method) -> Phase:
    """One fit(): frozen layers cached where they can be, then the loop."""
    callbacks = [ProgressPrinter(console, cfg.train.metric)]
    if method.callbacks:
        callbacks += method.callbacks(model, cfg.method, groups, cfg.train)
    accelerator = make_accelerator(cfg.train)
    frozen_throughout = 0 if method.callbacks else None  # a schedule that unfreezes groups runs uncached
    inputs = prepare_fit_inputs(model, task, train, validation, groups, cfg, pad_id, console, accelerator.device,
                                autocast_for(precision, accelerator.device), frozen_throughout, disk_dir=run_dir)
    result = fit(inputs.model, inputs.task, inputs.train, inputs.validation, cfg, run_dir, groups, callbacks, resume_from, pad_id, precision)
    model = result.model.model if isinstance(result.model, TopOfModel) else result.model  # the real model shares the trained weights
    return Phase(model, result.state, inputs, result.best_scores)


def summarise_phase(phase: Phase, validation, task, cfg, pad_id: int, device, precision: str) -> dict:
    """What the selection phase decided (plain JSON, so a resumed refit need not run it again)."""
    scores, tuned = phase.best_scores, {}  # the last validation pass scored these very weights
    if validation is not None and (scores is None or task.tunes_on_validation):  # from the cached features when there are some
        outputs, loss = predict_outputs(phase.inputs.model, phase.inputs.task, phase.inputs.validation, cfg.train.eval_batch_size, pad_id,
                                        device, autocast_for(precision, device))
        if task.tunes_on_validation:
            tuned = task.tune(outputs, phase.inputs.validation)
        scores = task.score(outputs, phase.inputs.validation, loss)
    state = phase.state
    return {"validation": scores, "tuned": tuned, "best_step": state.best_step, "steps": state.step, "steps_per_epoch": state.steps_per_epoch,
            "seconds": round(state.train_seconds, 2), "cache_seconds": round(phase.inputs.cache_seconds, 2), "tokens": state.tokens,
            "stopped": state.stop_reason or "completed", "losses": state.losses, "history": state.history}


def read_selection(run_dir: Path) -> dict | None:
    path = Path(run_dir) / SELECTION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def expected_run_bytes(model, cfg) -> int:
    """Final model + kept checkpoints (weights and two AdamW moments each) + best weights."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return weights * (2 + 3 * (cfg.train.keep_checkpoints + 1))


AUTOMATIC = (None, "auto")  # option values that mean "chosen from the data"


def config_differences(run_dir: Path, cfg: RunConfig) -> list[str]:
    """Options (other than where and how fast it runs) in which cfg differs from the run folder's config.yaml.

    An option left automatic in cfg matches what the run chose for it (same data, same rule)."""
    saved = RunConfig.from_yaml(Path(run_dir) / "config.yaml").to_dict()
    now = absolute_paths(cfg).to_dict()
    ignore = {"resume", "overwrite", "out", "threads", "device", "cache_frozen"}
    return [f"{k} ({saved[s][k]!r} -> {now[s][k]!r})" for s in saved for k in saved[s]
            if k not in ignore and saved[s][k] != now[s][k] and now[s][k] not in AUTOMATIC]


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """A copy whose data files and local model folder are absolute paths (bundled names stay names)."""
    saved = copy.deepcopy(cfg)
    for section, key in (("data", "data"), ("data", "validation"), ("data", "test"), ("model", "model")):
        value = getattr(getattr(saved, section), key)
        if value and Path(value).exists():
            setattr(getattr(saved, section), key, str(Path(value).resolve()))
    return saved


def rerunnable_config(cfg: RunConfig) -> RunConfig:
    """The config as saved in the run folder: `--config` on it starts the same run afresh, from any folder."""
    saved = absolute_paths(cfg)
    saved.output.resume = saved.output.overwrite = False
    return saved


def config_file_text(cfg: RunConfig, reasons: list[str]) -> str:
    """config.yaml: the resolved options, with a header saying what was chosen automatically and why."""
    lines = ["# The exact options of this run: `tunesmith train --config THIS_FILE` runs it again.",
             "# Data paths and a local model folder are stored as absolute paths, so this works from any folder."]
    if reasons:
        lines.append("# Chosen automatically (the values below hold the choices):")
        lines += [f"#   {reason}" for reason in reasons]
    return "\n".join(lines) + "\n" + cfg.to_yaml()


def check_same_config(run_dir: Path, cfg: RunConfig) -> None:
    diffs = config_differences(run_dir, cfg)
    if diffs:
        raise TunesmithError(f"--resume continues the run as it was configured, but these options differ from its config.yaml: {', '.join(diffs[:5])}; "
                             f"drop them, or start a new run in another --out.")


def save_model(model, tokenizer, run_dir: Path, adapter: bool) -> None:
    """HF format (safetensors) at the top of the run folder, written beside it then moved in;
    adapter methods save the adapter alone (methods/loading.py)."""
    from .methods.loading import save_run_model

    tmp = run_dir / ".tmp-model"
    shutil.rmtree(tmp, ignore_errors=True)
    save_run_model(model, tokenizer, tmp, final=run_dir)
    for path in tmp.iterdir():
        os.replace(path, run_dir / path.name)
    tmp.rmdir()


def finished_record(run_dir: Path) -> dict:
    """run.json of a finished run, or a clear error."""
    from .rundir import check_not_training

    run_dir = Path(run_dir)
    check_not_training(run_dir)  # a live run's folder says so, instead of "did not finish"
    record = read_record(run_dir)
    if not run_dir.is_dir():
        raise TunesmithError(f"Run folder '{run_dir}' does not exist; give the --out folder of a `tunesmith train` run.")
    if record is None:
        raise TunesmithError(f"'{run_dir}' is not a tunesmith run folder (no run.json); give the --out folder of a `tunesmith train` run.")
    if record.get("status") != "done":
        raise TunesmithError(f"The run in '{run_dir}' did not finish (status: {record.get('status')}); resume it with `tunesmith train ... --out {run_dir} --resume`.")
    return record
