"""--quantize 4bit|8bit: the frozen base weights of a language model held in 4 or 8 bits (QLoRA), through bitsandbytes.

An adapter method trains small matrices beside frozen base weights, so those weights need not be 16 or 32 bits:
nf4 (4-bit NormalFloat, with its scales quantised again: QLoRA's double quantisation) or LLM.int8() keep them at
a quarter or half of bf16, and the adapter and the activations stay in bf16. bitsandbytes' kernels run on CUDA
GPUs only, and it is not a dependency of tunesmith: both are checked before anything loads, each with its fix.
"""
from __future__ import annotations

from ..errors import TunesmithError

ADAPTER_METHODS = ("lora", "dora", "ia3")  # the methods that leave every base weight frozen, as quantised weights must be


def check_quantize(model_cfg, method: str, task) -> None:
    """Refuse --quantize where it cannot work, one sentence each: not a language model, a method that trains base
    weights, no CUDA GPU, no bitsandbytes."""
    if model_cfg.quantize == "none":
        return
    if task.model_class != "AutoModelForCausalLM":
        raise TunesmithError(f"--quantize is for language models (chat, causal-lm, preference), not the {task.name} task; drop it.")
    if method not in ADAPTER_METHODS:
        raise TunesmithError(f"--quantize {model_cfg.quantize} holds the base weights frozen in {model_cfg.quantize}, so only an adapter can train: "
                             f"use --method {' / '.join(ADAPTER_METHODS)} (not {method}), or drop --quantize.")
    import torch

    if not torch.cuda.is_available():
        raise TunesmithError(f"--quantize {model_cfg.quantize} needs a CUDA GPU (bitsandbytes' kernels run on CUDA only) and none is here; "
                             f"drop --quantize to train in full precision on this machine.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TunesmithError(f"--quantize {model_cfg.quantize} needs the bitsandbytes package, which is not installed; "
                             f"run `pip install bitsandbytes` (or drop --quantize).") from None


def quantization_options(model_cfg) -> dict:
    """from_pretrained keyword arguments for --quantize (none when it is off)."""
    if model_cfg.quantize == "none":
        return {}
    import torch
    from transformers import BitsAndBytesConfig

    if model_cfg.quantize == "4bit":
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=torch.bfloat16)
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    return {"quantization_config": config, "dtype": torch.bfloat16}


def prepare_quantized(model, model_cfg):
    """PEFT's preparation of a quantised model for adapter training (norms in fp32, input gradients for checkpointing)."""
    if model_cfg.quantize == "none":
        return model
    from peft import prepare_model_for_kbit_training

    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
