"""The extractive-QA peer: the Hugging Face Trainer the way transformers' run_qa.py runs it.

    python bench/peer_qa.py TRAIN TEST EPOCHS OUT.json --model MODEL_FOLDER [options]

TRAIN/TEST: SQuAD JSON (data -> paragraphs -> qas, flattened as the `squad` dataset builder does),
run_qa.py's own JSON (a "data" list of flat records), or JSONL with one {"id", "question",
"context", "answers"} a line, answers as [{"text", "answer_start"}] or {"text": [...],
"answer_start": [...]} ([] = no answer).
What run_qa.py does and this does too (its prepare_train_features, prepare_validation_features and
utils_qa.postprocess_qa_predictions, written out below): the question is left-stripped; question and
context are tokenized as a pair, truncating only the context, into windows of --max-length tokens
(run_qa: 384) that share --doc-stride tokens (128); a training window is labelled with the first and
last token of the first answer, or with the CLS token when the answer is not wholly inside it;
every window is padded to --max-length (run_qa's default pad_to_max_length=True; --dynamic pads each
batch with DataCollatorWithPadding instead, as --pad_to_max_length False does); the Trainer trains
with its defaults; `trainer.save_model()`; then, over all windows of a test question, the 20 best
start and 20 best end logits (--n-best) give the candidate spans inside the context, at most
--max-answer-length (30) tokens long, the best start+end score wins; SQuAD v2 data (some questions
without an answer; detected, as run_qa's --version_2_with_negative would be set) also takes the
smallest null score of the question's windows and answers "" when it beats the best span by more
than the threshold (0.0). Scores: the official SQuAD v1.1 (`squad` metric) or v2.0 (`squad_v2`)
evaluation logic, written out because the `evaluate` package fetches those scripts from the hub:
exact match and F1 in percent after normalisation (lower case, no punctuation, no a/an/the).
Departures from run_qa.py's defaults: no checkpoints during training (run_qa: every 500 steps; tunesmith
writes one at each epoch end), no logging or progress bar, eval batch 64 (run_qa: 8). --bf16: `bf16=True, use_cpu=True`. --group-by-length: length-grouped batches.
Tokens per second count the real (unpadded) tokens of every training window, once per epoch, as
tunesmith counts them. tunesmith is never imported here.
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import string  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (AutoModelForQuestionAnswering, AutoTokenizer, DataCollatorWithPadding, Trainer,  # noqa: E402
                          TrainingArguments, default_data_collator, set_seed)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("train"), p.add_argument("test"), p.add_argument("epochs", type=float), p.add_argument("out")
    p.add_argument("--model", required=True, help="HF model folder (the benchmark passes tunesmith's minilm-l6 folder)")
    p.add_argument("--batch-size", type=int, default=12, help="per-device train batch (run_qa.py's README: 12)")
    p.add_argument("--eval-batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-5, help="run_qa.py's README: 3e-5")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length", type=int, default=384, help="run_qa.py's --max_seq_length")
    p.add_argument("--doc-stride", type=int, default=128)
    p.add_argument("--n-best", type=int, default=20)
    p.add_argument("--max-answer-length", type=int, default=30)
    p.add_argument("--null-score-diff-threshold", type=float, default=0.0)
    p.add_argument("--dynamic", action="store_true", help="pad each batch (DataCollatorWithPadding), not every window to --max-length")
    p.add_argument("--group-by-length", action="store_true", help="train_sampling_strategy='group_by_length'")
    p.add_argument("--bf16", action="store_true", help="bf16=True, use_cpu=True: the Trainer's CPU bf16 autocast")
    p.add_argument("--output-dir", default=None, help="where trainer.save_model() writes (default: OUT.json's name + '.model')")
    return p.parse_args()


# -- reading: every layout becomes the `squad` dataset's records ------------------------------
def read_examples(path: str) -> list[dict]:
    """{"id", "question", "context", "answers": {"text": [...], "answer_start": [...]}} per question."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".jsonl"):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        data = json.loads(text)
        data = data["data"] if isinstance(data, dict) else data
        rows = [qa for article in data for qa in flatten_article(article)] if data and "paragraphs" in data[0] else data
    return [as_squad_record(row, i) for i, row in enumerate(rows)]


def flatten_article(article: dict):
    """The `squad` builder's flattening (contexts are not stripped)."""
    for paragraph in article["paragraphs"]:
        for qa in paragraph["qas"]:
            yield {"id": qa["id"], "question": qa["question"], "context": paragraph["context"], "answers": qa.get("answers", [])}


def as_squad_record(row: dict, position: int) -> dict:
    answers = row.get("answers", [])
    if isinstance(answers, list):
        answers = {"text": [a["text"] for a in answers], "answer_start": [int(a["answer_start"]) for a in answers]}
    return {"id": str(row.get("id", position)), "question": row["question"], "context": row["context"],
            "answers": {"text": list(answers["text"]), "answer_start": [int(s) for s in answers["answer_start"]]}}


