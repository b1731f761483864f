"""The chat peer: TRL's SFTTrainer with a PEFT LoRA adapter, as a TRL user fine-tunes a chat model on Alpaca data.

    python bench/peer_sft.py TRAIN.json TEST.json EPOCHS OUT.json --model MODEL_FOLDER [options]

TRAIN/TEST: JSON lists of Alpaca records {instruction, input, output}, the files tunesmith reads. Each record
becomes the conversation tunesmith makes of it (tunesmith/data/chat.py, written out here because tunesmith is
never imported in this process: its import time would count against the peer): one user turn, the instruction
and the input joined by a line break (an empty input left out), and one assistant turn, the output.

Why prompt/completion and not `messages` + `assistant_only_loss=True`: SmolLM2's chat template has no
`{% generation %}` markers, and TRL 1.16 can patch in markers only for the templates it knows, so
`SFTTrainer(..., args=SFTConfig(assistant_only_loss=True))` on a `messages` dataset raises "The chat template
is not training-compatible ... patching is not supported for this template". The conversational
prompt/completion layout (prompt = [user turn], completion = [assistant turn]) renders the very same template
and, with `completion_only_loss` (TRL's default for that layout, set explicitly here), puts the loss on the
tokens after the rendered prompt (which ends with the generation prompt `<|im_start|>assistant\\n`). Those are
tunesmith's targets (the answer and its `<|im_end|>`) plus the line break the template writes after
`<|im_end|>`: one more target token per conversation (checked on alpaca-demo: the same input ids, the same
labels up to that last token).

Settings that match tunesmith's: LoRA through `peft_config=LoraConfig(task_type="CAUSAL_LM", r, lora_alpha,
lora_dropout, target_modules)` with no modules_to_save (embeddings and the tied lm_head frozen), AdamW (the
Trainer's fused default) with weight decay --weight-decay, gradient clipping at 1, a linear decay after
floor(--warmup-ratio x steps) warmup steps (tunesmith's rounding; the Trainer's own ratio rounds up), the
same batch, learning rate, epochs, max length and seed. SFTConfig's own defaults that would change the work
are set to tunesmith's: `bf16=False` (SFTConfig defaults to bf16=True; --bf16 sets it, with use_cpu on a CPU) and
`gradient_checkpointing=False` (SFTConfig defaults to True; --gradient-checkpointing sets it).
--packing on: `packing=True` with TRL's default strategy "bfd" (best-fit decreasing into rows of
--max-length tokens, padding-free: one flat row per batch with restarting position_ids; correct on a CPU
because TRL calls the model with use_cache=False, so transformers builds the block-diagonal mask from the
position_ids). A batch is then --batch-size *packed rows*, not conversations: fewer, larger steps than
tunesmith's batch of conversations. --packing off: dynamic padding with length-grouped batches
(`train_sampling_strategy="group_by_length"`, the Trainer's best practice).
--micro-batch M: `per_device_train_batch_size=M, gradient_accumulation_steps=B/M`, the same update as a batch
of B (the Trainer divides the summed loss by the targets of all B), as a user whose machine cannot hold B
at once sets it: at --max-length 512, eight packed rows (4,096 tokens, ~6 MB of activations a token) were
killed for memory on a 24 GB machine; tunesmith bounds its own micro-batches at 1,024 tokens the same way.

Held-out loss: after training, the mean cross-entropy per target token over the test conversations, with
tunesmith's masking: TRL's own tokenisation of the test file (`eval_dataset`, unpacked, truncated to
--max-length), less the layout line break after the end-of-turn token, scored with TRL's own forward (the
fused LM head its loss uses), padded batches of --eval-batch-size in file order, dropout off. The same
quantity as tunesmith's metrics.json `test.loss` (`trainer.evaluate()`'s eval_loss is not: it averages the
batches' means and counts the line break). --score-base also scores the base model first (a check that both
sides measure the same thing: it must equal tunesmith's `before.test.loss`; it costs one more pass, so the
benchmark leaves it off by default).
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from peft import LoraConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

IGNORE = -100


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("train"), p.add_argument("test"), p.add_argument("epochs", type=float), p.add_argument("out")
    p.add_argument("--model", required=True, help="HF causal-LM folder (the benchmark passes tunesmith's smollm2-135m folder)")
    p.add_argument("--packing", choices=["on", "off"], default="on")
    p.add_argument("--batch-size", type=int, default=8, help="per_device_train_batch_size: conversations, or packed rows with --packing on")
    p.add_argument("--micro-batch", type=int, default=0, help="rows a forward pass, accumulated to --batch-size (0: the whole batch at once)")
    p.add_argument("--eval-batch-size", type=int, default=8, help="held-out conversations a batch (per_device_eval_batch_size's default)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup-ratio", type=float, default=0.06)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lora-rank", type=int, default=8)
    p.add_argument("--lora-alpha", type=float, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    p.add_argument("--bf16", action="store_true", help="bf16=True (SFTConfig's own default), with use_cpu=True where there is no GPU")
    p.add_argument("--gradient-checkpointing", action="store_true", help="gradient_checkpointing=True (SFTConfig's own default)")
    p.add_argument("--score-base", action="store_true", help="also score the held-out file with the base model before training")
    return p.parse_args()


def alpaca_conversation(record: dict) -> dict:
    """One Alpaca record as TRL's conversational prompt/completion, the turns tunesmith's data/chat.py makes of it."""
    user = "\n".join(part for part in (record["instruction"], record.get("input") or "") if part.strip())
    return {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": record["output"]}]}


def read_conversations(path: str) -> Dataset:
    records = json.loads(Path(path).read_text(encoding="utf-8"))
    return Dataset.from_list([alpaca_conversation(r) for r in records])


def assistant_labels(labels: list[int], end_of_turn: int, layout_tokens: set[int]) -> list[int]:
    """TRL's completion labels less the line break the template writes after the end-of-turn token, which
    tunesmith does not train on (its assistant span ends at <|im_end|>): tunesmith's targets exactly. A
    completion cut by max_length before its end-of-turn keeps every label, as tunesmith's does."""
    ends = [i for i, t in enumerate(labels) if t == end_of_turn]
    if not ends:
        return list(labels)
    return [IGNORE if i > ends[-1] and t in layout_tokens else t for i, t in enumerate(labels)]


