"""A/B measurements of single speed levers on real training steps (minilm-l6, rotten-tomatoes).

    python bench/levers.py optimizer first-token --steps 8 --rounds 6
    python bench/levers.py eval-batch

Both arms of a lever run in one process on the same model and, round by round, on the same
batches, alternating which goes first, so machine noise hits both alike. Per arm: median
milliseconds per step, wall and CPU (CPU time is steadier on a shared machine); the ratio is the
median over rounds of B's time over A's.

Training levers (A -> B):
  optimizer               foreach AdamW -> fused AdamW (what fit() uses)
  first-token             the model's forward -> the last layer for [CLS] only (train/first_token.py)
  freeze-word-embeddings  all weights train -> the token-embedding matrix frozen (--freeze-word-embeddings)
  sync                    loss.item() and a mask sum per micro-batch -> one host sync per step
  allocator               glibc's default -> no mmap for large blocks, no trimming (mallopt)
  attention               sdpa -> eager attention
  threads                 all cores -> one thread
  dropout                 torch's dropout (sdpa) -> fast_dropout, eager attention while training (train/fast_dropout.py)
Inference lever:
  eval-batch              length-sorted batches of 32/64/128/256/512 and unsorted 64, on the test set
"""
from __future__ import annotations

import argparse
import ctypes
import os
import time

import torch

from common import data_split, machine, median, print_table, save_result

TRAINING_LEVERS = ("optimizer", "first-token", "freeze-word-embeddings", "sync", "allocator", "attention", "threads", "dropout")


class Bench:
    """minilm-l6 with tunesmith's own task, features, batching and optimizer settings."""

    def __init__(self, batch_size: int = 32, seed: int = 0):
        import pandas as pd
        from transformers import AutoTokenizer

        from tunesmith.assets import model_path
        from tunesmith.architectures import parameter_groups
        from tunesmith.tasks import get_task

        files = data_split()
        self.source = str(model_path("minilm-l6"))
        tokenizer = AutoTokenizer.from_pretrained(self.source)
        train, test = pd.read_csv(files["train"]), pd.read_csv(files["test"])
        names = sorted(train["label"].unique())
        for table in (train, test):
            table["label"] = table["label"].map({n: i for i, n in enumerate(names)})
        self.task = get_task("text-classification")(names)
        self.train, self.test = self.task.encode(tokenizer, train, 128), self.task.encode(tokenizer, test, 128)
        torch.manual_seed(seed)
        self.model = self.build_model()
        self.groups = parameter_groups(self.model)
        from tunesmith.data.batching import length_grouped_batches

        self.batches = length_grouped_batches(self.train.lengths, batch_size, seed, 0)[1:]  # not the longest-first batch

    def build_model(self, **kwargs):
        from transformers import AutoModelForSequenceClassification
        from transformers.utils import logging

        logging.set_verbosity_error()
        model = AutoModelForSequenceClassification.from_pretrained(self.source, num_labels=len(self.task.label_names), **kwargs)
        return model.train()

    def optimizer(self, fused: bool):
        from tunesmith.train.optim import optimizer_groups

        groups = optimizer_groups(self.groups, 5e-5, 0.01, None)
        return torch.optim.AdamW(groups, lr=5e-5, fused=fused or None, foreach=None if fused else True)


class Arm:
    """One side of a lever: how to run a step, and what to switch on and off around its turn."""

    def __init__(self, name, bench: Bench, optimizer=None, forward=None, sync_each=False, enter=None, leave=None):
        self.name, self.bench = name, bench
        self.optimizer = optimizer or bench.optimizer(fused=True)
        self.forward = forward or bench.model
        self.sync_each, self.enter, self.leave = sync_each, enter, leave
        self.params = [p for p in bench.model.parameters()]

    def step(self, indices) -> None:
        b = self.bench
        self.optimizer.zero_grad(set_to_none=True)
        batch = b.task.collate(b.train, indices, 0)
        labels = batch.pop("labels")
        loss = b.task.loss_sum(self.forward(**batch).logits, labels) / len(indices)
        loss.backward()
        if self.sync_each:  # what the loop did before: two host syncs per micro-batch
            loss.item(), int(batch["attention_mask"].sum())
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.params if p.grad is not None], 1.0)
        if not self.sync_each:
            torch.stack([loss.detach(), norm]).tolist()
        else:
            bool(torch.isfinite(norm))
        self.optimizer.step()


def mallopt(mmap_max: int, trim_threshold: int) -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-4, mmap_max)        # M_MMAP_MAX
    libc.mallopt(-1, trim_threshold)  # M_TRIM_THRESHOLD


