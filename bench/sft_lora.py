"""Scenario (d): LoRA instruction tuning of smollm2-135m on alpaca-demo, tunesmith against TRL's SFTTrainer + PEFT.

    python bench/sft_lora.py --quick        # 64 training / 50 held-out conversations, 1 epoch: a few minutes an arm
    python bench/sft_lora.py                # 256 / 100 (the whole test split), 1 epoch
    python bench/sft_lora.py --quick --tunesmith packed,padded --rounds 2

Every arm is a whole job in its own process (common.run_job: wall time from spawn to exit, the child's
peak RSS), on the same two files: fixed seeded subsets of the bundled alpaca-demo train and test splits
(JSON lists of Alpaca records, written once under bench/results/data/), the same model folder, chat
template (SmolLM2's own), max length, epochs, batch, learning rate, warmup, weight decay, seed and LoRA
settings (rank, alpha, dropout and tunesmith's Llama targets: every attention and MLP projection;
embeddings and the tied lm_head frozen). Rounds alternate the order of the arms.

tunesmith: `tunesmith train TRAIN --test TEST --task chat --model smollm2-135m --method lora --val-fraction 0
--epochs E --batch-size B --lr LR --max-length L --seed S --lora-rank R --lora-alpha A --lora-dropout D
--forgetting-text off --answer-prompts 0 [--packing off] --out DIR --overwrite`, everything else at its
defaults (precision by measurement, warmup 6%, weight decay 0.01). Its whole job includes scoring the
base model on the held-out file before training (the "before" loss chat runs always report); the
held-out answers it writes by default are turned off (the peer generates none; `--tunesmith-flags
"--answer-prompts 8"` puts them back). Peers: bench/peer_sft.py (see PEERS and its docstring).

Figures: whole job, training seconds, assistant tokens/s (the answer tokens and their end-of-turn token
trained on, as tunesmith's encoder counts them on the training file, x epochs / training seconds: the
same numerator for every arm), all tokens/s, optimizer steps, peak memory, and the held-out loss (mean
cross-entropy per assistant token on the held-out conversations: tunesmith's metrics.json `test.loss`,
the peer's computed with the same masking). Checks printed under the tables: the peer scored as many
held-out tokens as tunesmith (the same quantity), and with --check-base the base model's loss on both
sides (it must agree).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path

from common import (BENCH, PYTHON, RESULTS, alternate, base_model_folder, machine, median, print_table, save_result, try_job,
                    tunesmith_command)

MODEL = "smollm2-135m"
DATASET = "alpaca-demo"
TUNESMITH = {  # variant: (arm label, extra `tunesmith train` flags)
    "packed": ("tunesmith (packing on, its default)", []),
    "padded": ("tunesmith --packing off", ["--packing", "off"]),
}
PEERS = {  # arm: (label, bench/peer_sft.py flags)
    "packed": ("TRL packing=True (bfd, padding-free)", ["--packing", "on"]),
    "padded": ("TRL packing=False (padded, length-grouped)", ["--packing", "off"]),
    "packed-bf16": ("TRL packing=True, bf16", ["--packing", "on", "--bf16"]),
    "padded-bf16": ("TRL packing=False, bf16", ["--packing", "off", "--bf16"]),
    "packed-as-shipped": ("TRL packing=True, SFTConfig's bf16 and gradient checkpointing", ["--packing", "on", "--bf16", "--gradient-checkpointing"]),
}
QUICK = {"train_examples": 64, "test_examples": 50}
FULL = {"train_examples": 256, "test_examples": 0}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="64 training / 50 held-out conversations, 1 epoch")
    p.add_argument("--train-examples", type=int, help="a fixed seeded subset of alpaca-demo's 785 training conversations "
                                                      "(default 256, --quick 64; 0 = all)")
    p.add_argument("--test-examples", type=int, help="a fixed seeded subset of its 100 test conversations (default all, --quick 50; 0 = all)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=8, help="conversations a step (TRL with packing: packed rows a step)")
    p.add_argument("--lr", type=float, help="default: tunesmith's own for LoRA")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, help="default 2 x rank (tunesmith's default)")
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=1, help="repeat every arm this many times, alternating the order")
    p.add_argument("--tunesmith", default="packed", help=f"tunesmith arms, comma-separated: {', '.join(TUNESMITH)} (none: peers alone)")
    p.add_argument("--peers", default="packed,padded", help=f"peer arms, comma-separated: {', '.join(PEERS)} (none: tunesmith alone)")
    p.add_argument("--peer-micro-batch", type=int, help="rows of a peer's forward pass, accumulated to --batch-size (default: the "
                                                         "largest divisor of the batch within tunesmith's 1,024-token micro-batch at --max-length)")
    p.add_argument("--check-base", action="store_true", help="the peers also score the base model before training, to compare with "
                                                             "tunesmith's before loss (adds one held-out pass to their jobs)")
    p.add_argument("--tunesmith-flags", default="", help="extra `tunesmith train` flags, after the benchmark's own")
    return p.parse_args()


def chosen(names: str, table: dict, option: str) -> list[str]:
    picked = [] if names == "none" else [n for n in names.split(",") if n]
    unknown = [n for n in picked if n not in table]
    if unknown:
        raise SystemExit(f"{option}: no arm {', '.join(unknown)}; choose from {', '.join(table)} or none.")
    return picked


# -- data: the same two files for every arm ----------------------------------------------------------
def alpaca_subset(source: Path, rows: int | None, seed: int, split: str) -> Path:
    """A fixed seeded subset of an Alpaca JSON file (records kept in file order), written once under
    results/data/; the source itself when rows is 0/None or not smaller."""
    import numpy as np

    records = json.loads(Path(source).read_text(encoding="utf-8"))
    if not rows or rows >= len(records):
        return Path(source)
    path = RESULTS / "data" / f"{DATASET}-{split}-{rows}-seed{seed}.json"
    if not path.is_file():
        keep = sorted(np.random.default_rng(seed).choice(len(records), size=rows, replace=False).tolist())
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps([records[i] for i in keep], ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        partial.replace(path)
    return path


def token_counts(path: Path, model_folder: str, max_length: int) -> dict:
    """Conversations, tokens and assistant tokens (the targets: answers and their end-of-turn token) of a file,
    as tunesmith's chat encoder counts them with the model's template, after cutting to max_length."""
    import pandas as pd
    from transformers import AutoTokenizer

    from tunesmith.data import chat as conv

    raw = pd.DataFrame(json.loads(Path(path).read_text(encoding="utf-8")))
    chats = conv.conversations(raw, conv.chat_layout(raw)[0], path)
    encoded = conv.encode_conversations(AutoTokenizer.from_pretrained(model_folder), chats, max_length)
    return {"conversations": len(encoded), "tokens": sum(len(e.input_ids) for e in encoded),
            "assistant_tokens": sum(sum(1 for t in e.labels[1:] if t != conv.IGNORE) for e in encoded),
            "cut": sum(1 for e in encoded if e.truncated)}


def settings_of(args) -> dict:
    from tunesmith.architectures import ARCHITECTURES
    from tunesmith.methods import get_method

    defaults = QUICK if args.quick else FULL
    pick = lambda given, key: defaults[key] if given is None else given  # noqa: E731
    return {"train_examples": pick(args.train_examples, "train_examples"), "test_examples": pick(args.test_examples, "test_examples"),
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr or get_method("lora").lr, "max_length": args.max_length,
            "seed": args.seed, "lora_rank": args.lora_rank, "lora_alpha": args.lora_alpha or 2 * args.lora_rank, "lora_dropout": args.lora_dropout,
            "lora_targets": ",".join(ARCHITECTURES["llama"].lora), "rounds": args.rounds, "check_base": args.check_base,
            "tunesmith_flags": args.tunesmith_flags,
            "peer_micro_batch": args.peer_micro_batch or peer_micro_batch(args.batch_size, args.max_length)}


def peer_micro_batch(batch_size: int, max_length: int) -> int:
    """Rows of the peer's forward pass: the largest divisor of the batch whose rows of max_length fit tunesmith's
    chat micro-batch (1,024 tokens; tasks/chat.py), so that both sides hold about as many activations at once
    (a batch of 8 rows of 512 tokens in one pass was killed for memory on a 24 GB machine)."""
    from tunesmith.tasks.chat import Chat

    fits = max(1, Chat.micro_batch_tokens // max_length)
    return max(d for d in range(1, batch_size + 1) if batch_size % d == 0 and d <= fits)


# -- the two sides ------------------------------------------------------------------------------------
def train_options() -> set[str]:
    """The options this tunesmith's `train` command takes (--answer-prompts arrived with chat's answers)."""
    text = subprocess.run([PYTHON, "-m", "tunesmith.cli", "train", "--help"], capture_output=True, text=True, cwd=BENCH.parent).stdout
    return set(re.findall(r"--[a-z][a-z0-9-]*", text))


def run_tunesmith(variant: str, data: dict, s: dict, tag: str) -> dict:
    out = RESULTS / "runs" / tag
    flags = ["--task", "chat", "--model", MODEL, "--method", "lora", "--val-fraction", "0", "--epochs", f"{s['epochs']:g}",
             "--batch-size", str(s["batch_size"]), "--lr", f"{s['lr']:g}", "--max-length", str(s["max_length"]), "--seed", str(s["seed"]),
             "--lora-rank", str(s["lora_rank"]), "--lora-alpha", f"{s['lora_alpha']:g}", "--lora-dropout", f"{s['lora_dropout']:g}",
             "--forgetting-text", "off"]
    if "--answer-prompts" in s["options"]:
        flags += ["--answer-prompts", "0"]
    job = try_job(tag, tunesmith_command(data, out, flags + TUNESMITH[variant][1] + s["tunesmith_flags"].split()))
    if "failed" in job:
        return job
    metrics = json.loads((out / "metrics.json").read_text())
    train, test = metrics["train"], metrics["test"]
    job.update(train_s=train["seconds"], steps=train["steps"], precision=train.get("precision"), tokens_per_s=train["tokens_per_second"],
               eval_s=test.get("seconds"), held_out_loss=test["loss"], held_out_target_tokens=test["target_tokens"],
               base_held_out_loss=(metrics.get("before") or {}).get("test", {}).get("loss"), job_s_inside=metrics.get("job_seconds"),
               peak_memory_mb_inside=metrics.get("peak_memory_mb"))
    return job


def run_peer(peer: str, data: dict, s: dict, tag: str) -> dict:
    out = RESULTS / "runs" / f"{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    flags = PEERS[peer][1]
    command = [PYTHON, str(BENCH / "peer_sft.py"), str(data["train"]), str(data["test"]), f"{s['epochs']:g}", str(out),
               "--model", s["model_folder"], "--batch-size", str(s["batch_size"]), "--lr", f"{s['lr']:g}", "--max-length", str(s["max_length"]),
               "--seed", str(s["seed"]), "--lora-rank", str(s["lora_rank"]), "--lora-alpha", f"{s['lora_alpha']:g}",
               "--lora-dropout", f"{s['lora_dropout']:g}", "--lora-targets", s["lora_targets"], "--micro-batch", str(s["peer_micro_batch"]),
               *flags, *(["--score-base"] if s["check_base"] else [])]
    job = try_job(tag, command)
    if "failed" in job:
        return job
    result = json.loads(out.read_text())
    job.update(result, peak_rss_mb=job["peak_rss_mb"], precision="bf16" if result["bf16"] else "fp32",
               tokens_per_s=result["train_tokens"] / result["train_s"])
    return job


# -- tables -------------------------------------------------------------------------------------------
def summarise(label: str, side: str, jobs: list[dict], assistant_tokens: float) -> dict:
    done = [j for j in jobs if "failed" not in j]
    row = {"arm": label, "side": side, "runs": len(done)}
    if not done:
        return {**row, "failed": jobs[0]["failed"] if jobs else "not run"}
    train_s = median([j["train_s"] for j in done])
    row.update(job_s=median([j["wall_s"] for j in done]), train_s=train_s, eval_s=median([j["eval_s"] for j in done if j.get("eval_s") is not None] or [0]),
               assistant_per_s=assistant_tokens / train_s, tokens_per_s=median([j["tokens_per_s"] for j in done]), steps=done[0].get("steps"),
               peak_mb=max(j["peak_rss_mb"] for j in done), precision=done[0].get("precision"),
               held_out_loss=sum(j["held_out_loss"] for j in done) / len(done), held_out_tokens=done[0]["held_out_target_tokens"],
               base_loss=done[0].get("base_held_out_loss"))
    return row


def ratio_rows(rows: list[dict]) -> list[dict]:
    """tunesmith against each peer: speedups peer / tunesmith seconds, throughput and memory tunesmith / peer, loss tunesmith - peer."""
    ratios = []
    for ours in (r for r in rows if r["side"] == "tunesmith" and r["runs"]):
        for peer in (r for r in rows if r["side"] == "peer" and r["runs"]):
            ratios.append({"pair": f"{ours['arm']} vs {peer['arm']}", "job_speedup": peer["job_s"] / ours["job_s"],
                           "train_speedup": peer["train_s"] / ours["train_s"], "throughput_ratio": ours["assistant_per_s"] / peer["assistant_per_s"],
                           "memory_ratio": ours["peak_mb"] / peer["peak_mb"], "loss_difference": ours["held_out_loss"] - peer["held_out_loss"]})
    return ratios


def check_lines(rows: list[dict]) -> list[str]:
    """Whether the peers' held-out loss is tunesmith's quantity: the same number of target tokens, and (with
    --check-base) the same base-model loss."""
    ours = next((r for r in rows if r["side"] == "tunesmith" and r["runs"]), None)
    lines = [f"- {r['arm']}: {r['failed']}" for r in rows if not r["runs"]]
    if ours is None:
        return lines
    for peer in (r for r in rows if r["side"] == "peer" and r["runs"]):
        if peer["held_out_tokens"] != ours["held_out_tokens"]:
            lines.append(f"- MISMATCH: {peer['arm']} scored {peer['held_out_tokens']:,} held-out target tokens, tunesmith "
                         f"{ours['held_out_tokens']:,}: the two losses are not the same quantity.")
        if peer.get("base_loss") is not None and ours.get("base_loss") is not None:
            lines.append(f"- Base model's held-out loss: {peer['arm']} {peer['base_loss']:.5f}, tunesmith {ours['base_loss']:.5f} "
                         f"(difference {peer['base_loss'] - ours['base_loss']:+.5f}).")
    if not any(line.startswith("- MISMATCH") for line in lines):
        lines.append(f"- Every arm scored the same {ours['held_out_tokens']:,} held-out assistant tokens.")
    return lines


def heading(s: dict, data: dict, counts: dict) -> str:
    train, test = counts["train"], counts["test"]
    return (f"{MODEL} LoRA (rank {s['lora_rank']}, alpha {s['lora_alpha']:g}, dropout {s['lora_dropout']:g}, {s['lora_targets']}) on {DATASET}: "
            f"train {data['train']} ({train['conversations']:,} conversations, {train['tokens']:,} tokens, {train['assistant_tokens']:,} assistant "
            f"tokens, {train['cut']} cut to {s['max_length']}), held out {data['test']} ({test['conversations']:,} conversations, "
            f"{test['assistant_tokens']:,} assistant tokens); {s['epochs']:g} epoch(s), batch {s['batch_size']}, lr {s['lr']:g}, max length "
            f"{s['max_length']}, seed {s['seed']}, {s['rounds']} round(s); the peers accumulate micro-batches of {s['peer_micro_batch']} "
            f"(tunesmith: of at most 1,024 tokens). tunesmith's whole job includes scoring the base model on the held-out "
            f"file before training{' (the peers too: --check-base)' if s['check_base'] else ''}.")


def main():
    args = parse_args()
    tunesmith_arms, peer_arms = chosen(args.tunesmith, TUNESMITH, "--tunesmith"), chosen(args.peers, PEERS, "--peers")
    s = settings_of(args)
    from tunesmith.assets import dataset_files

    files = dataset_files(DATASET)
    data = {"train": alpaca_subset(files["train"], s["train_examples"], s["seed"], "train"),
            "test": alpaca_subset(files["test"], s["test_examples"], s["seed"], "test")}
    s["model_folder"] = base_model_folder(MODEL)
    counts = {split: token_counts(path, s["model_folder"], s["max_length"]) for split, path in data.items()}
    s["options"] = train_options() if tunesmith_arms else set()
    host = machine()
    text = heading(s, data, counts)
    print(f"Machine: {host['cpu']}, {host['cores']} cores, {host['vector_flags']}, fp32 matmul {host['matmul_gflops']} GFLOP/s, "
          f"load {host['load_average']}.\n{text}", flush=True)
    arms = [(TUNESMITH[v][0], "tunesmith", v) for v in tunesmith_arms] + [(PEERS[p][0], "peer", p) for p in peer_arms]
    jobs = {label: [] for label, _, _ in arms}
    for round_, (label, side, key) in alternate(arms, args.rounds):
        tag = f"sft-{side}-{key}-r{round_}"
        job = run_tunesmith(key, data, s, tag) if side == "tunesmith" else run_peer(key, data, s, tag)
        if "failed" not in job:
            print(f"  {tag}: whole job {job['wall_s']:.1f} s, train {job['train_s']:.1f} s, {job['steps']} steps, held-out loss "
                  f"{job['held_out_loss']:.4f} ({job['held_out_target_tokens']:,} tokens), peak {job['peak_rss_mb']:,.0f} MB, "
                  f"{job.get('precision')} (load {job['load_before']})", flush=True)
        jobs[label].append(job)
    assistant = counts["train"]["assistant_tokens"] * s["epochs"]
    rows = [summarise(label, side, jobs[label], assistant) for label, side, _ in arms]
    print()
    table = print_table([r for r in rows if r["runs"]], [
        ("arm", "arm", ""), ("job_s", "whole job s", ".1f"), ("train_s", "train s", ".1f"), ("eval_s", "held-out scoring s", ".1f"),
        ("assistant_per_s", "assistant tokens/s", ",.1f"), ("tokens_per_s", "all tokens/s", ",.1f"), ("steps", "steps", ""),
        ("peak_mb", "peak MB", ",.0f"), ("precision", "precision", ""), ("held_out_loss", "held-out loss", ".4f")])
    ratios = ratio_rows(rows)
    print()
    ratio_table = print_table(ratios, [
        ("pair", "comparison", ""), ("job_speedup", "whole job: peer s / tunesmith s", ".2f"), ("train_speedup", "training: peer s / tunesmith s", ".2f"),
        ("throughput_ratio", "assistant tokens/s: tunesmith / peer", ".2f"), ("memory_ratio", "peak memory: tunesmith / peer", ".2f"),
        ("loss_difference", "held-out loss: tunesmith - peer", "+.4f")]) if ratios else ""
    checks = check_lines(rows)
    for line in checks:
        print(line)
    markdown = "\n\n".join(part for part in (f"### {text}", table, ratio_table, "\n".join(checks)) if part)
    save_result("sft_lora", {"scenario": "sft_lora", "arguments": vars(args), "settings": {k: v for k, v in s.items() if k != "options"},
                             "files": {k: str(v) for k, v in data.items()}, "counts": counts, "machine": host,
                             "machine_load_after": machine(0.5)["load_average"], "rows": rows, "ratios": ratios, "jobs": jobs, "markdown": markdown})


if __name__ == "__main__":
    main()
