"""Save and load the model of a run folder, in one of three forms:

- plain: a whole Hugging Face model (full, freeze, head, bitfit, gradual);
- peft: a PEFT adapter folder, adapter_config.json + adapter_model.safetensors (lora, dora, ia3);
- bottleneck: our adapter format, bottleneck_adapter.json + .safetensors (adapter).

Adapter forms hold only what training changed; loading rebuilds the task model from the run's
base_model with the task's builder, then adds the adapter.
"""
from __future__ import annotations

from pathlib import Path

from ..assets.resolve import resolve_model_source
from .adapter import ADAPTER_CONFIG, adapted_sublayers, load_bottleneck_adapter, save_bottleneck_adapter
from .peft_adapters import quiet_peft

PEFT_CONFIG = "adapter_config.json"


def saved_model_kind(run_dir: Path) -> str:
    """'peft', 'bottleneck' or 'plain', from the files in the folder."""
    run_dir = Path(run_dir)
    if (run_dir / PEFT_CONFIG).is_file():
        return "peft"
    if (run_dir / ADAPTER_CONFIG).is_file():
        return "bottleneck"
    return "plain"


def save_run_model(model, folder: Path) -> None:
    """Safetensors in `folder`: the adapter alone for adapter methods, else the whole model."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.save_pretrained(folder, safe_serialization=True)  # adapter weights + the head (modules_to_save)
    elif adapted_sublayers(model):
        save_bottleneck_adapter(model, folder)
    else:
        model.save_pretrained(folder, safe_serialization=True)


def load_run_model(run_dir: Path, task, record: dict, cfg):
    """The fine-tuned model of a run folder, built by the task's own builder (as in training)."""
    run_dir = Path(run_dir)
    kind = saved_model_kind(run_dir)
    if kind == "plain":
        return task.build_model(str(run_dir), cfg.model)
    base = task.build_model(resolve_model_source(record["base_model"]), cfg.model)  # the head's weights come from the adapter
    if kind == "bottleneck":
        return load_bottleneck_adapter(base, run_dir)
    from peft import PeftModel

    with quiet_peft():
        return PeftModel.from_pretrained(base, str(run_dir))
