"""Precision by measurement: bf16 autocast on a CPU only where this machine runs it clearly faster.

CPUs of one kind differ: with native bf16 instructions (avx512_bf16, AMX) a bf16 matmul runs about
twice float32 and minilm-l6 trains 1.6x faster at the same accuracy; on AVX2-only CPUs bf16 is
emulated and several times slower. Flags alone do not tell (oneDNN's kernels and thread counts
decide), so `--precision auto` times the model's own matmul shapes in both precisions, forward
and both backward products at a typical batch (a conv net: a training step of the model itself at
its input size, see time_images), and picks bf16 when it is BF16_MARGIN times faster (autocast adds
casts the matmuls alone do not show). The result is cached per machine, torch version, thread count
and set of shapes (or model and input size), so the measurement runs once.

On a GPU, auto means bf16 where the GPU supports it, as before.
"""
from __future__ import annotations

import copy
import json
import platform
import time
from collections import Counter

import torch
from torch import nn

from ..atomic import atomic_write_text

BF16_MARGIN = 1.4
TOKENS = 1024  # rows of a typical training batch: 32 examples of ~32 tokens
CONV_BATCH = 8  # images in the timed step of a conv net
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")


def linear_shapes(model: nn.Module, limit: int = 8) -> list[tuple[int, int]]:
    """The most common (in, out) shapes of the model's linear layers."""
    counts = Counter(tuple(m.weight.shape[::-1]) for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2)
    return [shape for shape, _ in counts.most_common(limit)] or [(256, 256)]


def has_convs(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def time_images(model: nn.Module, side: int, dtype: torch.dtype, repeats: int = 3) -> float:
    """Seconds for a training step's forward and backward of a copy of this image model on a CONV_BATCH of
    side x side pixels (best of `repeats`). A conv net is timed whole: its depthwise convolutions and
    batch norms gain little from bf16 on small feature maps and much on large ones, so no set of shapes
    taken out of it tells (mobilenet-v2 on one avx512_bf16 CPU: 1.0x at 64 px, 2.9x at 224)."""
    replica = copy.deepcopy(model).train().requires_grad_(True)  # its batch-norm statistics move (the model's own must not),
    # and a run loaded to predict (every weight frozen) still has a backward to time
    pixels = torch.randn(CONV_BATCH, getattr(model.config, "num_channels", 3), side, side)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            replica(pixel_values=pixels).logits.float().sum().backward()

    loops = max(1, round(0.2 / max(_timed((step,), 1), 1e-4)))  # the first call also warms up kernel selection
    return min(_timed((step,), loops) for _ in range(repeats)) / loops


def time_shapes(shapes: list[tuple[int, int]], dtype: torch.dtype, repeats: int = 5) -> float:
    """Seconds for one forward and two backward products of every shape (best of `repeats`).

    Each timing loops enough times to last about a millisecond, so small shapes are not timer noise."""
    total = 0.0
    for n_in, n_out in shapes:
        x = torch.randn(TOKENS, n_in, dtype=dtype)
        w = torch.randn(n_in, n_out, dtype=dtype)
        g = torch.randn(TOKENS, n_out, dtype=dtype)
        products = (lambda: x @ w, lambda: g @ w.T, lambda: x.T @ g)
        loops = max(1, int(1e-3 / max(_timed(products, 1), 1e-7)))  # the first call also warms up kernel selection
        total += min(_timed(products, loops) for _ in range(repeats)) / loops
    return total


def _timed(products, loops: int) -> float:
    started = time.perf_counter()
    for _ in range(loops):
        for product in products:
            product()
    return time.perf_counter() - started


def machine_key() -> str:
    """CPU model and its bf16-relevant flags, torch version and threads: what the measurement depends on."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name") and ":" in line:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and ":" in line:
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    present = ",".join(f for f in CPU_FLAGS if f in flags)
    return f"{model}|{present}|torch {torch.__version__}|{torch.get_num_threads()} threads"


def cache_path():
    from ..assets.fetch import cache_dir

    return cache_dir() / "precision.json"


def bf16_speedup(model: nn.Module) -> float:
    """float32 time / bf16 time of the model's work on this machine, measured once and cached."""
    if has_convs(model) and hasattr(model, "config"):
        side = getattr(model.config, "image_size", None) or 224
        key, timed = f"{machine_key()}|{type(model).__name__} {sum(p.numel() for p in model.parameters())} at {side} px", \
            lambda dtype: time_images(model, side, dtype)  # noqa: E731
    else:
        shapes = linear_shapes(model)
        key, timed = f"{machine_key()}|{shapes}", lambda dtype: time_shapes(shapes, dtype)  # noqa: E731
    path = cache_path()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key])
    speedup = timed(torch.float32) / max(timed(torch.bfloat16), 1e-12)
    cached[key] = round(speedup, 3)
    try:  # a read-only cache only costs the measurement next time
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(cached, indent=1))
    except OSError:
        pass
    return speedup


def choose_precision(setting: str, device: torch.device, model: nn.Module) -> tuple[str, str]:
    """('bf16' or 'fp32', the reason in a few words) for --precision `setting` on `device`."""
    if setting != "auto":
        return setting, f"--precision {setting}"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return "bf16", "bf16 autocast: this GPU supports it"
        return "fp32", "float32: this GPU has no bf16"
    speedup = bf16_speedup(model)
    if speedup >= BF16_MARGIN:
        return "bf16", f"bf16 autocast: {timed_work(model)} ran {speedup:.1f}x float32 on this CPU"
    return "fp32", f"float32: in bf16 {timed_work(model)} ran {speedup:.2f}x float32 on this CPU (bf16 needs {BF16_MARGIN}x)"


def timed_work(model: nn.Module) -> str:
    return "a training step of this conv net" if has_convs(model) and hasattr(model, "config") else "its matmuls at this model's shapes"


def autocast_for(precision: str, device: torch.device):
    """A context-manager factory: bf16 autocast on the device, or a no-op."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return lambda: torch.autocast(device.type, enabled=False)
