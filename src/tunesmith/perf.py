"""How fast a run is, and how close to the machine: measured matmul rate, model FLOPs, utilisation.

Utilisation is the model's nominal training FLOPs per second over the float matmul rate this
machine reaches right now (measured, not looked up: machines of one kind differ, and a shared
machine is slower when busy). FLOPs per token count the matrix multiplies of a step:

    2 x (every linear weight)                        forward
  + 2 x (linear weights at or above the lowest trainable group)   gradients w.r.t. activations
  + 2 x (trainable linear weights)                  gradients w.r.t. weights

which is the usual 6 x parameters for a full fine-tune, 2 x frozen + 6 x the rest with frozen
bottom layers, and about 4 x parameters under LoRA. Embedding look-ups and attention scores are
left out (about 1% for sentence-length inputs), so this is the customary "model FLOPs" figure.
"""
from __future__ import annotations

import functools
import time

import torch
from torch import nn


# -- the machine ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def measure_matmul_rate(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                        seconds: float = 0.2) -> float:
    """Best FLOP/s of a square matmul over `seconds` of repeats (the best run is the least disturbed)."""
    size = size or (8192 if device.startswith("cuda") else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a @ b  # warm-up: first-call allocation and kernel selection
    sync()
    best, deadline, repeats = 0.0, time.perf_counter() + seconds, 0
    while repeats < 3 or time.perf_counter() < deadline:
        started = time.perf_counter()
        a @ b
        sync()
        best = max(best, 2 * size ** 3 / (time.perf_counter() - started))
        repeats += 1
    return best


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls of a run use: bf16 under bf16 autocast, else float32."""
    return torch.bfloat16 if precision == "bf16" else torch.float32


# -- the model --------------------------------------------------------------------------------

def linear_weights(model: nn.Module) -> list[torch.nn.Parameter]:
    """Weights of the matrix multiplies: nn.Linear (PEFT's LoRA matrices are Linear too) and GPT-2's Conv1D."""
    weights = []
    for module in model.modules():
        if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D":
            weights.append(module.weight)
    return weights


def training_flops_per_token(model: nn.Module, groups=None, frozen_forward: bool = True) -> dict[str, float]:
    """Nominal matmul FLOPs per token of one training step, split as in the module docstring.

    frozen_forward=False leaves out the forward of the frozen bottom layers (their outputs were
    computed once and cached, train/frozen_cache.py)."""
    from .architectures import parameter_groups

    groups = groups or parameter_groups(model)
    depth_of = {id(p): depth for depth, (_, params) in enumerate(groups.ordered()) for _, p in params}
    trainable_depths = [depth_of[id(p)] for p in model.parameters() if p.requires_grad and id(p) in depth_of]
    lowest = min(trainable_depths) if trainable_depths else len(depth_of) + 1
    forward = path = trainable = 0
    for weight in linear_weights(model):
        on_path = depth_of.get(id(weight), lowest) >= lowest
        if on_path or frozen_forward:
            forward += weight.numel()
        if on_path:
            path += weight.numel()
        if weight.requires_grad:
            trainable += weight.numel()
    return {"forward": 2.0 * forward, "activation_grads": 2.0 * path, "weight_grads": 2.0 * trainable,
            "total": 2.0 * (forward + path + trainable)}


def counts_every_flop(model: nn.Module) -> bool:
    """Whether the weight-based count covers the model's work: a convolution's FLOPs depend on the size of its
    feature maps, which its weights do not tell, so conv nets (images, Whisper's audio stem aside) are not counted."""
    return not any(isinstance(m, nn.Conv2d) for m in model.modules())


def throughput(tokens: int, seconds: float, flops_per_token: float | None, matmul_rate: float) -> dict:
    """tokens/s, achieved model FLOP/s and its fraction of the measured matmul rate (tokens/s alone when
    flops_per_token is None: a model whose FLOPs the count does not cover)."""
    seconds = max(seconds, 1e-9)
    if flops_per_token is None:
        return {"tokens_per_second": round(tokens / seconds, 1), "flop_utilisation": None}
    achieved = tokens * flops_per_token / seconds
    def significant(x: float) -> float:
        return float(f"{x:.4g}")

    return {"tokens_per_second": round(tokens / seconds, 1), "flops_per_token": round(flops_per_token),
            "achieved_gflops": significant(achieved / 1e9), "matmul_gflops": significant(matmul_rate / 1e9),
            "flop_utilisation": significant(achieved / matmul_rate) if matmul_rate else None}


# -- speed options ----------------------------------------------------------------------------

def freeze_word_embeddings(model: nn.Module) -> int:
    """Stop training the token-embedding matrix; returns how many weights that froze.

    It is half of MiniLM's weights, yet a batch touches a few hundred of its 30k rows: freezing it
    skips a dense 47 MB gradient and its AdamW update every step and shrinks checkpoints.
    """
    embeddings = model.get_input_embeddings()
    weight = getattr(embeddings, "weight", None)
    if weight is None or not weight.requires_grad:
        return 0
    weight.requires_grad_(False)
    return weight.numel()
