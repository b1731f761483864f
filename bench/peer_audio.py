"""The audio peer: the Hugging Face Trainer the way transformers' run_audio_classification.py runs it.

    python bench/peer_audio.py TRAIN.csv TEST.csv EPOCHS OUT.json --model MODEL_FOLDER [options]

TRAIN/TEST: CSV files with a `path` column (relative to the CSV's folder, or absolute) and a `label`
column, as the bundled spoken-letters split has them. What run_audio_classification.py does and this
does too: `AutoFeatureExtractor` from the model folder with `return_attention_mask=True` (its
`--attention_mask` default); every clip decoded, made mono and resampled to the extractor's rate at
each access (the example casts the column to `datasets.Audio(sampling_rate=...)`, which decodes lazily,
on every access); training clips cut to a random `--max-length-seconds` window (`random_subsample`,
Python's `random`, seeded by `set_seed`; the example's default 20 s, the benchmark passes a length
chosen from the data), test clips whole; then `feature_extractor(wavs, sampling_rate=...)`, which for
Whisper pads (or cuts) every clip to its 30-second window (3,000 log-mel frames) and keeps only
`input_features`; `AutoModelForAudioClassification` (WhisperForAudioClassification: the encoder, a
mean over its 1,500 positions, a projector and a new classifier) with the dataset's labels; the
Trainer's defaults (AdamW, linear decay, no warmup, no weight decay, clipping at 1), and its default
collator for a feature extractor (DataCollatorWithPadding, which pads nothing here);
`trainer.save_model()`; then `trainer.predict` on the test file, scored with scikit-learn (accuracy,
macro-F1). Departures from the example: the data come from CSV files instead of `load_dataset`;
decoding is soundfile, the mono mix the mean of the channels (as datasets' `Audio(mono=True)`), and
resampling `scipy.signal.resample_poly(mono, rate, source_rate)` (a polyphase FIR filter; datasets
resamples with its decoder: FFmpeg's through torchcodec in datasets 4+, soxr through librosa before;
torchaudio is never imported here); `--freeze_feature_encoder False`, because the example's default
True calls `model.freeze_feature_encoder()`, which Whisper has not (wav2vec2's conv front end; Whisper
trains whole); labels are the sorted label names of train and test; no checkpoints during training
(the example: every 500 steps), no logging or progress bar, eval batch 16 (the example: 8).
--bf16 adds `bf16=True, use_cpu=True`. tunesmith is never imported here.
"""
import time

STARTED = time.perf_counter()
import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import soundfile  # noqa: E402
import torch  # noqa: E402
from scipy.signal import resample_poly  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from transformers import (AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification, Trainer,  # noqa: E402
                          TrainingArguments, set_seed)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("train"), p.add_argument("test"), p.add_argument("epochs", type=float), p.add_argument("out")
    p.add_argument("--model", required=True, help="HF audio classification folder (the benchmark passes tunesmith's whisper-tiny-en folder)")
    p.add_argument("--batch-size", type=int, default=8, help="per-device train batch (the TrainingArguments default: 8)")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-length-seconds", type=float, default=20.0,
                   help="training clips are cut to a random window this long (run_audio_classification.py's default: 20)")
    p.add_argument("--bf16", action="store_true", help="bf16=True, use_cpu=True: the Trainer's CPU bf16 autocast")
    p.add_argument("--output-dir", default=None, help="where trainer.save_model() writes (default: OUT.json's name + '.model')")
    return p.parse_args()


