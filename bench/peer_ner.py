"""The NER peer: the Hugging Face Trainer the way transformers' run_ner.py runs it (from shared/peers/cpu_peer_ner.py).

    python bench/peer_ner.py TRAIN TEST EPOCHS OUT.json --model MODEL_FOLDER [options]

TRAIN/TEST: JSONL with a token list and a tag list a line (`tokens` and `tags`/`ner_tags`, else the
first two columns, as run_ner.py picks them), or CoNLL ('token ... tag' lines, blank-line breaks).
What run_ner.py does and this does too: the label list is the tags sorted (of train and test, as a hub
dataset's ClassLabel feature lists every tag, so that a small training subset may miss one); the tokenizer
reads the words (`is_split_into_words=True`, truncation at --max-length, no padding); the first
sub-token of each word carries the word's tag and the other sub-tokens and special tokens -100
(label_all_tokens off); `DataCollatorForTokenClassification` pads each batch; the Trainer trains
with its defaults (fused AdamW, linear decay, no warmup, no weight decay, clipping at 1); then
`trainer.save_model()`, and the test file is scored with seqeval on the tags of the first sub-tokens
(the `seqeval` metric: default/conlleval mode, micro-averaged entity precision, recall and F1, and
token accuracy). Departures from run_ner.py's defaults: no checkpoints during training (run_ner: every
500 steps; tunesmith writes one at each epoch end), no logging or progress bar, eval batch 64 (run_ner: 8).
--group-by-length adds `train_sampling_strategy="group_by_length"` (the Trainer's best practice);
--bf16 adds `bf16=True, use_cpu=True` (CPU bf16 autocast).
Tokens per second count the real (unpadded) sub-tokens of every training sentence, once per epoch,
as tunesmith counts them. tunesmith is never imported here (its import time would count against the peer).
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score  # noqa: E402
from transformers import (AutoConfig, AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification,  # noqa: E402
                          Trainer, TrainingArguments, set_seed)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("train"), p.add_argument("test"), p.add_argument("epochs", type=float), p.add_argument("out")
    p.add_argument("--model", required=True, help="HF model folder (the benchmark passes tunesmith's minilm-l6 folder)")
    p.add_argument("--batch-size", type=int, default=8, help="per-device train batch (run_ner.py's default: 8)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=128, help="run_ner.py's --max_seq_length")
    p.add_argument("--group-by-length", action="store_true", help="train_sampling_strategy='group_by_length'")
    p.add_argument("--bf16", action="store_true", help="bf16=True, use_cpu=True: the Trainer's CPU bf16 autocast")
    p.add_argument("--output-dir", default=None, help="where trainer.save_model() writes (default: OUT.json's name + '.model')")
    return p.parse_args()


def read_sentences(path: str) -> list[dict]:
    """{"tokens": [...], "tags": [...]} per sentence, from JSONL (or JSON) token/tag lists or CoNLL lines."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith((".jsonl", ".json")):
        rows = json.loads(text) if path.endswith(".json") else [json.loads(line) for line in text.splitlines() if line.strip()]
        columns = list(rows[0])
        words = "tokens" if "tokens" in columns else columns[0]
        tags = next((c for c in ("tags", "ner_tags") if c in columns), columns[1])
        return [{"tokens": row[words], "tags": row[tags]} for row in rows]
    sentences, words, tags = [], [], []
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if words:
                sentences.append({"tokens": words, "tags": tags})
            words, tags = [], []
            continue
        words.append(parts[0]), tags.append(parts[-1])
    if words:
        sentences.append({"tokens": words, "tags": tags})
    return sentences


def tokenize_and_align_labels(examples, tokenizer, label_to_id: dict, max_length: int):
    """run_ner.py's function with label_all_tokens=False: the first sub-token of a word gets its tag, the rest -100."""
    tokenized = tokenizer(examples["tokens"], padding=False, truncation=True, max_length=max_length, is_split_into_words=True)
    labels = []
    for i, tags in enumerate(examples["tags"]):
        previous, row = None, []
        for word in tokenized.word_ids(batch_index=i):
            row.append(-100 if word is None or word == previous else label_to_id[tags[word]])
            previous = word
        labels.append(row)
    tokenized["labels"] = labels
    return tokenized


def entity_scores(predictions: np.ndarray, labels: np.ndarray, label_list: list[str]) -> dict:
    """run_ner.py's compute_metrics: the tags where the label is not -100, scored by seqeval (default mode, micro)."""
    predicted = np.argmax(predictions, axis=2)
    y_pred = [[label_list[p] for p, g in zip(pred, gold) if g != -100] for pred, gold in zip(predicted, labels)]
    y_true = [[label_list[g] for g in gold if g != -100] for gold in labels]
    return {"precision": float(precision_score(y_true, y_pred)), "recall": float(recall_score(y_true, y_pred)),
            "f1": float(f1_score(y_true, y_pred)), "accuracy": float(accuracy_score(y_true, y_pred))}


def main():
    args = parse_args()
    train_rows, test_rows = read_sentences(args.train), read_sentences(args.test)
    # run_ner.py sorts the training file's tags; a test tag missing there (a small subset) would stop it with
    # a KeyError, so the label list is the tags of both files, as a hub dataset's ClassLabel feature would give
    label_list = sorted({tag for rows in (train_rows, test_rows) for row in rows for tag in row["tags"]})
    label_to_id = {label: i for i, label in enumerate(label_list)}

    set_seed(args.seed)
    config = AutoConfig.from_pretrained(args.model, num_labels=len(label_list))
    tokenizer = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    model = AutoModelForTokenClassification.from_pretrained(args.model, config=config)
    model.config.label2id = dict(label_to_id)
    model.config.id2label = dict(enumerate(label_list))

    def encode(rows):
        return Dataset.from_list(rows).map(tokenize_and_align_labels, batched=True, remove_columns=["tokens", "tags"],
                                           fn_kwargs={"tokenizer": tokenizer, "label_to_id": label_to_id, "max_length": args.max_length})

    train_set, test_set = encode(train_rows), encode(test_rows)
    real_tokens = int(sum(len(ids) for ids in train_set["input_ids"]))

    extra = {"train_sampling_strategy": "group_by_length"} if args.group_by_length else {}
    if args.bf16:
        extra.update(bf16=True, use_cpu=True)
    output_dir = args.output_dir or str(Path(args.out).with_suffix(".model"))
    training_args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed, report_to=[], save_strategy="no",
        logging_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, **extra)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, processing_class=tokenizer,
                      data_collator=DataCollatorForTokenClassification(tokenizer))
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    trainer.save_model()

    started = time.perf_counter()
    prediction = trainer.predict(test_set)
    scores = entity_scores(prediction.predictions, prediction.label_ids, label_list)
    eval_s = time.perf_counter() - started
    tokens = real_tokens * args.epochs
    result = {"side": "peer", "task": "ner", "group_by_length": args.group_by_length, "bf16": args.bf16,
              "n_train": len(train_set), "n_test": len(test_set), "labels": len(label_list), "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length, "steps": trainer.state.global_step,
              "train_s": round(train_s, 2), "eval_s": round(eval_s, 2), "job_s_inside": round(time.perf_counter() - STARTED, 2),
              **scores, "tokens": tokens, "tokens_per_second": round(tokens / train_s, 1), "optimizer": training_args.optim.value,
              "torch_threads": torch.get_num_threads(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