def whitespace_tokens(tokenizer, ids) -> set[int]:
    """The label tokens that decode to whitespace alone (the template's line breaks between turns)."""
    return {t for t in set(ids) if t != IGNORE and tokenizer.decode([t]).strip() == ""}


def held_out_loss(trainer, dataset: Dataset, batch_size: int, tokenizer, bf16: bool) -> dict:
    """Mean cross-entropy per target token (tunesmith's targets) over the held-out conversations, one per row,
    padded batches in file order, through TRL's fused LM head (per-token log-probabilities, zero where masked)."""
    model = trainer.model
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    end_of_turn, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    layout = whitespace_tokens(tokenizer, (t for row in dataset["labels"] for t in row))
    total, targets, trl_targets = 0.0, 0, 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start:start + batch_size]
            width = max(len(ids) for ids in rows["input_ids"])
            ids = torch.full((len(rows["input_ids"]), width), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            labels = torch.full_like(ids, IGNORE)
            for r, (row_ids, row_labels) in enumerate(zip(rows["input_ids"], rows["labels"])):
                ids[r, :len(row_ids)] = torch.tensor(row_ids)
                mask[r, :len(row_ids)] = 1
                labels[r, :len(row_labels)] = torch.tensor(assistant_labels(row_labels, end_of_turn, layout))
                trl_targets += sum(1 for t in row_labels[1:] if t != IGNORE)
            output = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device), fused_lm_head=True, use_cache=False)
            total += float(-output.log_probs.float().sum())
            targets += int(output.label_mask.sum())
    model.train(was_training)
    return {"loss": total / max(targets, 1), "target_tokens": targets, "trl_target_tokens": trl_targets}


