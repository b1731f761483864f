"""Extractive question answering: a question and a context in, the answer's span of the context out.

SQuAD v1.1/v2.0 JSON and flat CSV/JSONL tables (data/squad.py) become one row per question; long
contexts become overlapping windows (qa_windows.py), each trained on its answer's first and last
token (CLS where the answer is not inside it, or there is none) with transformers' loss; answers
are chosen over all windows of a question and scored with the official SQuAD EM/F1 (qa_scoring.py).
Data with unanswerable questions (v2) also tunes the null-score threshold on validation.

The selection metric is F1: it gives partial credit, so it moves smoothly on a small validation
split where exact match moves one question at a time, and the v2 threshold is tuned for it too.
Metrics are fractions (0-1) like every tunesmith metric; the official script prints percentages.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from ..assets.resolve import load_pretrained
from ..data.batching import pad_batch
from ..errors import TunesmithError
from . import register_task
from .protocol import Metric, Splits
from .qa_scoring import squad_scores
from .qa_windows import NO_ANSWER, QAWindows, best_answers, encode_windows, tune_null_threshold
from .text_classification import load_tokenizer, set_dropout

N_BEST = 20  # starts and ends considered per window, as run_qa's --n_best_size
DEFAULT_NULL_THRESHOLD = 0.0  # run_qa's null_score_diff_threshold, until validation tunes it
PROBE = [("Where is the tower?", "The tower stands in Paris, the capital of France."),
         ("When was it built?", "It was built in 1889 for a world fair and is made of iron.")]


@dataclass
class QAFeatures:
    """A split's windows with what scoring needs to map them back to questions: contexts, gold answers."""

    windows: QAWindows
    contexts: list[str]
    gold: list[list[dict]] | None  # each question's answers ({"text", "answer_start"}), [] = none; None unlabeled
    lengths: np.ndarray  # tokens per window
    labels: np.ndarray | None  # (windows, 2): start and end token of the answer in each window

    def __len__(self) -> int:
        return len(self.windows)


def context_split(table: pd.DataFrame, fraction: float | None, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(train, validation, note): whole contexts held out, so no paragraph is in both; the size
    follows the classification rule (10%, at least min(50, 20%), at most 2,000 questions)."""
    from ..data.prepare import AUTO_VAL_FRACTION, AUTO_VAL_MAX_FRACTION, AUTO_VAL_MAX_ROWS, AUTO_VAL_MIN_ROWS, SPLIT_STREAM, round_half_up

    rows = len(table)
    if fraction is None:
        wanted = min(max(round_half_up(AUTO_VAL_FRACTION * rows), min(AUTO_VAL_MIN_ROWS, round_half_up(AUTO_VAL_MAX_FRACTION * rows))), AUTO_VAL_MAX_ROWS)
    else:
        wanted = round_half_up(fraction * rows)
    contexts = table["context"].unique()
    if wanted < 1 or len(contexts) < 2:
        raise TunesmithError(f"{rows} questions over {len(contexts)} context(s) are too few to hold out a validation split of whole contexts; "
                             f"add data, pass --validation FILE, or use --val-fraction 0.")
    order = np.random.default_rng([seed, SPLIT_STREAM]).permutation(len(contexts))
    per_context = table["context"].value_counts()
    held, count = set(), 0
    for i in order[:-1]:  # at least one context stays in training
        if count >= wanted:
            break
        held.add(contexts[i])
        count += int(per_context[contexts[i]])
    mask = table["context"].isin(held).to_numpy()
    note = f"Held out {count:,} questions on {len(held):,} contexts for validation (whole contexts, so none is also trained on)."
    return table[~mask].reset_index(drop=True), table[mask].reset_index(drop=True), note


def window_probabilities(logits: np.ndarray, offsets: list, cls: int) -> tuple[float, float]:
    """log-normalisers of a window's start and end logits over the tokens an answer may use (its
    context tokens and CLS), as the question-answering pipeline's softmax sees them."""
    allowed = np.array([o is not None for o in offsets])
    allowed[cls] = True
    kept = logits[:, :len(offsets)][:, allowed].astype(np.float64)
    top = kept.max(axis=1, keepdims=True)
    return tuple(float(v) for v in (top + np.log(np.exp(kept - top).sum(axis=1, keepdims=True))).ravel())