def lever_arms(lever: str, bench: Bench) -> tuple[Arm, Arm]:
    from tunesmith.train.first_token import first_token_forward

    embedding = bench.model.get_input_embeddings().weight
    if lever == "optimizer":
        return Arm("foreach AdamW", bench, bench.optimizer(fused=False)), Arm("fused AdamW", bench, bench.optimizer(fused=True))
    if lever == "first-token":
        return Arm("model forward", bench), Arm("first-token last layer", bench, forward=first_token_forward(bench.model))
    if lever == "freeze-word-embeddings":
        return (Arm("all weights train", bench),
                Arm("word embeddings frozen", bench, enter=lambda: embedding.requires_grad_(False), leave=lambda: embedding.requires_grad_(True)))
    if lever == "sync":
        return Arm("sync per micro-batch", bench, sync_each=True), Arm("one sync per step", bench)
    if lever == "allocator":
        return (Arm("glibc default", bench),
                Arm("no mmap, no trim", bench, enter=lambda: mallopt(0, 2**31 - 1), leave=lambda: mallopt(65536, 128 * 1024)))
    if lever == "attention":
        def use(kind):
            return lambda: bench.model.set_attn_implementation(kind)
        return Arm("sdpa", bench, enter=use("sdpa")), Arm("eager", bench, enter=use("eager"), leave=use("sdpa"))
    if lever == "threads":
        cores = torch.get_num_threads()
        return (Arm(f"{cores} threads", bench),
                Arm("1 thread", bench, enter=lambda: torch.set_num_threads(1), leave=lambda: torch.set_num_threads(cores)))
    if lever == "dropout":
        from tunesmith.train.fast_dropout import cheaper_dropout

        patch = []

        def enter():
            patch.append(cheaper_dropout(bench.model, torch.device("cpu")))
            patch[-1].__enter__()
        return Arm("torch dropout", bench), Arm("fast dropout", bench, enter=enter, leave=lambda: patch.pop().__exit__(None, None, None))
    raise SystemExit(f"unknown lever {lever!r}; choose from {', '.join(TRAINING_LEVERS)} or eval-batch")


def time_arm(arm: Arm, batches) -> tuple[float, float]:
    if arm.enter:
        arm.enter()
    wall, cpu = time.perf_counter(), time.process_time()
    for indices in batches:
        arm.step(indices)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if arm.leave:
        arm.leave()
    return wall / len(batches) * 1000, cpu / len(batches) * 1000


def measure_lever(lever: str, bench: Bench, steps: int, rounds: int) -> dict:
    a, b = lever_arms(lever, bench)
    for arm in (a, b):  # warm-up: first-call allocations, optimizer state
        time_arm(arm, bench.batches[:2])
    times = {a.name: [], b.name: []}
    for r in range(rounds):
        batches = bench.batches[2 + r * steps: 2 + (r + 1) * steps]
        for arm in ((a, b) if r % 2 == 0 else (b, a)):
            times[arm.name].append(time_arm(arm, batches))
    ratio_wall = median([tb[0] / ta[0] for ta, tb in zip(times[a.name], times[b.name])])
    ratio_cpu = median([tb[1] / ta[1] for ta, tb in zip(times[a.name], times[b.name])])
    result = {"lever": lever, "A": a.name, "B": b.name, "steps_per_round": steps, "rounds": rounds,
              "A_ms_wall": median([t[0] for t in times[a.name]]), "B_ms_wall": median([t[0] for t in times[b.name]]),
              "A_ms_cpu": median([t[1] for t in times[a.name]]), "B_ms_cpu": median([t[1] for t in times[b.name]]),
              "B_over_A_wall": ratio_wall, "B_over_A_cpu": ratio_cpu, "raw": times}
    print(f"{lever}: {a.name} {result['A_ms_wall']:.0f} ms/step -> {b.name} {result['B_ms_wall']:.0f} ms/step "
          f"(B/A wall {ratio_wall:.3f}, cpu {ratio_cpu:.3f})", flush=True)
    return result


def measure_eval_batches(bench: Bench, rounds: int) -> list[dict]:
    from tunesmith.train.infer import predict_outputs

    bench.model.eval()
    arms = [("sorted", n) for n in (32, 64, 128, 256, 512)] + [("unsorted", 64)]
    times = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in (arms if r % 2 == 0 else arms[::-1]):
            kind, size = arm
            started = time.perf_counter()
            if kind == "sorted":
                predict_outputs(bench.model, bench.task, bench.test, size, 0, "cpu")
            else:
                with torch.inference_mode():
                    for start in range(0, len(bench.test), size):
                        batch = bench.task.collate(bench.test, list(range(start, min(start + size, len(bench.test)))), 0)
                        batch.pop("labels")
                        bench.model(**batch)
            times[arm].append(time.perf_counter() - started)
    rows = [{"arm": f"{kind} batches of {size}", "seconds": median(times[(kind, size)]),
             "texts_per_s": len(bench.test) / median(times[(kind, size)])} for kind, size in arms]
    print_table(rows, [("arm", "inference on 2,000 test texts", ""), ("seconds", "seconds", ".2f"), ("texts_per_s", "texts/s", ",.0f")])
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("levers", nargs="*", default=list(TRAINING_LEVERS) + ["eval-batch"])
    parser.add_argument("--steps", type=int, default=8, help="steps per arm per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    host = machine()
    print(f"Machine: {host['cpu']}, {host['torch_threads']} threads, {host['vector_flags']}, fp32 matmul {host['matmul_gflops']} GFLOP/s, "
          f"load {host['load_average']}", flush=True)
    bench = Bench()
    results = {"machine": host, "levers": []}
    for lever in args.levers:
        if lever == "eval-batch":
            results["eval_batch"] = measure_eval_batches(bench, max(2, args.rounds // 2))
        else:
            results["levers"].append(measure_lever(lever, bench, args.steps, args.rounds))
    if results["levers"]:
        print()
        print_table(results["levers"], [("lever", "lever", ""), ("A", "A", ""), ("B", "B", ""), ("A_ms_wall", "A ms/step", ".0f"),
                                        ("B_ms_wall", "B ms/step", ".0f"), ("B_over_A_wall", "B/A wall", ".3f"), ("B_over_A_cpu", "B/A cpu", ".3f")])
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    save_result("levers", results)


if __name__ == "__main__":
    main()
