"""`tunesmith export RUN --out DIR [--merge]`: a finished run's model as a standalone folder.

Without --merge the folder holds the model as the run saved it (a whole model, or the adapter
alone) plus the tokenizer. With --merge an adapter is folded into the base weights and the folder
is a plain Hugging Face model that the task's `AutoModelFor...` class and its `pipeline(...)` load
with no PEFT and no tunesmith. LoRA, DoRA and IA3 are
linear in the weights they adapt, so they merge exactly; bottleneck adapters add a nonlinear block
and cannot be folded into the base weights.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from .config import RunConfig
from .errors import TunesmithError
from .job import finished_record
from .methods.loading import load_run_model, save_run_model, saved_model_kind
from .atomic import atomic_folder

MERGE_TOLERANCE = 1e-4


def outputs_of(model, batch: dict) -> torch.Tensor:
    """Every tensor the model returns (logits; start and end logits for QA), flattened into one."""
    with torch.inference_mode():
        output = model(**batch)
    return torch.cat([v.float().flatten() for v in output.values() if isinstance(v, torch.Tensor)])


def merge_adapter(model, probe_batch: dict):
    """The PEFT model's adapter folded into its base weights; checked to give the same outputs on probe_batch."""
    model.eval()
    expected = outputs_of(model, probe_batch)
    merged = model.merge_and_unload()
    difference = float((outputs_of(merged, probe_batch) - expected).abs().max())
    if difference > MERGE_TOLERANCE:
        raise TunesmithError(f"Merging the adapter changed the model's outputs by up to {difference:.2g} (more than {MERGE_TOLERANCE}); "
                             f"export it without --merge and load it with PEFT instead.")
    return merged


def export_run(run_dir, out, merge: bool = False) -> dict:
    """Write the run's model to `out`; returns {'out', 'form'}, form being 'plain', 'peft' or 'bottleneck'."""
    from .tasks import get_task
    from .tasks.protocol import pad_id_of

    run_dir, out = Path(run_dir), Path(out)
    record = finished_record(run_dir)
    task = get_task(record["task"]).from_record(record)
    kind = saved_model_kind(run_dir)
    if merge and kind == "bottleneck":
        raise TunesmithError(f"The run in '{run_dir}' uses bottleneck adapters (--method adapter), which add a nonlinear block after each "
                             f"sublayer and cannot be merged into the base weights; export it without --merge, or train with lora, dora or ia3 to get a mergeable adapter.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise TunesmithError(f"--out '{out}' already exists and is not empty; choose a new folder to export to.")
    cfg = RunConfig.from_yaml(run_dir / "config.yaml")
    preprocessor = task.load_preprocessor(str(run_dir), cfg.model)  # tokenizer, image processor, ...
    model = load_run_model(run_dir, task, record, cfg).eval()
    if merge and kind == "peft":
        features = task.encode(preprocessor, task.probe_table(), cfg.model.max_length)
        probe = task.collate(features, list(range(len(features))), pad_id_of(preprocessor))
        probe.pop("labels", None)
        model, kind = merge_adapter(model, probe), "plain"
    with atomic_folder(out) as tmp:
        save_run_model(model, preprocessor, tmp, final=out)
    return {"out": out, "form": kind}


MERGED_RUNS = "merged-runs"  # under the tunesmith cache: adapter runs merged once to start another run from


def run_as_base_model(run_dir) -> Path:
    """A finished run folder as a base model folder (`--from RUN`, or --model RUN): a whole-model run is a model
    folder already; an adapter run is merged into its base once and cached (keyed by the adapter's path and file
    stamps), so a preference run after an instruction-tuning run starts from exactly the model that run made."""
    from .assets.fetch import cache_dir

    run_dir = Path(run_dir).expanduser().resolve()
    finished_record(run_dir)  # a live or unfinished run is refused with its own sentence
    kind = saved_model_kind(run_dir)
    if kind == "plain":
        return run_dir
    if kind == "bottleneck":
        raise TunesmithError(f"The run in '{run_dir}' uses bottleneck adapters (--method adapter), which cannot be merged into a base model "
                             f"to start another run from; start from a run trained with full, lora, dora or ia3.")
    stamps = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(run_dir.glob("adapter_*")) if p.is_file()]
    key = hashlib.sha256(repr((str(run_dir), stamps)).encode()).hexdigest()[:16]
    folder = cache_dir() / MERGED_RUNS / f"{run_dir.name}-{key}"
    if not (folder / "config.json").is_file():  # written whole or not at all (atomic_folder)
        export_run(run_dir, folder, merge=True)
    return folder