# -- run_qa.py's preprocessing ------------------------------------------------------------------
def prepare_train_features(examples, tokenizer, max_length: int, doc_stride: int, pad: bool):
    pad_on_right = tokenizer.padding_side == "right"
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized = tokenizer(examples["question" if pad_on_right else "context"], examples["context" if pad_on_right else "question"],
                          truncation="only_second" if pad_on_right else "only_first", max_length=max_length, stride=doc_stride,
                          return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length" if pad else False)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    tokenized["start_positions"], tokenized["end_positions"] = [], []
    context_index = 1 if pad_on_right else 0
    for i, offsets in enumerate(offset_mapping):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = tokenized.sequence_ids(i)
        answers = examples["answers"][sample_mapping[i]]
        if len(answers["answer_start"]) == 0:
            tokenized["start_positions"].append(cls_index), tokenized["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = 0
        while sequence_ids[token_start] != context_index:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != context_index:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            tokenized["start_positions"].append(cls_index), tokenized["end_positions"].append(cls_index)
            continue
        while token_start < len(offsets) and offsets[token_start][0] <= start_char:
            token_start += 1
        tokenized["start_positions"].append(token_start - 1)
        while offsets[token_end][1] >= end_char:
            token_end -= 1
        tokenized["end_positions"].append(token_end + 1)
    return tokenized


def prepare_validation_features(examples, tokenizer, max_length: int, doc_stride: int, pad: bool):
    pad_on_right = tokenizer.padding_side == "right"
    examples["question"] = [q.lstrip() for q in examples["question"]]
    tokenized = tokenizer(examples["question" if pad_on_right else "context"], examples["context" if pad_on_right else "question"],
                          truncation="only_second" if pad_on_right else "only_first", max_length=max_length, stride=doc_stride,
                          return_overflowing_tokens=True, return_offsets_mapping=True, padding="max_length" if pad else False)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    tokenized["example_id"] = []
    context_index = 1 if pad_on_right else 0
    for i in range(len(tokenized["input_ids"])):
        sequence_ids = tokenized.sequence_ids(i)
        tokenized["example_id"].append(examples["id"][sample_mapping[i]])
        tokenized["offset_mapping"][i] = [o if sequence_ids[k] == context_index else None for k, o in enumerate(tokenized["offset_mapping"][i])]
    return tokenized


# -- utils_qa.postprocess_qa_predictions (no beam search, no files) -----------------------------
def postprocess_qa_predictions(examples, features, predictions, version_2_with_negative: bool, n_best_size: int,
                               max_answer_length: int, null_score_diff_threshold: float) -> dict:
    all_start_logits, all_end_logits = predictions
    assert len(all_start_logits) == len(features), f"{len(all_start_logits)} predictions for {len(features)} features"
    example_id_to_index = {k: i for i, k in enumerate(examples["id"])}
    features_per_example = collections.defaultdict(list)
    for i, example_id in enumerate(features["example_id"]):
        features_per_example[example_id_to_index[example_id]].append(i)
    offset_mappings = features["offset_mapping"]
    answers = {}
    for example_index, example in enumerate(examples):
        min_null_prediction, prelim = None, []
        for feature_index in features_per_example[example_index]:
            start_logits, end_logits = all_start_logits[feature_index], all_end_logits[feature_index]
            offset_mapping = offset_mappings[feature_index]
            feature_null_score = start_logits[0] + end_logits[0]
            if min_null_prediction is None or min_null_prediction["score"] > feature_null_score:
                min_null_prediction = {"offsets": (0, 0), "score": feature_null_score, "start_logit": start_logits[0], "end_logit": end_logits[0]}
            start_indexes = np.argsort(start_logits)[-1: -n_best_size - 1: -1].tolist()
            end_indexes = np.argsort(end_logits)[-1: -n_best_size - 1: -1].tolist()
            for start_index in start_indexes:
                for end_index in end_indexes:
                    if (start_index >= len(offset_mapping) or end_index >= len(offset_mapping)
                            or offset_mapping[start_index] is None or offset_mapping[end_index] is None):
                        continue
                    if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                        continue
                    prelim.append({"offsets": (offset_mapping[start_index][0], offset_mapping[end_index][1]),
                                   "score": start_logits[start_index] + end_logits[end_index],
                                   "start_logit": start_logits[start_index], "end_logit": end_logits[end_index]})
        if version_2_with_negative:
            prelim.append(min_null_prediction)
            null_score = min_null_prediction["score"]
        best = sorted(prelim, key=lambda x: x["score"], reverse=True)[:n_best_size]
        if version_2_with_negative and not any(p["offsets"] == (0, 0) for p in best):
            best.append(min_null_prediction)
        for pred in best:
            start, end = pred.pop("offsets")
            pred["text"] = example["context"][start:end]
        if len(best) == 0 or (len(best) == 1 and best[0]["text"] == ""):
            best.insert(0, {"text": "empty", "start_logit": 0.0, "end_logit": 0.0, "score": 0.0})
        if not version_2_with_negative:
            answers[example["id"]] = best[0]["text"]
            continue
        i = 0
        while best[i]["text"] == "":
            i += 1
        score_diff = null_score - best[i]["start_logit"] - best[i]["end_logit"]
        answers[example["id"]] = "" if score_diff > null_score_diff_threshold else best[i]["text"]
    return answers


# -- the official SQuAD evaluation logic (v1.1 for `squad`, v2.0 for `squad_v2`) --------------------
def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    s = re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", s)
    return " ".join(s.split())


def f1_v1(prediction: str, ground_truth: str) -> float:
    prediction_tokens, truth_tokens = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    same = sum((collections.Counter(prediction_tokens) & collections.Counter(truth_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(prediction_tokens), same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_v2(gold: str, prediction: str) -> float:
    gold_tokens = normalize_answer(gold).split() if gold else []
    pred_tokens = normalize_answer(prediction).split() if prediction else []
    if not gold_tokens or not pred_tokens:
        return float(gold_tokens == pred_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(pred_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(answers: dict, examples: list[dict], version_2: bool) -> dict:
    """exact and f1 in percent over all questions; v2 also HasAns_/NoAns_ (the squad_v2 metric's keys)."""
    exact, f1, has_answer = {}, {}, {}
    for example in examples:
        qid, prediction = example["id"], answers[example["id"]]
        if version_2:
            golds = [a for a in example["answers"]["text"] if normalize_answer(a)] or [""]
            exact[qid] = max(float(normalize_answer(g) == normalize_answer(prediction)) for g in golds)
            f1[qid] = max(f1_v2(g, prediction) for g in golds)
            has_answer[qid] = golds != [""]
        else:
            golds = example["answers"]["text"]
            exact[qid] = max(float(normalize_answer(prediction) == normalize_answer(g)) for g in golds)
            f1[qid] = max(f1_v1(prediction, g) for g in golds)

    def totals(qids, prefix=""):
        return {f"{prefix}exact": 100.0 * sum(exact[q] for q in qids) / len(qids), f"{prefix}f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
                f"{prefix}total": len(qids)} if qids else {}

    scores = totals(list(exact))
    if version_2:
        scores.update(totals([q for q in exact if has_answer[q]], "HasAns_"))
        scores.update(totals([q for q in exact if not has_answer[q]], "NoAns_"))
    return scores


def main():
    args = parse_args()
    train_examples, test_examples = read_examples(args.train), read_examples(args.test)
    # run_qa.py needs --version_2_with_negative for data with unanswerable questions: set it when there are any
    version_2 = any(not e["answers"]["text"] for e in train_examples + test_examples)
    set_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model, use_fast=True)
    model = AutoModelForQuestionAnswering.from_pretrained(args.model)
    max_length = min(args.max_length, tokenizer.model_max_length)
    options = {"tokenizer": tokenizer, "max_length": max_length, "doc_stride": args.doc_stride, "pad": not args.dynamic}
    columns = ["id", "question", "context", "answers"]
    train_set = Dataset.from_list(train_examples).map(prepare_train_features, batched=True, remove_columns=columns, fn_kwargs=options)
    test_raw = Dataset.from_list(test_examples)
    test_features = test_raw.map(prepare_validation_features, batched=True, remove_columns=columns, fn_kwargs=options)
    real_tokens = int(sum(sum(mask) for mask in train_set["attention_mask"]))

    extra = {"train_sampling_strategy": "group_by_length"} if args.group_by_length else {}
    if args.bf16:
        extra.update(bf16=True, use_cpu=True)
    output_dir = args.output_dir or str(Path(args.out).with_suffix(".model"))
    training_args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed, report_to=[], save_strategy="no",
        logging_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, **extra)
    collator = DataCollatorWithPadding(tokenizer) if args.dynamic else default_data_collator
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, processing_class=tokenizer, data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    trainer.save_model()

    # QuestionAnsweringTrainer.predict: the model sees the windows without example_id / offset_mapping
    # (the Trainer drops columns the model does not take), then post-processing maps them back to questions
    started = time.perf_counter()
    output = trainer.predict(test_features.remove_columns(["example_id", "offset_mapping"]))
    answers = postprocess_qa_predictions(test_raw, test_features, output.predictions, version_2, args.n_best, args.max_answer_length,
                                         args.null_score_diff_threshold)
    scores = squad_scores(answers, test_examples, version_2)
    eval_s = time.perf_counter() - started
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    (Path(output_dir) / "predict_predictions.json").write_text(json.dumps(answers, indent=1))
    tokens = real_tokens * args.epochs
    result = {"side": "peer", "task": "qa", "version_2_with_negative": version_2, "padding": "batch" if args.dynamic else f"max_length {max_length}",
              "group_by_length": args.group_by_length, "bf16": args.bf16, "n_train": len(train_examples), "train_windows": len(train_set),
              "n_test": len(test_examples), "test_windows": len(test_features), "epochs": args.epochs, "batch_size": args.batch_size,
              "lr": args.lr, "max_length": max_length, "doc_stride": args.doc_stride, "steps": trainer.state.global_step,
              "train_s": round(train_s, 2), "eval_s": round(eval_s, 2), "job_s_inside": round(time.perf_counter() - STARTED, 2),
              **scores, "tokens": tokens, "tokens_per_second": round(tokens / train_s, 1), "optimizer": training_args.optim.value,
              "torch_threads": torch.get_num_threads(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
