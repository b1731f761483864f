"""The peer: the Hugging Face Trainer fine-tuning minilm-l6 on a CSV (from shared/peers/cpu_peer_hf_trainer.py).

    python bench/peer_trainer.py {pad128|dynamic} TRAIN.csv TEST.csv EPOCHS OUT.json --model MODEL_FOLDER [options]

pad128  = run_glue.py's way: every example padded to --max-length, sequential batches
dynamic = the Trainer's best practice: DataCollatorWithPadding + length-grouped sampling
--lora-rank R (with --lora-alpha, --lora-dropout, --lora-targets) wraps the model with PEFT LoRA,
the head in modules_to_save, as tunesmith's `--method lora` does.
--phase-profile N times N training steps by phase (bench/phases.py) and stops.
--bf16 adds `bf16=True, use_cpu=True` (CPU bf16 autocast, the BF16=1 switch of the shared script),
as a user who knows the option would set it.

Same defaults as the shared script (fused AdamW is the Trainer's default, no warmup, no weight
decay, max grad norm 1, eval batch 64); the whole process is timed by the caller. Nominal FLOPs
per token are the same as tunesmith's for the same model and method, so the caller takes them from
the tunesmith run rather than importing tunesmith here (its import time would count against the peer).
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,  # noqa: E402
                          TrainerCallback, TrainingArguments, default_data_collator)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/phases.py; tunesmith itself is never imported here


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["pad128", "dynamic"])
    p.add_argument("train"), p.add_argument("test"), p.add_argument("epochs", type=float), p.add_argument("out")
    p.add_argument("--model", required=True, help="HF model folder (the benchmark passes tunesmith's minilm-l6 folder)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--bf16", action="store_true", help="bf16=True, use_cpu=True: the Trainer's CPU bf16 autocast")
    p.add_argument("--lora-rank", type=int, default=0)
    p.add_argument("--lora-alpha", type=float, default=None)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--lora-targets", default="query,key,value,attention.output.dense,intermediate.dense,output.dense")
    p.add_argument("--phase-profile", type=int, default=0, help="time this many steps by phase, then stop")
    p.add_argument("--phase-warmup", type=int, default=5)
    p.add_argument("--ops", action="store_true", help="with --phase-profile: also a torch.profiler operator table")
    return p.parse_args()


def macro_f1(predicted: np.ndarray, labels: np.ndarray, classes: int) -> float:
    """Mean F1 over the training labels (0 for a label never predicted nor present), as sklearn's
    f1_score(average="macro", labels=range(classes), zero_division=0) computes it, without importing sklearn."""
    scores = []
    for c in range(classes):
        hits = int(((predicted == c) & (labels == c)).sum())
        guessed, actual = int((predicted == c).sum()), int((labels == c).sum())
        scores.append(2 * hits / (guessed + actual) if guessed + actual else 0.0)
    return float(np.mean(scores))


def main():
    args = parse_args()
    train, test = pd.read_csv(args.train), pd.read_csv(args.test)
    names = sorted(train["label"].astype(str).unique())
    index = {n: i for i, n in enumerate(names)}
    for table in (train, test):
        table["text"] = table["text"].astype(str)
        table["label"] = table["label"].astype(str).map(index)
    tokenizer = AutoTokenizer.from_pretrained(args.model)

    def encode(batch):
        if args.mode == "pad128":
            return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=args.max_length)
        return tokenizer(batch["text"], truncation=True, max_length=args.max_length)

    train_set = Dataset.from_pandas(train[["text", "label"]]).map(encode, batched=True, remove_columns=["text"])
    test_set = Dataset.from_pandas(test[["text", "label"]]).map(encode, batched=True, remove_columns=["text"])
    real_tokens = int(sum(sum(mask) for mask in train_set["attention_mask"]))

    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(names))
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model

        head = ["bert.pooler.dense", "classifier"]
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=args.lora_rank, lora_alpha=args.lora_alpha or 2 * args.lora_rank,
                                                 lora_dropout=args.lora_dropout, target_modules=args.lora_targets.split(","),
                                                 modules_to_save=head, exclude_modules=head))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    extra = {"train_sampling_strategy": "group_by_length"} if args.mode == "dynamic" else {}
    if args.bf16:
        extra.update(bf16=True, use_cpu=True)
    training_args = TrainingArguments(
        output_dir="/tmp/tunesmith-bench-peer", per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed, report_to=[], save_strategy="no",
        logging_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, **extra)
    collator = default_data_collator if args.mode == "pad128" else DataCollatorWithPadding(tokenizer)

    def accuracy(prediction):
        predicted, labels = np.argmax(prediction.predictions, -1), prediction.label_ids
        return {"accuracy": float((predicted == labels).mean()), "macro_f1": macro_f1(predicted, labels, len(names))}

    callbacks = []
    timer = None
    if args.phase_profile:
        from phases import StepPhaseTimer, print_report

        class StopWhenDone(TrainerCallback):
            def on_step_end(self, targs, state, control, **kw):
                if timer.step >= timer.warmup + timer.steps:
                    control.should_training_stop = True

        timer = StepPhaseTimer(model, args.phase_warmup, args.phase_profile, args.ops)
        callbacks.append(StopWhenDone())
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, eval_dataset=test_set, data_collator=collator,
                      compute_metrics=accuracy, callbacks=callbacks)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    if timer is not None:
        print_report(timer.report(f"Trainer ({args.mode}{', LoRA' if args.lora_rank else ''})"))
        return
    started = time.perf_counter()
    scores = trainer.evaluate()
    eval_s = time.perf_counter() - started
    tokens = real_tokens * args.epochs
    result = {"mode": args.mode, "bf16": args.bf16, "lora_rank": args.lora_rank, "n_train": len(train_set), "n_test": len(test_set), "epochs": args.epochs,
              "train_s": round(train_s, 2), "eval_s": round(eval_s, 2), "job_s_inside": round(time.perf_counter() - STARTED, 2),
              "accuracy": scores["eval_accuracy"], "macro_f1": scores["eval_macro_f1"], "tokens": tokens, "tokens_per_second": round(tokens / train_s, 1),
              "trainable": trainable, "optimizer": training_args.optim.value,
              "torch_threads": torch.get_num_threads(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