def load_audio(path: str, rate: int) -> np.ndarray:
    """A clip as float32 mono at `rate`: soundfile's decode, the mean of the channels, polyphase resampling."""
    audio, source_rate = soundfile.read(path, dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if source_rate != rate:
        mono = resample_poly(mono, rate, source_rate)
    return mono.astype(np.float32)


def random_subsample(wav: np.ndarray, max_length: float, sample_rate: int = 16000) -> np.ndarray:
    """run_audio_classification.py's random_subsample: a random window of max_length seconds (Python's random)."""
    sample_length = int(round(sample_rate * max_length))
    if len(wav) <= sample_length:
        return wav
    random_offset = random.randint(0, len(wav) - sample_length - 1)
    return wav[random_offset: random_offset + sample_length]


class AudioTable(torch.utils.data.Dataset):
    """A CSV of path,label whose clips decode, resample and become features at each access (the example's set_transform)."""

    def __init__(self, csv: str, label_to_id: dict, feature_extractor, max_length_seconds: float | None):
        table = pd.read_csv(csv)
        base = Path(csv).resolve().parent
        self.files = [str(p if Path(p).is_absolute() else base / p) for p in table["path"]]
        self.labels = [label_to_id[str(label)] for label in table["label"]]
        self.extractor, self.max_length_seconds = feature_extractor, max_length_seconds
        self.input_name = feature_extractor.model_input_names[0]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        rate = self.extractor.sampling_rate
        wav = load_audio(self.files[i], rate)
        if self.max_length_seconds:  # train_transforms; val_transforms keep the whole clip
            wav = random_subsample(wav, self.max_length_seconds, rate)
        inputs = self.extractor([wav], sampling_rate=rate)
        return {self.input_name: inputs.get(self.input_name)[0], "labels": self.labels[i]}


def clip_seconds(dataset: AudioTable) -> float:
    """The seconds of audio the training clips hold (for the report), from the files' headers."""
    return float(sum(soundfile.info(path).duration for path in dataset.files))


def main():
    args = parse_args()
    label_list = sorted({str(label) for path in (args.train, args.test) for label in pd.read_csv(path)["label"]})
    label_to_id = {label: i for i, label in enumerate(label_list)}

    set_seed(args.seed)
    feature_extractor = AutoFeatureExtractor.from_pretrained(args.model, return_attention_mask=True)
    config = AutoConfig.from_pretrained(args.model, num_labels=len(label_list), label2id={label: str(i) for label, i in label_to_id.items()},
                                        id2label={str(i): label for label, i in label_to_id.items()}, finetuning_task="audio-classification")
    model = AutoModelForAudioClassification.from_pretrained(args.model, config=config, ignore_mismatched_sizes=True)
    train_set = AudioTable(args.train, label_to_id, feature_extractor, args.max_length_seconds)
    test_set = AudioTable(args.test, label_to_id, feature_extractor, None)

    extra = {"bf16": True, "use_cpu": True} if args.bf16 else {}
    output_dir = args.output_dir or str(Path(args.out).with_suffix(".model"))
    training_args = TrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.eval_batch_size,
        learning_rate=args.lr, num_train_epochs=args.epochs, seed=args.seed, report_to=[], save_strategy="no",
        logging_strategy="no", eval_strategy="no", dataloader_num_workers=0, disable_tqdm=True, **extra)
    trainer = Trainer(model=model, args=training_args, train_dataset=train_set, processing_class=feature_extractor)
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    trainer.save_model()

    started = time.perf_counter()
    prediction = trainer.predict(test_set)
    predicted = np.argmax(prediction.predictions, axis=1)
    gold = np.asarray(test_set.labels)
    eval_s = time.perf_counter() - started
    clips = len(train_set) * args.epochs
    window = getattr(feature_extractor, "n_samples", 0) / feature_extractor.sampling_rate or None  # Whisper pads to this
    result = {"side": "peer", "task": "audio-classification", "bf16": args.bf16, "window_seconds": window,
              "max_length_seconds": args.max_length_seconds, "n_train": len(train_set), "n_test": len(test_set),
              "labels": len(label_list), "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "steps": trainer.state.global_step, "train_s": round(train_s, 2), "eval_s": round(eval_s, 2),
              "job_s_inside": round(time.perf_counter() - STARTED, 2), "train_audio_seconds": round(clip_seconds(train_set), 1),
              "accuracy": float(accuracy_score(gold, predicted)), "macro_f1": float(f1_score(gold, predicted, average="macro")),
              "examples": clips, "examples_per_second": round(clips / train_s, 3), "optimizer": training_args.optim.value,
              "torch_threads": torch.get_num_threads(), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    print(json.dumps(result))
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
