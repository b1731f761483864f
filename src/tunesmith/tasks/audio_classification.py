"""Audio classification: one clip -> one of N labels, on any transformers audio classifier (Whisper's
encoder by default; wav2vec2, HuBERT, AST and others by name for users who are online).

The data is a folder of class folders or a table of paths and labels (data/audio.py), read as image
classification reads its images (tasks/file_classification.py); labels, the stratified validation
split, the metrics, the prediction columns and records are text classification's, taken from a
TextClassification over the same labels. The base model's head gives way to one of the user's labels,
with id2label set, so that `pipeline("audio-classification", model=run_dir)` names them.

The window: every clip is cut to `--max-seconds` (chosen from the training clips when not given,
printed) and padded by the model's own feature extractor. Whisper's encoder takes exactly its window
of log-mel frames, 30 s in every released checkpoint, so a one-second word would pay for 30 s of
attention: for a Whisper base the model is built with a positional table and a feature extractor cut
to the window (assets/whisper_window.py), before training, so that training, the saved run folder and
plain transformers all use the same shorter window. Other models keep their own length handling
(wav2vec2 and HuBERT pad each batch to its longest clip, AST pads to its frames).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..assets.resolve import load_pretrained
from ..assets.whisper_window import clip_window_seconds, shorten_feature_extractor, shorten_whisper_window
from ..data import audio as aud
from ..errors import TunesmithError
from . import register_task
from .file_classification import predictions_with_paths, prepare_labeled_files, read_file_inputs, records_with_paths
from .protocol import Splits
from .text_classification import TextClassification, set_dropout

PROBE_RATE = 16000


@dataclass
class ClipFeatures:
    """Which cached clip each example is (`entries` into `clips`), its label id, its cost in encoder frames
    (`lengths`), and how it becomes model inputs: cut to `window` samples, then `extractor` (the model's
    feature extractor). `random_crop`: training steps see a random stretch of a clip longer than the window."""

    clips: aud.DecodedClips
    entries: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray | None
    extractor: object
    window: int
    random_crop: bool = False

    def __len__(self) -> int:
        return len(self.entries)

    def without_augmentation(self) -> "ClipFeatures":
        """The same examples as evaluation sees them (the frozen-layer cache computes each clip once)."""
        return dataclasses.replace(self, random_crop=False) if self.random_crop else self


def probe_clips() -> list[dict]:
    """Three synthetic one-second clips (a tone, a rising chirp, noise) for export checks."""
    t = np.arange(PROBE_RATE) / PROBE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    chirp = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t)
    noise = np.random.default_rng(0).normal(0, 0.05, t.size)
    return [{"array": clip.astype(np.float32), "sampling_rate": PROBE_RATE} for clip in (tone, chirp, noise)]


def is_whisper_extractor(extractor) -> bool:
    """Whisper's feature extractor pads every clip to a window of `chunk_length` seconds."""
    return hasattr(extractor, "chunk_length") and hasattr(extractor, "nb_max_frames")


