"""Precision by measurement: bf16 autocast on a CPU only where this machine runs it clearly faster.

CPUs of one kind differ: with native bf16 instructions (avx512_bf16, AMX) a bf16 matmul runs about
twice float32 and minilm-l6 trains 1.6x faster at the same accuracy; on AVX2-only CPUs bf16 is
emulated and several times slower. Flags alone do not tell (oneDNN's kernels and thread counts
decide), so `--precision auto` times the model's own matmul shapes in both precisions, forward
and both backward products at a typical batch, and picks bf16 when it is BF16_MARGIN times
faster (autocast adds casts the matmuls alone do not show). The result is cached per machine,
torch version, thread count and set of shapes, so the measurement runs once.

On a GPU, auto means bf16 where the GPU supports it, as before.
"""
from __future__ import annotations

import json
import platform
import time
from collections import Counter

import torch
from torch import nn

from ..atomic import atomic_write_text

BF16_MARGIN = 1.4
TOKENS = 1024  # rows of a typical training batch: 32 examples of ~32 tokens
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_vnni")


def linear_shapes(model: nn.Module, limit: int = 8) -> list[tuple[int, int]]:
    """The most common (in, out) shapes of the model's linear layers."""
    counts = Counter(tuple(m.weight.shape[::-1]) for m in model.modules() if isinstance(m, nn.Linear) and m.weight.dim() == 2)
    return [shape for shape, _ in counts.most_common(limit)] or [(256, 256)]


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
    """float32 time / bf16 time at the model's shapes on this machine, measured once and cached."""
    shapes = linear_shapes(model)
    key = f"{machine_key()}|{shapes}"
    path = cache_path()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return float(cached[key])
    speedup = time_shapes(shapes, torch.float32) / max(time_shapes(shapes, torch.bfloat16), 1e-12)
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
        return "bf16", f"bf16 autocast: its matmuls ran {speedup:.1f}x float32 at this model's shapes on this CPU"
    return "fp32", f"float32: bf16 matmuls ran {speedup:.2f}x float32 at this model's shapes on this CPU (bf16 needs {BF16_MARGIN}x)"


def autocast_for(precision: str, device: torch.device):
    """A context-manager factory: bf16 autocast on the device, or a no-op."""
    if precision == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return lambda: torch.autocast(device.type, enabled=False)
