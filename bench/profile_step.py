"""Where a training step's time goes: tunesmith's fit() and the Trainer, phase by phase (bench/phases.py).

    python bench/profile_step.py                     # both, 20 steps after 5 of warm-up, full fine-tune
    python bench/profile_step.py --ops               # plus the 15 busiest operators of each
    python bench/profile_step.py --lora --steps 30

Each side runs in its own process on the same subset of the training data (batch 32, minilm-l6).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BENCH, PYTHON, data_split, peer_command, print_table, save_result
from phases import PHASES, StepPhaseTimer, print_report

LORA_TARGETS = "query,key,value,attention.output.dense,intermediate.dense,output.dense"


def profile_tunesmith(train_csv: str, args) -> dict:
    """fit() itself, wired as job.py wires it, stopped once the timer has its steps."""
    from transformers import AutoTokenizer

    from tunesmith.assets.resolve import load_pretrained, resolve_model_source
    from tunesmith.config import RunConfig
    from tunesmith.data import load_labeled_data
    from tunesmith.methods import adapt_model
    from tunesmith.tasks import get_task
    from tunesmith.train.fit import fit

    options = {"data": train_csv, "val_fraction": 0, "epochs": 1, "batch_size": 32, "checkpoint_every": 0, "lr": args.lr}
    if args.lora:
        options.update(method="lora", lora_rank=8, lora_alpha=16, target_modules=LORA_TARGETS)
    cfg = RunConfig.from_dict(options).validate()
    data = load_labeled_data(cfg.data, cfg.train.seed)
    source = resolve_model_source(cfg.model.model)
    tokenizer = load_pretrained(AutoTokenizer, source, cfg.model)
    task = get_task("text-classification")(data.label_names)
    model, groups = adapt_model(task.build_model(source, cfg.model), cfg.method)
    train = task.encode(tokenizer, data.train, cfg.model.max_length)

    class StopWhenDone:
        def on_step_end(self, loop):
            if timer.step >= timer.warmup + timer.steps:
                loop.state.should_stop = True

    timer = StepPhaseTimer(model, args.warmup, args.steps, args.ops)
    with tempfile.TemporaryDirectory() as run_dir:
        fit(model, task, train, None, cfg, Path(run_dir), groups, [StopWhenDone()], None, tokenizer.pad_token_id or 0, args.precision)
    return timer.report("tunesmith" + (" (LoRA)" if args.lora else ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", choices=["both", "tunesmith", "trainer"], default="both")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--ops", action="store_true", help="also the busiest operators (torch.profiler)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="tunesmith's side: bf16 autocast or float32")
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.lr = args.lr or (5e-4 if args.lora else 5e-5)
    data = data_split((args.warmup + args.steps + 2) * 32, 0)
    if args.side == "tunesmith":
        report = profile_tunesmith(str(data["train"]), args)
        print_report(report)
        Path(args.json_out).write_text(json.dumps(report)) if args.json_out else None
        return
    reports = []
    for side in ("tunesmith", "trainer") if args.side == "both" else (args.side,):
        out = Path(tempfile.mkstemp(suffix=".json")[1])
        if side == "tunesmith":
            command = [PYTHON, str(BENCH / "profile_step.py"), "--side", "tunesmith", "--steps", str(args.steps), "--warmup", str(args.warmup),
                       "--lr", str(args.lr), "--precision", args.precision, "--json-out", str(out)] + (["--lora"] if args.lora else []) + (["--ops"] if args.ops else [])
            subprocess.run(command, check=True, cwd=BENCH.parent)
            reports.append(json.loads(out.read_text()))
        else:
            extra = ["--phase-profile", str(args.steps), "--phase-warmup", str(args.warmup)]
            extra += (["--lora-rank", "8", "--lora-alpha", "16"] if args.lora else []) + (["--ops"] if args.ops else [])
            # batch 32, seed 0 and max length 128: the peer's own defaults, as this command always ran it
            command = peer_command("dynamic", data, out, 1, 32, args.lr, 0, 128, extra)
            output = subprocess.run(command, check=True, cwd=BENCH.parent, capture_output=True, text=True).stdout
            print(output)
            reports.append(json.loads(next(line for line in output.splitlines() if line.startswith("{\""))))
    rows = [{"side": r["name"], **r["ms_per_step"]} for r in reports]
    print()
    table = print_table(rows, [("side", "ms per step", "")] + [(p, p, ".1f") for p in (*PHASES, "total")])
    save_result("profile_step", {"reports": reports, "markdown": table, "settings": vars(args)})


if __name__ == "__main__":
    sys.exit(main())
