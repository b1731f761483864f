"""RunConfig: the one source of truth for options.

Each field's metadata (help, choices, range) becomes a `tunesmith train` flag and a YAML key;
a run folder holds the resolved config as config.yaml, and `--config` reads it back.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import TunesmithError, did_you_mean


def option(default, help: str, *, choices=None, min=None, max=None, cli: bool = True, aliases: tuple[str, ...] = ()):
    """A config field with its help text and allowed values; `aliases`: more CLI flags for it beside --field-name."""
    meta = {"help": help, "choices": choices, "min": min, "max": max, "cli": cli, "aliases": aliases}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    data: str | None = option(None, "training data: a CSV/TSV/JSON/JSONL/Parquet file, a folder of class folders of images or audio clips, or a bundled "
                                    "dataset name (see `tunesmith datasets`)", cli=False)
    text_column: str | None = option(None, "column holding the text (inferred when not given)")
    text_pair_column: str | None = option(None, "second text column for sentence-pair tasks (optional)")
    label_column: str | None = option(None, "column holding the label (inferred when not given)")
    validation: str | None = option(None, "validation file; when not given a stratified split is made")
    val_fraction: float | None = option(None, "fraction of the training data held out for validation when no validation file is given "
                                              "(default: 10%, stratified, raised to min(50 rows, 20%) and to one per label within 20%, at most 2,000; 0 = none)",
                                        min=0.0, max=0.5)
    test: str | None = option(None, "test file, scored once at the end")
    encoding: str | None = option(None, "text encoding of the data files (default UTF-8; UTF-16 is detected by its byte-order mark)")
    max_train_examples: int | None = option(None, "use at most this many training examples, sampled per label (a quick trial)", min=1)
    keep_label_spelling: bool = option(False, "keep labels that differ only in case or surrounding spaces ('Positive', 'positive ') as separate "
                                              "classes (default: merged into the most common spelling, with a note)")


@dataclass
class TaskConfig:
    """The task, and (later) options only some tasks have, each named after its task."""

    task: str = option("auto", "what to learn: auto (inferred from the data, printed), or a task name (text-classification, regression, "
                               "multi-label, token-classification, question-answering, image-classification, audio-classification, chat, "
                               "preference (DPO), causal-lm (continued pre-training on raw text))")
    chat_template: str | None = option(None, "chat: the template that lays out conversations: the base model's own (default), "
                                             "chatml, or a .jinja file (for a base model that has none)")
    forgetting_text: str = option("auto", "chat, causal-lm: plain text whose perplexity before and after fine-tuning shows what the model lost: "
                                          "auto (the held-out chapter of the bundled general-text), off, or a .txt file")
    answer_prompts: int = option(8, "chat: held-out prompts (test, else validation) answered greedily before and after fine-tuning, "
                                    "written side by side to answers.md; 0: none", min=0, max=1000)
    train_on_prompt: bool = option(False, "chat: train on every token of a conversation, not only the assistant's turns")
    packing: str = option("on", "chat: pack training conversations into rows of --max-length tokens (attention and positions kept "
                                "to each conversation), or off (padded batches)", choices=["on", "off"])
    dpo_beta: float = option(0.1, "preference: DPO's beta, how far the tuned model may move from the reference (lower: further)",
                             min=0.001, max=100.0)
    dpo_loss: str = option("sigmoid", "preference: the loss on the reward margin: sigmoid (DPO) or ipo (IPO, a squared loss that "
                                      "does not push the margin to infinity)", choices=["sigmoid", "ipo"])
    dpo_label_smoothing: float = option(0.0, "preference: the share of pairs assumed mislabelled (conservative DPO; sigmoid loss only)",
                                        min=0.0, max=0.49)
    label_separator: str | None = option(None, "multi-label: the character between labels in a label cell (default: detected among ; | ,)")
    entity_mode: str = option("default", "token-classification: how entity spans are read from tags, as seqeval does: 'default' (conlleval: "
                                         "a stray I- starts an entity) or 'strict' (only well-formed BIO/IOBES spans count)",
                              choices=["default", "strict"])
    doc_stride: int = option(128, "question-answering: tokens shared by two neighbouring windows of a long context", min=0, max=4096)
    max_answer_length: int = option(30, "question-answering: longest answer in tokens", min=1, max=1024)
    fix_answer_starts: bool = option(False, "question-answering: move an answer start that does not match its context to the nearest "
                                            "occurrence of the answer text (default: refuse the file)")
    image_column: str | None = option(None, "image-classification: column of a CSV/JSONL holding the image paths, relative to the file's "
                                            "folder (default: inferred: path, image, file, ... or the column of image file names)")
    augment: str = option("crop-flip", "image-classification: training augmentation: crop-flip (a random resized crop, then a horizontal "
                                       "flip half the time), flip (the evaluation crop, flipped half the time) or none",
                          choices=["crop-flip", "flip", "none"])
    crop_min_scale: float = option(0.08, "image-classification: smallest share of an image's area a random resized crop keeps "
                                         "(torchvision's and the Hugging Face example's 0.08; raise it for small objects or tiny images)",
                                   min=0.01, max=1.0)
    image_size: int | None = option(None, "image-classification: side in pixels of the square the model sees, the resize scaled to match "
                                          "(default: the base model's own, 224 for mobilenet-v2); convolutional backbones take any size, and a "
                                          "smaller one trains faster (small pictures such as 28x28 scans lose nothing at 96)", min=16, max=2048)
    skip_bad_files: bool = option(False, "image- and audio-classification: leave out files that cannot be decoded (counted in the output) "
                                         "instead of refusing the data")
    audio_column: str | None = option(None, "audio-classification: column of a CSV/JSONL holding the clip paths, relative to the file's "
                                            "folder (default: inferred: path, audio, file, ... or the column of audio file names)")
    max_seconds: float | None = option(None, "audio-classification: the window of a clip the model sees, in seconds: longer clips are cropped "
                                             "(a random stretch in training, their start at evaluation and prediction), shorter ones padded "
                                             "(default: chosen from the training clips, whole seconds holding 95% of them; Whisper takes whole "
                                             "seconds up to 30)", min=0.1, max=600.0)


@dataclass
class ModelConfig:
    model: str = option("auto", "base model: an embedded name (see `tunesmith models`), a local Hugging Face folder, a hub name, or "
                                "(--from RUN) a finished tunesmith run folder, its adapter merged into its base (e.g. DPO after "
                                "instruction tuning); auto: the task's embedded default (minilm-l6 for text, mobilenet-v2 for images, "
                                "whisper-tiny-en for audio, smollm2-135m for chat)", aliases=("--from",))
    max_length: int | None = option(None, "longest input in tokens; longer texts are truncated (default: the task's, 128 tokens, "
                                          "1,024 for chat, preference and causal-lm)", min=8, max=8192)
    quantize: str = option("none", "chat, causal-lm, preference on a CUDA GPU: hold the frozen base weights in 4-bit (nf4, QLoRA) or 8-bit "
                                   "through bitsandbytes, to train an adapter on a model too big for the GPU in 16 bits",
                           choices=["none", "4bit", "8bit"])
    dropout: float | None = option(None, "dropout inside the model and head (default: the base model's own)", min=0.0, max=0.9)
    trust_remote_code: bool = option(False, "allow a hub model to run its own Python code (only for models you trust)")
    trust_pickle: bool = option(False, "allow loading pickled (.bin/.pt) weights, read with weights_only=True (only for files you trust)")


@dataclass
class MethodConfig:
    method: str = option("auto", "how the base model is adapted (see `tunesmith methods`; auto: the task's default, full, or lora "
                                 "for chat)")
    freeze_layers: int | None = option(None, "freeze: number of bottom transformer layers frozen with the embeddings (default: half)", min=0)
    lora_rank: int = option(8, "lora/dora: rank of the low-rank update", min=1, max=1024)
    lora_alpha: float | None = option(None, "lora/dora: scaling alpha (default 2 x rank)", min=0.0)
    lora_dropout: float = option(0.1, "lora/dora: dropout on the adapter input", min=0.0, max=0.9)
    target_modules: str | None = option(None, "lora/dora/ia3: comma-separated module names to adapt (default: chosen per architecture)")
    adapter_size: int = option(64, "adapter: bottleneck width", min=1)
    adapter_placement: str = option("pfeiffer", "adapter: 'houlsby' (after attention and feed-forward) or 'pfeiffer' (after feed-forward only)", choices=["houlsby", "pfeiffer"])
    unfreeze_every: int | None = option(None, "gradual: steps between unfreezing one more layer group (default: one each epoch)", min=1)
    layer_lr_decay: float | None = option(None, "discriminative learning rates: each layer group down gets lr x this factor (e.g. 0.8)", min=0.01, max=1.0)
    freeze_word_embeddings: bool = option(False, "keep the token-embedding matrix fixed (half of MiniLM's weights): a faster step and smaller checkpoints, "
                                                 "usually at the same accuracy (see bench/README.md)")


@dataclass
class TrainConfig:
    epochs: float | None = option(None, "passes over the training data (default: chosen from the data size, printed: 3, or more on small data "
                                        "so that training gets at least 300 optimizer steps, at most 20 epochs; early stopping ends it sooner)",
                                  min=0.01, max=1000)
    refit: str = option("auto", "after training with a validation split held out of the training data, train again on training + validation "
                                "data for the epochs that scored best (auto: on up to 3,000 training examples), as AutoGluon's refit does",
                        choices=["auto", "on", "off"])
    batch_size: int = option(32, "examples per optimizer step (micro-batch x gradient accumulation)", min=1, max=65536)
    grad_accum: int = option(1, "gradient accumulation: micro-batches per optimizer step", min=1, max=1024)
    eval_batch_size: int = option(128, "examples per batch during evaluation and prediction", min=1)
    lr: float | None = option(None, "peak learning rate (AdamW); default: the method's own, 5e-5 for full (see `tunesmith methods`)", min=1e-8, max=1.0)
    weight_decay: float = option(0.01, "AdamW weight decay (not applied to biases and LayerNorm)", min=0.0, max=1.0)
    warmup_ratio: float = option(0.06, "fraction of steps spent warming the learning rate up linearly", min=0.0, max=0.5)
    max_grad_norm: float = option(1.0, "clip the gradient norm to this (0 = no clipping)", min=0.0)
    early_stopping: int = option(2, "stop after this many evaluations without improvement, restoring the best weights (0 = off)", min=0)
    metric: str = option("auto", "validation metric that picks the best weights: one of the task's metrics (text classification: accuracy, "
                                 "macro_f1, mcc, loss); auto: the task's default (text classification: accuracy, or macro_f1 when the "
                                 "largest class has 3x the examples of the smallest)")
    evals_per_epoch: int = option(1, "validation passes per epoch", min=1, max=100)
    seed: int = option(42, "random seed for splits, initialisation and data order", min=0)
    precision: str = option("auto", "numeric precision of training, evaluation and prediction: auto (bf16 autocast on GPUs that support it; on a "
                                    "CPU only where a measurement at the model's shapes shows bf16 clearly faster, cached per machine), fp32 or bf16",
                            choices=["auto", "fp32", "bf16"])
    device: str = option("auto", "auto, cpu or cuda", choices=["auto", "cpu", "cuda"])
    checkpoint_every: int = option(500, "write a checkpoint every this many optimizer steps (and at each epoch end; 0 = epoch ends only)", min=0)
    keep_checkpoints: int = option(2, "how many recent checkpoints to keep besides the best", min=1)
    on_nan: str = option("stop", "a NaN/inf loss: 'stop' the run, or 'skip' the batch and go on", choices=["stop", "skip"])
    threads: int | None = option(None, "CPU threads for torch (default: all cores)", min=1)
    cache_frozen: str = option("auto", "frozen bottom layers (freeze, head): 'auto' computes their outputs once and trains the rest from them (BERT-family models, more than one epoch), 'off' runs them every step", choices=["auto", "off"])


@dataclass
class OutputConfig:
    out: str | None = option(None, "run folder (default: runs/<data name>)")
    resume: bool = option(False, "continue an interrupted run in --out from its last checkpoint")
    overwrite: bool = option(False, "replace an existing run folder")


SECTIONS = {"data": DataConfig, "task": TaskConfig, "model": ModelConfig, "method": MethodConfig, "train": TrainConfig, "output": OutputConfig}


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> "RunConfig":
        """Nested {section: {key: value}} or flat {key: value}; unknown keys are errors."""
        cfg = cls()
        cfg.update(values, source)
        return cfg

    def update(self, values: dict, source: str = "config") -> "RunConfig":
        flat = {}
        for key, value in (values or {}).items():
            if key in SECTIONS and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        owners = field_owners()
        for key, value in flat.items():
            key = key.replace("-", "_")
            if key not in owners:
                raise TunesmithError(f"Unknown option '{key}' in {source}.{did_you_mean(key, owners)}")
            section = getattr(self, owners[key])
            setattr(section, key, coerce(value, fields_of(type(section))[key], key))
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        if not path.is_file():
            raise TunesmithError(f"Config file '{path}' does not exist; give the path of a config.yaml (a run folder holds one).")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TunesmithError(f"Config file '{path}' is not valid YAML ({str(exc).splitlines()[0]}); fix it or write a new one with `tunesmith train --print-config`.") from None
        if not isinstance(values, dict):
            raise TunesmithError(f"Config file '{path}' must hold a mapping of option: value, not {type(values).__name__}.")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def validate(self) -> "RunConfig":
        for section_name, section_cls in SECTIONS.items():
            section = getattr(self, section_name)
            for name, f in fields_of(section_cls).items():
                check_value(name, getattr(section, name), f)
        if self.train.batch_size % self.train.grad_accum:
            raise TunesmithError(f"--batch-size {self.train.batch_size} is not a multiple of --grad-accum {self.train.grad_accum}; pick values where it divides evenly.")
        return self


def fields_of(section_cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(section_cls)}


def field_owners() -> dict[str, str]:
    """Field name -> section name (field names are unique across sections)."""
    return {name: section for section, cls in SECTIONS.items() for name in fields_of(cls)}


def base_type(f: dataclasses.Field):
    """The non-None type of a field annotation such as 'int | None'."""
    hint = typing.get_type_hints(_owner_of(f))[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def _owner_of(f):
    for cls in SECTIONS.values():
        if f.name in fields_of(cls) and fields_of(cls)[f.name] is f:
            return cls
    raise KeyError(f.name)


def coerce(value, f: dataclasses.Field, name: str):
    """Turn a YAML/CLI value into the field's type, with a clear error."""
    if value is None:
        return None
    kind = base_type(f)
    try:
        if kind is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        raise TunesmithError(f"Option --{name.replace('_', '-')} must be {kind.__name__}, got {value!r}.") from None


def check_value(name: str, value, f: dataclasses.Field) -> None:
    meta = f.metadata
    flag = "--" + name.replace("_", "-")
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise TunesmithError(f"{flag} must be one of {', '.join(meta['choices'])}; got {value!r}.{did_you_mean(value, meta['choices'])}")
    lo, hi = meta.get("min"), meta.get("max")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value:
            raise TunesmithError(f"{flag} must be a number, got NaN.")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
            raise TunesmithError(f"{flag} is out of range: {value} (it must be {bounds}).")