@register_task("question-answering")
class QuestionAnswering:
    pipeline_task = "question-answering"
    default_model = "minilm-l6"
    model_class = "AutoModelForQuestionAnswering"
    peft_task_type = "QUESTION_ANS"
    trains_output_head = True
    tunes_on_validation = True  # the null threshold of v2 data; each instance says whether its data needs it
    metrics = (Metric("f1", title="F1"), Metric("exact_match", title="EM"), Metric("loss", higher_is_better=False))

    def __init__(self, question_column: str = "question", context_column: str = "context", answer_column: str | None = "answers",
                 doc_stride: int = 128, max_answer_length: int = 30, has_no_answers: bool = False,
                 null_threshold: float = DEFAULT_NULL_THRESHOLD, fix_answer_starts: bool = False):
        self.question_column, self.context_column, self.answer_column = question_column, context_column, answer_column
        self.doc_stride, self.max_answer_length, self.fix_answer_starts = doc_stride, max_answer_length, fix_answer_starts
        self.has_no_answers = has_no_answers  # SQuAD v2-style data: "" is an answer, decided by the null threshold
        self.null_threshold = null_threshold
        self.tunes_on_validation = has_no_answers  # v1 data has nothing to tune: no extra validation pass
        self.tokenizer = self.max_length = None  # set by encode: predictions_table re-reads the windows of a table

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        from ..data.columns import names_matching
        from ..data.squad import ANSWER_NAMES, CONTEXT_NAMES, QUESTION_NAMES

        if "row_names" in raw.attrs:
            return "a SQuAD JSON file"
        found = [given if given in raw.columns else (names_matching(raw, names) or [None])[0]
                 for given, names in ((data_cfg.text_column, QUESTION_NAMES), (data_cfg.text_pair_column, CONTEXT_NAMES),
                                      (data_cfg.label_column, ANSWER_NAMES))]
        return f"question, context and answer columns ({', '.join(map(repr, found))})" if all(found) else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["QuestionAnswering", Splits]:
        from ..config import TaskConfig, fields_of
        from ..data.columns import names_matching
        from ..data.sources import read_data_file
        from ..data.squad import ANSWER_NAMES, CONTEXT_NAMES, QUESTION_NAMES, qa_table

        from . import resolve_max_length

        resolve_max_length(cfg, cls)  # a direct caller's automatic --max-length (the job resolves it first)
        data, task_cfg, notes = cfg.data, cfg.task, []

        def read(frame, role):
            qa = qa_table(frame, sources[role], data.text_column, data.text_pair_column, data.label_column, fix_starts=task_cfg.fix_answer_starts)
            if qa.starts_moved:
                notes.append(f"Moved {qa.starts_moved:,} answer starts of the {role} file that did not match their context to the nearest "
                             f"occurrence of the answer text (--fix-answer-starts).")
            return qa.frame

        train = read(raw, "train")
        if data.max_train_examples and len(train) > data.max_train_examples:
            keep = np.sort(np.random.default_rng([seed, 1]).choice(len(train), data.max_train_examples, replace=False))
            notes.append(f"Sampled {data.max_train_examples:,} of {len(train):,} training questions.")
            train = train.iloc[keep].reset_index(drop=True)
        validation = test = None
        if sources["validation"]:
            validation = read(read_data_file(sources["validation"], data.encoding, role="validation"), "validation")
        elif data.val_fraction != 0:
            train, validation, note = context_split(train, data.val_fraction, seed)
            notes.append(note)
        if sources["test"]:
            test = read(read_data_file(sources["test"], data.encoding, role="test"), "test")
        stride = task_cfg.doc_stride
        if stride == fields_of(TaskConfig)["doc_stride"].default and stride >= cfg.model.max_length // 2:
            stride = cfg.model.max_length // 4
            notes.append(f"Windows overlap by {stride} tokens (a quarter of --max-length {cfg.model.max_length}; the default doc_stride "
                         f"{task_cfg.doc_stride} leaves no room in windows that short); pass --doc-stride to choose.")
        impossible = bool(train["is_impossible"].any() or (validation is not None and validation["is_impossible"].any()))
        columns = [given or names_matching(raw, names)[0] for given, names in
                   ((data.text_column, QUESTION_NAMES), (data.text_pair_column, CONTEXT_NAMES), (data.label_column, ANSWER_NAMES))]
        task = cls(*map(str, columns), stride, task_cfg.max_answer_length, impossible, DEFAULT_NULL_THRESHOLD, task_cfg.fix_answer_starts)
        sizes = " / ".join(f"{len(t):,} {name}" for name, t in (("train", train), ("validation", validation), ("test", test)) if t is not None)
        kind = f"{train['is_impossible'].mean():.0%} without an answer (SQuAD v2 style)" if impossible else "all answerable (SQuAD v1.1 style)"
        return task, Splits(train, validation, test, {k: v for k, v in sources.items() if v}, notes,
                            validation_from_split=validation is not None and not sources["validation"],
                            summary=f"{sizes} questions, {kind}",
                            columns=f"question column '{columns[0]}', context column '{columns[1]}', answer column '{columns[2]}'")

    @classmethod
    def from_record(cls, record: dict) -> "QuestionAnswering":
        return cls(record["question_column"], record["context_column"], record.get("answer_column"), record["doc_stride"],
                   record["max_answer_length"], record["has_no_answers"], record["null_threshold"], record.get("fix_answer_starts", False))

    def record(self) -> dict:
        return {"question_column": self.question_column, "context_column": self.context_column, "answer_column": self.answer_column,
                "doc_stride": self.doc_stride, "max_answer_length": self.max_answer_length, "has_no_answers": self.has_no_answers,
                "null_threshold": self.null_threshold, "fix_answer_starts": self.fix_answer_starts}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return "f1", None

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        return load_tokenizer(source, model_cfg)

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoModelForQuestionAnswering

        config = load_pretrained(AutoConfig, source, model_cfg)
        set_dropout(config, model_cfg.dropout)
        return load_pretrained(AutoModelForQuestionAnswering, source, model_cfg, config=config)

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, tokenizer, table: pd.DataFrame, max_length: int) -> QAFeatures:
        self.tokenizer, self.max_length = tokenizer, max_length
        gold = list(table["answers"]) if "answers" in table else None
        windows = encode_windows(tokenizer, list(table["question"]), list(table["context"]), gold, max_length, self.doc_stride)
        labels = np.stack([windows.start_positions, windows.end_positions], axis=1).astype(np.int64) if gold is not None else None
        return QAFeatures(windows, list(table["context"]), gold, np.asarray(windows.lengths, dtype=np.int64), labels)

    def collate(self, features: QAFeatures, indices: list[int], pad_id: int) -> dict:
        windows = features.windows
        ids, mask = pad_batch([windows.input_ids[i] for i in indices], pad_id)
        batch = {"input_ids": ids, "attention_mask": mask}
        if windows.token_type_ids is not None:
            batch["token_type_ids"], _ = pad_batch([windows.token_type_ids[i] for i in indices], 0)
        if features.labels is not None:
            batch["labels"] = torch.as_tensor(features.labels[indices])
        return batch

    def target_count(self, labels: torch.Tensor) -> int:
        return len(labels)  # windows

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """transformers' QA loss, (CE(start) + CE(end)) / 2 per window, summed: the loop divides by the step's windows."""
        start = F.cross_entropy(output.start_logits.float(), labels[:, 0], reduction="sum")
        end = F.cross_entropy(output.end_logits.float(), labels[:, 1], reduction="sum")
        return (start + end) / 2, len(labels)

    def outputs(self, output, batch: dict) -> list[np.ndarray]:
        """Per window a (2, tokens) array of start and end logits, cut to the window's own length."""
        both = torch.stack([output.start_logits, output.end_logits], dim=1).float().cpu().numpy()
        return [both[row, :, :n] for row, n in enumerate(batch["attention_mask"].sum(1).tolist())]

    # -- scoring and predictions ------------------------------------------------------------
    def answers(self, outputs: list[np.ndarray], features: QAFeatures, null_threshold: float | None = None):
        """Each question's QAAnswer over its windows (v2 data: "" when the null score wins by more than the threshold)."""
        threshold = null_threshold if null_threshold is not None else (self.null_threshold if self.has_no_answers else None)
        return best_answers([o[0] for o in outputs], [o[1] for o in outputs], features.windows, features.contexts, N_BEST,
                            self.max_answer_length, threshold)

    def score(self, outputs, features: QAFeatures, loss: float | None = None) -> dict:
        answers = self.answers(outputs, features)
        qids = [str(i) for i in range(len(answers))]  # by position: ids were checked unique where they were read
        gold = {q: [a["text"] for a in g] for q, g in zip(qids, features.gold)}
        official = squad_scores({q: a.text for q, a in zip(qids, answers)}, gold)
        result = {"f1": official["f1"] / 100, "exact_match": official["exact"] / 100, "examples": len(answers), "windows": len(features),
                  "no_answer_rate": sum(not a.text for a in answers) / max(len(answers), 1)}
        for prefix, name in (("HasAns", "has_answer"), ("NoAns", "no_answer")):
            if f"{prefix}_total" in official and self.has_no_answers:
                result.update({f"{name}_f1": official[f"{prefix}_f1"] / 100, f"{name}_exact_match": official[f"{prefix}_exact"] / 100,
                               f"{name}_total": official[f"{prefix}_total"]})
        if self.has_no_answers:
            result["null_threshold"] = self.null_threshold
        if loss is not None:
            result["loss"] = float(loss)
        return result

    def tune(self, outputs, features: QAFeatures) -> dict:
        """The null threshold that maximises validation F1 (the official v2 script's best_f1_thresh)."""
        if not self.has_no_answers:
            return {}
        answers = self.answers(outputs, features)
        self.null_threshold, _ = tune_null_threshold(answers, [[a["text"] for a in g] for g in features.gold])
        return {"null_threshold": self.null_threshold}

    def use_tuned(self, tuned: dict) -> None:
        self.null_threshold = tuned.get("null_threshold", self.null_threshold)

    def warnings(self, scores: dict, split: str) -> list[str]:
        if not self.has_no_answers or scores.get("examples", 0) < 10:
            return []
        rate = scores["no_answer_rate"]
        if rate in (0.0, 1.0):
            return [f"On {split} the model answered {'no' if rate == 1.0 else 'every'} question although some have an answer and some do not; "
                    f"train longer (--epochs) or on more data."]
        return []

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        if not self.has_no_answers or "has_answer_f1" not in scores:
            return []
        no_answer = f", no-answer questions {scores['no_answer_exact_match']:.3f} right" if "no_answer_exact_match" in scores else ""
        return [f"On {split}: answerable questions F1 {scores['has_answer_f1']:.3f}{no_answer} (null threshold {self.null_threshold:.3g})."]

    def decode(self, outputs: list[np.ndarray], table: pd.DataFrame) -> list[dict]:
        """{'answer', 'score', 'start', 'end'} per question; the score is a probability as the question-answering
        pipeline gives it (start x end, softmax over the window's context tokens and CLS)."""
        if self.tokenizer is None:
            raise RuntimeError("encode() must run before predictions are decoded")  # the job and Run always encode first
        features = self.encode(self.tokenizer, table.drop(columns=["answers"], errors="ignore"), self.max_length)
        records = []
        for answer in self.answers(outputs, features):
            window = answer.best_span.window if answer.text else answer.null_window
            if window < 0:
                records.append({"answer": "", "score": 0.0, "start": NO_ANSWER, "end": NO_ANSWER})
                continue
            start_norm, end_norm = window_probabilities(outputs[window], features.windows.offsets[window], features.windows.cls_index[window])
            records.append({"answer": answer.text, "score": float(np.exp(answer.score - start_norm - end_norm)),
                            "start": answer.start, "end": answer.end})
        return records

    def predictions_table(self, outputs, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        records = self.decode(outputs, table)
        out = pd.DataFrame(index=range(len(records)))
        if with_inputs:
            for column in ("id", "question", "context"):
                if column in table:
                    out[column] = table[column].to_numpy()
            if "answers" in table:
                out["answers"] = [json.dumps([a["text"] for a in g], ensure_ascii=False) for g in table["answers"]]
        out["prediction"] = [r["answer"] for r in records]
        out["score"] = [round(r["score"], 5) for r in records]
        out["start"] = [r["start"] for r in records]
        out["end"] = [r["end"] for r in records]
        return out

    def predict_records(self, outputs, table: pd.DataFrame) -> list[dict]:
        return self.decode(outputs, table)

    def describe_prediction(self, record: dict) -> str:
        return f"{record['answer'] or '(no answer)'}\t{record['score']:.3f}\t{record['start']}:{record['end']}"

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """Run.predict(question, context), lists of each, several questions on one context, or
        dicts with 'question' and 'context' (as the question-answering pipeline takes them)."""
        items = [inputs] if isinstance(inputs, (str, dict)) else list(inputs)
        if pairs is None and items and all(isinstance(x, dict) for x in items):
            questions, contexts = [x.get("question") for x in items], [x.get("context") for x in items]
        elif pairs is None:
            raise TunesmithError("Question answering needs a context for every question: call predict(questions, contexts), or on the command "
                                 "line use --file FILE with question and context columns.")
        else:
            questions = items
            contexts = [pairs] * len(items) if isinstance(pairs, str) else list(pairs)
        if len(contexts) != len(questions):
            raise TunesmithError(f"{len(questions)} questions but {len(contexts)} contexts; give one context per question, or one for all.")
        from ..data.squad import qa_table

        frame = pd.DataFrame({"question": questions, "context": contexts})
        return qa_table(frame, "the input", "question", "context", with_answers=False).frame

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A predict/eval file's questions (and, with labels, gold answers), in the training columns where
        the file has them, else found by name as training finds them."""
        from ..data.sources import read_data_file
        from ..data.squad import qa_table

        raw = read_data_file(path, data_cfg.encoding, role="input")

        def own(name):
            return name if name is not None and name.lower() in {str(c).lower() for c in raw.columns} else None

        question = column or own(self.question_column)
        answer = own(self.answer_column) if with_labels else None
        qa = qa_table(raw, path, question, own(self.context_column), answer, fix_starts=self.fix_answer_starts, with_answers=with_labels)
        return qa.frame, raw

    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame({"question": [q for q, _ in PROBE], "context": [c for _, c in PROBE]})
