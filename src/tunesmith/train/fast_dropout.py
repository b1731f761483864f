"""Cheaper dropout for training on a CPU.

torch's CPU dropout draws one random number per element (about 11 ns each on 2 cores), which is
about a tenth of a minilm-l6 training step. Here one 32-bit draw gives two 15-bit uniforms, so the
mask costs a fraction of that. The drop probability is quantised to 1/32768 (0.1 becomes
0.100006) and the scale is exact for it, so the expectation is unchanged. The random numbers come
from torch's generator, so seeding and resuming stay exact.

During training, `cheaper_dropout(model, device)` routes torch.nn.functional.dropout (which nn.Dropout and
the models' eager attention call) here, and runs attention the model's eager way while training so
that attention-probability dropout goes through it too (sdpa keeps dropout inside its kernel).
Evaluation keeps sdpa. GPUs have fast dropout already; there it does nothing.
"""
from __future__ import annotations

import contextlib
import sys

import torch
import torch.nn.functional as F

LEVELS = 1 << 15
_torch_dropout = F.dropout


class _ScaleByMask(torch.autograd.Function):
    """x * mask * scale, keeping only the boolean mask for the backward pass."""

    @staticmethod
    def forward(ctx, x, mask, scale):
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return x * mask * scale

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask * ctx.scale, None, None


def keep_mask(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """A boolean mask keeping each element with probability 1 - p (quantised), and the matching scale."""
    n = shape.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_()  # 31 random bits each
    lanes = bits.view(torch.int16)[:n] & (LEVELS - 1)  # two uniform 15-bit numbers per draw
    threshold = round(p * LEVELS)
    return (lanes >= threshold).view(shape), LEVELS / (LEVELS - threshold)


def fast_dropout(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
    # torch's own where the quantised probability would be 0 or 1 (the scale would divide by zero)
    if not training or not 0 < round(p * LEVELS) < LEVELS or input.device.type != "cpu" or not input.is_floating_point():
        return _torch_dropout(input, p, training, inplace)
    mask, scale = keep_mask(input.shape, p)
    return _ScaleByMask.apply(input, mask, scale)


def _train_time_attention(name: str):
    """An attention function: the model's own eager attention while training with dropout, else `name` (sdpa)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    def attention(module, *args, dropout: float = 0.0, **kwargs):
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if module.training and dropout > 0 and eager is not None:
            return eager(module, *args, dropout=dropout, **kwargs)
        return ALL_ATTENTION_FUNCTIONS[name](module, *args, dropout=dropout, **kwargs)

    return attention


@contextlib.contextmanager
def cheaper_dropout(model, device: torch.device):
    """Within the block, training dropout on the CPU uses fast_dropout (see the module's docstring)."""
    if torch.device(device).type != "cpu":
        yield
        return
    # the Hugging Face model itself, also when wrapped (the top of a model above cached frozen layers)
    model = next((m for m in model.modules() if hasattr(m, "set_attn_implementation") and hasattr(m, "config")), model)
    original = getattr(getattr(model, "config", None), "_attn_implementation", None)
    swap = original == "sdpa" and hasattr(model, "set_attn_implementation")
    if swap:
        from transformers import AttentionInterface
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

        AttentionInterface.register("tunesmith_train", _train_time_attention(original))
        # the additive float mask of eager attention, which sdpa takes as well
        AttentionMaskInterface.register("tunesmith_train", ALL_MASK_ATTENTION_FUNCTIONS["eager"])
        model.set_attn_implementation("tunesmith_train")
    F.dropout = fast_dropout
    try:
        yield
    finally:
        F.dropout = _torch_dropout
        if swap:
            model.set_attn_implementation(original)
