"""The side-by-side training benchmark behind full_finetune.py and lora.py.

Each arm (a tunesmith variant or a peer configuration) is a whole job in its own process, on the
same train/test files, epochs, batch size, learning rate, seed and max length. Rounds alternate
the order of the arms. The table gives medians over rounds; the ratios compare every tunesmith
variant with every peer.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from common import (RESULTS, alternate, count_rows, data_split, machine, median, peer_command, print_table,
                    read_tunesmith_metrics, run_job, save_result, tunesmith_train)


@dataclass
class Arm:
    name: str
    side: str                     # "tunesmith" or "peer"
    flags: list[str] = field(default_factory=list)  # `tunesmith train` flags, or peer_trainer.py flags (--bf16)
    peer_mode: str | None = None  # pad128 | dynamic


def add_common_options(parser: argparse.ArgumentParser, lr: float) -> None:
    parser.add_argument("--quick", action="store_true", help="3,000 training examples, 1 epoch, the Trainer's best practice only: a few minutes")
    parser.add_argument("--train-examples", type=int, help="a fixed random subset of train.csv (default: all 9,808)")
    parser.add_argument("--test-examples", type=int, help="a fixed stratified subset of test.csv (default: all 2,000; fewer only to try the script out)")
    parser.add_argument("--epochs", type=float, help="default 3 (1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every arm this many times, alternating the order")


def settle(args) -> None:
    if args.quick:
        args.train_examples = args.train_examples or 3000
        args.epochs = args.epochs or 1.0
    args.epochs = args.epochs or 3.0


def run_arm(arm: Arm, args, data: dict, round_: int, extra_peer: list[str]) -> dict:
    tag = f"{arm.name}-r{round_}"
    if arm.side == "tunesmith":
        out = RESULTS / "runs" / tag
        job = run_job(tag, tunesmith_train(data, out, args.epochs, args.batch_size, args.lr, args.seed, args.max_length, arm.flags))
        job.update(read_tunesmith_metrics(out))
    else:
        out = RESULTS / "runs" / f"{tag}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        command = peer_command(arm.peer_mode, data, out, args.epochs, args.batch_size, args.lr, args.seed, args.max_length, extra_peer + arm.flags)
        job = run_job(tag, command)
        job.update(json.loads(out.read_text()))
    print(f"  {tag}: whole job {job['wall_s']:.1f} s, train {job['train_s']:.1f} s, {job['tokens_per_second']:,.0f} tokens/s, "
          f"accuracy {job['accuracy']:.4f}, peak {job['peak_rss_mb']:,.0f} MB (load {job['load_before']})", flush=True)
    return job


def summarise(arm: Arm, jobs: list[dict], flops_per_token: float | None, matmul_gflops: float) -> dict:
    tokens_per_s = median([j["tokens_per_second"] for j in jobs])
    gflops = tokens_per_s * flops_per_token / 1e9 if flops_per_token else None
    return {"arm": arm.name, "runs": len(jobs), "job_s": median([j["wall_s"] for j in jobs]), "train_s": median([j["train_s"] for j in jobs]),
            "tokens_per_s": tokens_per_s, "gflops": gflops, "utilisation": gflops / matmul_gflops if gflops else None,
            "peak_mb": max(j["peak_rss_mb"] for j in jobs), "accuracy": sum(j["accuracy"] for j in jobs) / len(jobs)}


def compare(scenario: str, arms: list[Arm], args, extra_peer: list[str] = ()) -> dict:
    settle(args)
    data = data_split(args.train_examples, args.seed, args.test_examples)
    host = machine()
    rate = host["matmul_gflops"]["fp32_2048"]
    print(f"{scenario}: {count_rows(data['train']):,} training examples x {args.epochs:g} epochs, batch {args.batch_size}, lr {args.lr:g}, "
          f"seed {args.seed}; test {count_rows(data['test']):,}.\nMachine: {host['cpu']}, {host['cores']} cores, {host['vector_flags']}, "
          f"fp32 matmul {host['matmul_gflops']} GFLOP/s, load {host['load_average']}.", flush=True)
    jobs = {arm.name: [] for arm in arms}
    for round_, arm in alternate(arms, args.rounds):
        jobs[arm.name].append(run_arm(arm, args, data, round_, list(extra_peer)))
    # nominal FLOPs per token depend on the model and method only: the tunesmith runs report them
    flops = next((j["flops_per_token"] for a in arms if a.side == "tunesmith" for j in jobs[a.name] if j.get("flops_per_token")), None)
    rows = [summarise(arm, jobs[arm.name], flops, rate) for arm in arms]
    print(f"\nMedians over {args.rounds} round(s); utilisation = tokens/s x {flops / 1e6 if flops else 0:.1f} MFLOP a token / {rate} GFLOP/s (fp32 2048^3).")
    table = print_table(rows, [("arm", "arm", ""), ("job_s", "whole job s", ".1f"), ("train_s", "train s", ".1f"),
                               ("tokens_per_s", "train tokens/s", ",.0f"), ("gflops", "GFLOP/s", ".1f"), ("utilisation", "of matmul", ".0%"),
                               ("peak_mb", "peak MB", ",.0f"), ("accuracy", "test accuracy", ".4f")])
    ratios = []
    for ours in (r for r, a in zip(rows, arms) if a.side == "tunesmith"):
        for peer in (r for r, a in zip(rows, arms) if a.side == "peer"):
            ratios.append({"pair": f"{ours['arm']} vs {peer['arm']}", "job_speedup": peer["job_s"] / ours["job_s"],
                           "train_speedup": peer["train_s"] / ours["train_s"], "tokens_ratio": ours["tokens_per_s"] / peer["tokens_per_s"],
                           "memory_ratio": ours["peak_mb"] / peer["peak_mb"], "accuracy_points": 100 * (ours["accuracy"] - peer["accuracy"])})
    print()
    ratio_table = print_table(ratios, [("pair", "comparison", ""), ("job_speedup", "whole-job speedup", ".2f"), ("train_speedup", "train speedup", ".2f"),
                                       ("tokens_ratio", "tokens/s ratio", ".2f"), ("memory_ratio", "peak memory ratio", ".2f"),
                                       ("accuracy_points", "accuracy difference (points)", "+.2f")])
    payload = {"scenario": scenario, "settings": {k: v for k, v in vars(args).items()}, "machine": host,
               "machine_load_after": machine(0.5)["load_average"], "rows": rows, "ratios": ratios, "jobs": jobs,
               "markdown": table + "\n\n" + ratio_table}
    save_result(scenario, payload)
    return payload