@register_task("audio-classification")
class AudioClassification:
    pipeline_task = "audio-classification"
    default_model = "whisper-tiny-en"
    model_class = "AutoModelForAudioClassification"
    peft_task_type = None  # PEFT has no audio task type: the adapter methods wrap the model in a plain PeftModel
    trains_output_head = True
    tunes_on_validation = False
    metrics = TextClassification.metrics
    predict_example = "clip.wav"  # what the CLI's summary suggests to `tunesmith predict`
    throughput_unit = "clips"  # what metrics["train"]["tokens"] counts here (text tasks: tokens)

    def __init__(self, label_names: list[str], audio_column: str = "path", label_column: str = "label", imbalance_ratio: float = 1.0,
                 max_seconds: float | None = None):
        self.label_names = list(label_names)
        self.audio_column, self.label_column = audio_column, label_column
        self.imbalance_ratio = imbalance_ratio  # of the training labels; known only while training
        self.max_seconds = max_seconds  # the window; None (a task made by hand): the extractor's own, or whole clips
        self.classes = TextClassification(self.label_names, imbalance_ratio=imbalance_ratio)  # decoding and prediction columns
        self.cache: aud.DecodedClips | None = None  # the training job's decoded clips, shared by its encodes (refit too)
        self.keeps_decoded = False  # set by prepare: a prediction-only task decodes per call and keeps nothing

    # -- identity and data ------------------------------------------------------------------
    @classmethod
    def detect(cls, raw: pd.DataFrame, data_cfg) -> str | None:
        if raw.attrs.get(aud.AUDIO_FILES.folder_attr):
            return "a folder of class folders holding audio clips"
        if data_cfg.text_column:  # --text-column names a text: not a table of clips
            return None
        column = aud.audio_column_of(raw)
        return f"column '{column}' holds audio file names" if column is not None else None

    @classmethod
    def prepare(cls, raw: pd.DataFrame, sources: dict, cfg, seed: int) -> tuple["AudioClassification", Splits]:
        # every clip is decoded before training, to find the bad ones and measure the good; the decoded clips are kept
        cache = aud.DecodedClips(aud.USUAL_RATE)
        data, splits = prepare_labeled_files(raw, sources, cfg, seed, aud.AUDIO_FILES, cfg.task.audio_column,
                                             lambda files: cache.decode_all(files)[1])
        seconds_of = {role: [cache.seconds(f) for f in table["file"]] for role, table in
                      (("training", data.train), ("validation", data.validation), ("test", data.test)) if table is not None}
        chosen = cfg.task.max_seconds is None
        seconds = float(clip_window_seconds(seconds_of["training"])) if chosen else float(cfg.task.max_seconds)
        splits.notes += window_notes(seconds, chosen, seconds_of)
        cfg.task.max_seconds = seconds  # config.yaml records the window that ran
        task = cls(data.label_names, data.text_column, data.label_column, data.imbalance_ratio, seconds)
        task.keeps_decoded, task.cache = True, cache
        return task, splits

    @classmethod
    def from_record(cls, record: dict) -> "AudioClassification":
        return cls(record["label_names"], record.get("audio_column", "path"), record.get("label_column", "label"),
                   max_seconds=record.get("max_seconds"))

    def record(self) -> dict:
        return {"label_names": self.label_names, "audio_column": self.audio_column, "label_column": self.label_column,
                "max_seconds": self.max_seconds}

    def default_metric(self, splits: Splits) -> tuple[str, str | None]:
        return self.classes.default_metric(splits)

    # -- model ------------------------------------------------------------------------------
    def load_preprocessor(self, source: str, model_cfg):
        """The model's feature extractor; a Whisper one pads to the task's window instead of its 30 s."""
        from transformers import AutoConfig, AutoFeatureExtractor

        try:
            extractor = AutoFeatureExtractor.from_pretrained(source, trust_remote_code=bool(getattr(model_cfg, "trust_remote_code", False)))
        except (OSError, ValueError, KeyError) as exc:
            if model_cfg is not None:  # a text or image model's folder has no audio feature extractor either: say what it is
                require_audio_model(load_pretrained(AutoConfig, source, model_cfg), model_cfg.model)
            text = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            raise TunesmithError(f"Could not load the feature extractor of '{source}' ({text}); an audio model's folder needs its "
                                 f"preprocessor_config.json (save the feature extractor with save_pretrained beside the model).") from None
        if not getattr(extractor, "sampling_rate", None):
            if model_cfg is not None:
                require_audio_model(load_pretrained(AutoConfig, source, model_cfg), model_cfg.model)
            raise TunesmithError(f"The preprocessor of '{source}' ({type(extractor).__name__}) has no sampling rate, so it is not an audio "
                                 f"feature extractor; use an audio model.")
        if is_whisper_extractor(extractor) and self.max_seconds is not None and extractor.chunk_length != self.max_seconds:
            extractor = shorten_feature_extractor(extractor, whisper_seconds(self.max_seconds, extractor.chunk_length))
        return extractor

    def build_model(self, source: str, model_cfg):
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

        config = load_pretrained(AutoConfig, source, model_cfg, num_labels=len(self.label_names),
                                 id2label=dict(enumerate(self.label_names)), label2id={n: i for i, n in enumerate(self.label_names)})
        require_audio_model(config, model_cfg.model)
        set_dropout(config, model_cfg.dropout)
        config.problem_type = "single_label_classification"
        # the base model's head (if it has one) gives way to a new one of the user's labels
        model = load_pretrained(AutoModelForAudioClassification, source, model_cfg, config=config, ignore_mismatched_sizes=True)
        if config.model_type == "whisper" and self.max_seconds is not None:
            extractor = AutoFeatureExtractor.from_pretrained(source, trust_remote_code=bool(model_cfg.trust_remote_code))
            seconds = whisper_seconds(self.max_seconds, model.config.max_source_positions * 2 * extractor.hop_length / extractor.sampling_rate)
            if seconds * extractor.sampling_rate // extractor.hop_length // 2 != model.config.max_source_positions:  # a run folder has it already
                model, _ = shorten_whisper_window(model, extractor, seconds)
        return model

    # -- tensors and loss -------------------------------------------------------------------
    def encode(self, extractor, table: pd.DataFrame, max_length: int) -> ClipFeatures:
        """Decode the table's clips (each file once per training job), mono at the extractor's rate."""
        rate = int(extractor.sampling_rate)
        if self.keeps_decoded and self.cache is not None and self.cache.rate == rate:
            cache = self.cache
        else:
            cache = aud.DecodedClips(rate)
            if self.keeps_decoded:
                self.cache = cache
        entries = cache.add_all(table["file"].tolist(), table["path"].tolist() if "path" in table else None)
        sizes = np.fromiter((len(cache[int(e)]) for e in entries), dtype=np.int64, count=len(entries))
        window = self.window_samples(extractor, sizes)
        if is_whisper_extractor(extractor):  # every clip is padded to the window: each costs the encoder's positions
            lengths = np.full(len(entries), extractor.nb_max_frames // 2, dtype=np.int64)
        else:
            lengths = np.fromiter((aud.encoder_frames(min(n, window), rate) for n in sizes), dtype=np.int64, count=len(sizes))
        labels = table["label"].to_numpy(dtype=np.int64) if "label" in table else None
        return ClipFeatures(cache, entries, lengths, labels, extractor, window, random_crop=bool((sizes > window).any()))

    def window_samples(self, extractor, sizes: np.ndarray) -> int:
        """The window in samples: --max-seconds, else a Whisper extractor's own, else the longest clip (nothing is cut)."""
        if self.max_seconds is not None:
            return max(1, round(self.max_seconds * extractor.sampling_rate))
        if is_whisper_extractor(extractor):
            return int(extractor.n_samples)
        return int(sizes.max(initial=1))

    def collate(self, features: ClipFeatures, indices: list[int], pad_id: int) -> dict:
        """The extractor's inputs for these clips. fit() collates a training step with gradients enabled; validation
        and prediction collate under torch.inference_mode (train/infer.py), so they get each clip's start."""
        random_start = torch.is_grad_enabled() and features.random_crop
        clips = [aud.window_view(features.clips[int(features.entries[i])], features.window, random_start) for i in indices]
        batch = aud.extractor_inputs(features.extractor, clips)
        if features.labels is not None:
            batch["labels"] = torch.as_tensor(features.labels[indices])
        return batch

    def target_count(self, labels: torch.Tensor) -> int:
        return self.classes.target_count(labels)

    def loss(self, output, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed (not averaged) cross-entropy: the loop divides by the examples in the optimizer step."""
        return self.classes.loss(output, labels)

    def outputs(self, output, batch: dict) -> torch.Tensor:
        return self.classes.outputs(output, batch)

    # -- scoring and predictions ------------------------------------------------------------
    def score(self, outputs: np.ndarray, features, loss: float | None = None) -> dict:
        return self.classes.score(outputs, features, loss)

    def tune(self, outputs, features) -> dict:
        return {}

    def use_tuned(self, tuned: dict) -> None:
        pass

    def warnings(self, scores: dict, split: str) -> list[str]:
        return self.classes.warnings(scores, split)

    def summary_lines(self, scores: dict, split: str) -> list[str]:
        return self.classes.summary_lines(scores, split)

    def predictions_table(self, outputs: np.ndarray, table: pd.DataFrame, with_inputs: bool = True) -> pd.DataFrame:
        return predictions_with_paths(self.classes, outputs, table, self.label_names, with_inputs)

    def predict_records(self, outputs: np.ndarray, table: pd.DataFrame) -> list[dict]:
        """As text classification's, with each clip's `path` (None for a clip given in memory)."""
        return records_with_paths(self.classes, outputs, table)

    def describe_prediction(self, record: dict) -> str:
        return self.classes.describe_prediction(record)

    def inputs_table(self, inputs, pairs=None) -> pd.DataFrame:
        """Run.predict's inputs: audio files, folders of them, tables of paths, {'array', 'sampling_rate'} dicts
        (as transformers' pipeline takes them) or 1-D arrays at the model's sampling rate."""
        if pairs is not None:
            raise TunesmithError("This run classifies audio clips, one at a time; drop the second inputs (pairs).")
        single = isinstance(inputs, (str, Path, dict, np.ndarray))
        files, shown = [], []
        for item in [inputs] if single else list(inputs):
            if isinstance(item, (dict, np.ndarray)):
                files.append(item)
                shown.append(None)
                continue
            table, _ = self.read_inputs(item, None)
            files += table["file"].tolist()
            shown += table["path"].tolist()
        return pd.DataFrame({"file": pd.Series(files, dtype=object), "path": pd.Series(shown, dtype=object)})

    def read_inputs(self, path, data_cfg, column: str | None = None, with_labels: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(file, path[, label] table; the raw rows) of a clip, a folder of clips (class folders give labels) or a table of paths."""
        return read_file_inputs(path, data_cfg, aud.AUDIO_FILES, column, self.audio_column, self.label_column, self.label_names, with_labels)

    def probe_table(self) -> pd.DataFrame:
        return pd.DataFrame({"file": pd.Series(probe_clips(), dtype=object), "path": [None] * 3})


def window_notes(seconds: float, chosen: bool, seconds_of: dict[str, list[float]]) -> list[str]:
    """What the run prints about the window: how it was set, and how many clips of each split it cuts."""
    values = np.asarray(seconds_of["training"])
    spread = f"the {len(values):,} training clips last {values.min():.1f}-{values.max():.1f} s, median {np.median(values):.1f} s"
    how = f", chosen to hold 95% of the training clips ({spread}); --max-seconds to choose another" if chosen else f" (--max-seconds; {spread})"
    notes = [f"Window: {seconds:g} s{how}; shorter clips are padded."]
    cut = {role: (sum(d > seconds for d in found), len(found)) for role, found in seconds_of.items()}
    counted = [f"{n:,} of {total:,} {role}" for role, (n, total) in cut.items() if n]
    if counted:
        notes.append(f"Clips longer than the {seconds:g} s window are cut ({', '.join(counted)}): training steps see a random {seconds:g} s "
                     f"of each, evaluation and prediction their first {seconds:g} s (where Whisper's feature extractor, and so "
                     f"pipeline(\"audio-classification\"), cuts a long clip).")
    return notes


def whisper_seconds(seconds: float, longest: float) -> int:
    """The window as Whisper takes it, whole seconds within its positional table, or one sentence on --max-seconds."""
    if not float(seconds).is_integer():
        raise TunesmithError(f"--max-seconds {seconds:g} is not a whole number of seconds, which a Whisper model's window must be; "
                             f"give {max(math.floor(seconds), 1)} or {math.ceil(seconds)}.")
    if seconds > longest:
        raise TunesmithError(f"--max-seconds {seconds:g} is longer than this Whisper model's {longest:g} s window (its positional table); "
                             f"give at most {longest:g}.")
    return int(seconds)


def require_audio_model(config, name: str) -> None:
    """A base model transformers builds an audio classifier from (its own classes, or a model's code through
    auto_map with --trust-remote-code), or one sentence saying what it is instead."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES

    if config.model_type in MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES or "AutoModelForAudioClassification" in (getattr(config, "auto_map", None) or {}):
        return
    raise TunesmithError(f"The base model '{name}' (model type '{config.model_type}') is not one transformers builds an audio classifier from; "
                         f"pass --model with an audio model (whisper-tiny-en, see `tunesmith models`; a local audio-classification folder; or a "
                         f"hub name such as facebook/wav2vec2-base, facebook/hubert-base-ls960 or MIT/ast-finetuned-audioset-10-10-0.4593).")