def training_config(args) -> SFTConfig:
    micro = args.micro_batch or args.batch_size
    if args.batch_size % micro:
        raise SystemExit(f"--micro-batch {micro} does not divide --batch-size {args.batch_size}; give a divisor.")
    extra = {"use_cpu": True} if args.bf16 and not torch.cuda.is_available() else {}  # bf16 autocast on a CPU needs use_cpu
    if args.packing == "off":
        extra["train_sampling_strategy"] = "group_by_length"
    return SFTConfig(
        output_dir="/tmp/tunesmith-bench-peer-sft", per_device_train_batch_size=micro, gradient_accumulation_steps=args.batch_size // micro,
        per_device_eval_batch_size=args.eval_batch_size, learning_rate=args.lr, num_train_epochs=args.epochs, lr_scheduler_type="linear",
        weight_decay=args.weight_decay, max_grad_norm=1.0, seed=args.seed, report_to=[], save_strategy="no", logging_strategy="no",
        eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, bf16=args.bf16, gradient_checkpointing=args.gradient_checkpointing,
        max_length=args.max_length, packing=args.packing == "on", completion_only_loss=True, eval_packing=False, **extra)


def schedule(trainer, args) -> dict:
    """Rows, steps and warmup of this run; warmup set on the trainer before train() as tunesmith rounds it (the
    floor of the ratio x steps, where the Trainer's own ratio rounds up). Steps as the Trainer counts them."""
    rows, micro, accumulate = len(trainer.train_dataset), trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps
    micro_batches = math.ceil(rows / micro)
    steps = max(1, math.ceil(args.epochs * max(1, math.ceil(micro_batches / accumulate))))
    trainer.args.warmup_steps = math.floor(steps * args.warmup_ratio)
    return {"rows": rows, "batch_size": args.batch_size, "micro_batch": micro, "gradient_accumulation": accumulate, "steps_planned": steps,
            "warmup_steps": trainer.args.warmup_steps}


def main():
    args = parse_args()
    train_set, test_set = read_conversations(args.train), read_conversations(args.test)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    set_seed(args.seed)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    lora = LoraConfig(task_type="CAUSAL_LM", r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                      target_modules=args.lora_targets.split(","))
    started = time.perf_counter()
    trainer = SFTTrainer(model=model, args=training_config(args), train_dataset=train_set, eval_dataset=test_set,
                         processing_class=tokenizer, peft_config=lora)
    prepare_s = time.perf_counter() - started
    plan = schedule(trainer, args)
    trained_targets = sum(sum(1 for t in row[1:] if t != IGNORE) for row in trainer.train_dataset["labels"])
    real_tokens = sum(len(row) for row in trainer.train_dataset["input_ids"])
    base = held_out_loss(trainer, trainer.eval_dataset, args.eval_batch_size, tokenizer, args.bf16) if args.score_base else None

    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    scores = held_out_loss(trainer, trainer.eval_dataset, args.eval_batch_size, tokenizer, args.bf16)
    eval_s = time.perf_counter() - started
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    result = {"side": "peer", "packing": args.packing, "bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing,
              "n_train": len(train_set), "n_test": len(test_set), "epochs": args.epochs, "lr": args.lr, **plan,
              "steps": trainer.state.global_step, "prepare_s": round(prepare_s, 2), "train_s": round(train_s, 2), "eval_s": round(eval_s, 2),
              "job_s_inside": round(time.perf_counter() - STARTED, 2), "held_out_loss": scores["loss"], "held_out_target_tokens": scores["target_tokens"],
              "held_out_trl_target_tokens": scores["trl_target_tokens"], "base_held_out_loss": base["loss"] if base else None,
              "trained_target_tokens": trained_targets * args.epochs, "train_tokens": real_tokens * args.epochs, "trainable": trainable,
              "optimizer": trainer.args.optim.value, "torch_threads": torch.get_num_threads(),
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
