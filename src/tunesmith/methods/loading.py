"""Save and load the model of a run folder, in one of three forms:

- plain: a whole Hugging Face model (full, freeze, head, bitfit, gradual);
- peft: a PEFT adapter folder, adapter_config.json + adapter_model.safetensors (lora, dora, ia3);
- bottleneck: our adapter format, bottleneck_adapter.json + .safetensors (adapter).

Adapter forms hold only what training changed; loading rebuilds the task model from the run's
base_model with the task's builder, then adds the adapter.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..assets.resolve import resolve_model_source
from .adapter import ADAPTER_CONFIG, adapted_sublayers, load_bottleneck_adapter, save_bottleneck_adapter
from .peft_adapters import pass_every_input, quiet_peft

PEFT_CONFIG = "adapter_config.json"
TASK_BASE = "base"  # in a PEFT run folder: the task model's config beside links to the base weights


def saved_model_kind(run_dir: Path) -> str:
    """'peft', 'bottleneck' or 'plain', from the files in the folder."""
    run_dir = Path(run_dir)
    if (run_dir / PEFT_CONFIG).is_file():
        return "peft"
    if (run_dir / ADAPTER_CONFIG).is_file():
        return "bottleneck"
    return "plain"


def save_run_model(model, tokenizer, folder: Path, final: Path | None = None) -> None:
    """Safetensors and the tokenizer in `folder`: the adapter alone for adapter methods, else the whole
    model. `final`: where `folder` will be moved to (a PEFT adapter names its task base folder by path)."""
    from peft import PeftModel

    folder = Path(folder)
    if isinstance(model, PeftModel):
        model.save_pretrained(folder, safe_serialization=True)  # adapter weights + the head (modules_to_save)
        if save_task_base(model, folder, Path(final or folder)) and tokenizer is not None:
            tokenizer.save_pretrained(folder / TASK_BASE)  # pipeline(...) reads the tokenizer of the base folder
    elif adapted_sublayers(model):
        save_bottleneck_adapter(model, folder)
    else:
        model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


def save_task_base(model, folder: Path, final: Path) -> bool:
    """Point the PEFT adapter at a base folder that knows the task, so that transformers'
    `pipeline(...)`, `AutoModelFor...` and peft's `AutoPeftModelFor...` load the adapter folder directly.

    An adapter names its base model by path, and those loaders build the task model from that
    folder's config; the base model's own config has no labels, so transformers would build its
    default 2, drop the saved head as a size mismatch and fall back to a bare encoder. `base/` holds
    the task model's config (labels, problem type, the task's own fields) beside links to the base
    weights (copies where links cannot be made), and adapter_config.json names it.
    """
    source = local_model_folder(model.peft_config["default"].base_model_name_or_path)
    if source is None:
        return False  # a hub model not in the local cache: the loaders fetch it by name, without the task config
    base = folder / TASK_BASE
    base.mkdir()
    model.get_base_model().config.save_pretrained(base)
    for weights in source.iterdir():
        if weights.name.endswith((".safetensors", ".safetensors.index.json")):
            own = task_model_tensors(model) if weights.suffix == ".safetensors" else {}
            reshaped = mismatched_tensors(weights, own) if own else set()
            if reshaped:  # an ImageNet backbone's 1000-class head, Whisper's positional table cut to the clip window
                from safetensors.torch import load_file, save_file

                tensors = {k: own[k].detach().cpu().contiguous() if k in reshaped else v for k, v in load_file(weights).items()}
                save_file(tensors, str(base / weights.name))
                continue
            try:
                os.symlink(weights.resolve(), base / weights.name)
            except OSError:
                shutil.copy2(weights, base / weights.name)
    config_path = folder / PEFT_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = str(final.resolve() / TASK_BASE)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return True


def task_model_tensors(model) -> dict:
    """The task model's tensors under the base model's names (PEFT keeps the head's copies under wrapper names)."""
    tensors = {}
    for name, tensor in model.get_base_model().state_dict().items():
        for wrapper in (".original_module", ".modules_to_save.default"):
            name = name.replace(wrapper, "")
        tensors[name] = tensor
    return tensors


def mismatched_tensors(weights: Path, own: dict) -> set[str]:
    """Tensors of a base weights file whose shape differs from the task model's: the base model's own output
    head where the task put a new one, or a table the task cut (Whisper's positions for a shorter window).
    base/ gets the task model's tensor for each, so the loaders build exactly the model that trained."""
    from safetensors import safe_open

    with safe_open(str(weights), "pt") as f:
        return {k for k in f.keys() if k in own and tuple(f.get_slice(k).get_shape()) != tuple(own[k].shape)}


def local_model_folder(name: str) -> Path | None:
    """The folder of a base model on this machine: a local folder, or a hub model's cached snapshot."""
    path = Path(name)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached (or not a hub name): nothing to link
        return None


def load_run_model(run_dir: Path, task, record: dict, cfg):
    """The fine-tuned model of a run folder, built by the task's own builder (as in training)."""
    import dataclasses

    run_dir = Path(run_dir)
    kind = saved_model_kind(run_dir)
    model_cfg = dataclasses.replace(cfg.model, quantize="none")  # an adapter trained over 4-bit weights serves on full ones
    if kind == "plain":
        return task.build_model(str(run_dir), model_cfg)
    base = task.build_model(resolve_model_source(record["base_model"]), model_cfg)  # the head's weights come from the adapter
    if kind == "bottleneck":
        return load_bottleneck_adapter(base, run_dir)
    from peft import PeftModel

    with quiet_peft():
        return pass_every_input(PeftModel.from_pretrained(base, str(run_dir)))
