"""The audio-classification task on a tiny random Whisper (and a tiny wav2vec2): detection, the folder / CSV /
JSONL layouts, the window (chosen from the clips, cut into the model and its feature extractor, crops counted),
a whole run through the CLI (run folder, test_predictions.csv with paths, predict and eval on files, folders and
tables, plain transformers' pipeline answering as tunesmith does), every bad input as one sentence, the decode
cache (one decode per file over epochs and refit), seeded crops, and methods on the audio encoder."""
from __future__ import annotations

import contextlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

import tunesmith
from tunesmith.cli import main
from tunesmith.config import DataConfig
from tunesmith.data import audio as aud
from tunesmith.data.sources import read_data_file
from tunesmith.tasks import choose_task

PITCH = {"high": 2400, "low": 300}  # each class has its tone
FORMATS = ((".wav", 16000, 1), (".flac", 44100, 2), (".ogg", 22050, 1), (".wav", 48000, 2), (".flac", 16000, 2))
OPTIONS = {"epochs": 10, "batch_size": 8, "lr": 3e-3, "eval_batch_size": 64, "early_stopping": 0, "checkpoint_every": 0,
           "threads": 1, "refit": "off", "precision": "fp32"}  # one thread: on a shared 2-core machine two are slower
FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in OPTIONS.items()]


def build_tiny_whisper(folder: Path) -> Path:
    """A 2-layer Whisper encoder of width 16 over 80 mel bins with the real 30 s window (1,500 positions), saved with
    a 5-label head (the head the task replaces) and its WhisperFeatureExtractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_source_positions=1500,
                           max_target_positions=16, classifier_proj_size=16, pad_token_id=60, eos_token_id=60, bos_token_id=61,
                           decoder_start_token_id=61, num_labels=5, id2label={i: f"word-{i}" for i in range(5)})
    torch.manual_seed(0)
    WhisperForAudioClassification(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def toy_clip(label: str, seconds: float, rate: int, channels: int, rng) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * PITCH[label] * (1 + rng.uniform(-0.05, 0.05)) * t) + rng.normal(0, 0.02, t.size)
    wave[t >= 2.0] *= 0.01  # a long clip ends in near-silence: which part of it the model sees matters
    return np.stack([wave, 0.7 * wave], 1) if channels == 2 else wave


def write_class_folders(root: Path, per_class: int, seed: int, long_at: int = 7) -> Path:
    """Clips of 0.3-1.6 s in WAV, FLAC and OGG, mono and stereo, at 16-48 kHz; the `long_at`-th of each class lasts 3.2 s
    (its last 1.2 s near-silent)."""
    rng = np.random.default_rng(seed)
    for label in PITCH:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            suffix, rate, channels = FORMATS[i % len(FORMATS)]
            seconds = 3.2 if i == long_at else rng.uniform(0.3, 1.6)
            sf.write(root / label / f"{label}_{i}{suffix}", toy_clip(label, seconds, rate, channels, rng).astype(np.float32), rate)
    return root


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("clips")
    return {"train": write_class_folders(root / "train", 20, seed=0), "test": write_class_folders(root / "test", 6, seed=1, long_at=1)}


def train_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", *map(str, args)])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, clips, tiny_whisper) -> tuple[Path, str]:
    """`tunesmith train clips/ --test clips_test/` through the CLI: the run folder and what it printed."""
    out = tmp_path_factory.mktemp("runs") / "clips"
    code, printed, errors = train_cli(clips["train"], "--test", clips["test"], "--model", tiny_whisper, "--out", out, "--method", "full", *FLAGS)
    assert code == 0, errors
    return out, printed


def decoded(paths) -> list[dict]:
    """Clips as pipeline(...) takes them without ffmpeg or torchaudio (neither is installed here): 16 kHz mono arrays."""
    return [{"raw": aud.decode_clip(str(p), 16000), "sampling_rate": 16000} for p in paths]


def assert_nothing_finished(out: Path) -> None:
    record = out / "run.json"
    assert not (record.is_file() and json.loads(record.read_text()).get("status") == "done")
    assert not any((out / name).exists() for name in ("metrics.json", "model.safetensors", "test_predictions.csv"))


# -- detection and layouts ------------------------------------------------------------------------

def test_auto_detects_a_folder_and_a_table_of_clip_paths(clips):
    raw = read_data_file(clips["train"], role="training")
    assert choose_task("auto", raw, DataConfig()) == (tunesmith.tasks.TASKS["audio-classification"], "a folder of class folders holding audio clips")
    table = pd.DataFrame({"recording": ["a.wav", "b.flac", "c.ogg"], "class": ["x", "y", "x"]})
    cls, why = choose_task("auto", table, DataConfig())
    assert cls.name == "audio-classification" and why == "column 'recording' holds audio file names"
    images = pd.DataFrame({"file": ["a.jpg", "b.png", "c.jpeg"], "class": ["x", "y", "x"]})
    assert choose_task("auto", images, DataConfig())[0].name == "image-classification"
    assert choose_task("auto", table, DataConfig(text_column="recording"))[0].name == "text-classification"


def test_csv_and_jsonl_tables_train_with_paths_relative_to_their_folder(tmp_path, tiny_whisper):
    data = write_class_folders(tmp_path / "data" / "sounds", 6, seed=4)
    rows = pd.DataFrame([{"clip": f"sounds/{p.relative_to(data).as_posix()}", "kind": p.parent.name} for p in sorted(data.rglob("*.*"))])
    rows.to_csv(tmp_path / "data" / "clips.csv", index=False)
    rows.to_json(tmp_path / "data" / "clips.jsonl", orient="records", lines=True)
    for name in ("clips.csv", "clips.jsonl"):
        run = tunesmith.finetune(tmp_path / "data" / name, out=str(tmp_path / f"run-{name}"), model=str(tiny_whisper), **dict(OPTIONS, epochs=1))
        assert run.record["task"] == "audio-classification"
        assert (run.record["audio_column"], run.record["label_column"], run.label_names) == ("clip", "kind", ["high", "low"])
    (tmp_path / "data" / "tables").mkdir()
    rows.assign(clip="../" + rows["clip"]).to_csv(tmp_path / "data" / "tables" / "up.csv", index=False)
    with pytest.raises(tunesmith.errors.TunesmithError, match="Line 2 of .*up.csv' lists '../sounds/.*', which is outside the data folder"):
        tunesmith.finetune(tmp_path / "data" / "tables" / "up.csv", out=str(tmp_path / "escaping"), model=str(tiny_whisper), **OPTIONS)


# -- a whole run ----------------------------------------------------------------------------------

def test_cli_run_folder_is_complete_and_learned_the_tones(cli_run, clips):
    run_dir, printed = cli_run
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "config.yaml", "metrics.json", "curves.png",
                 "test_predictions.csv", "environment.json", "run.json"):
        assert (run_dir / name).is_file(), name
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "done" and record["task"] == "audio-classification" and record["label_names"] == ["high", "low"]
    assert record["max_seconds"] == 2  # 95% of the clips last under 1.6 s: a 2 s window, not Whisper's 30
    assert "Window: 2 s, chosen to hold 95% of the training clips" in printed
    assert re.search(r"Clips longer than the 2 s window are cut \(\d of \d+ training, .*2 of 12 test\): training steps see a random 2 s", printed)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.8  # chance is 1/2: fails if training, the head or the features are broken
    assert set(metrics["test"]["per_class"]) == {"high", "low"} and metrics["test"]["examples"] == 12
    assert metrics["train"]["tokens"] == 10 * metrics["train"]["examples"] * 100  # every clip costs the window's 100 encoder positions
    config = json.loads((run_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "high", "1": "low"}  # the 5-label head was replaced
    assert config["max_source_positions"] == 100  # the window is in the model ...
    assert json.loads((run_dir / "preprocessor_config.json").read_text())["chunk_length"] == 2  # ... and in its feature extractor
    predictions = pd.read_csv(run_dir / "test_predictions.csv")
    assert len(predictions) == 12 and list(predictions.columns[:4]) == ["path", "label", "prediction", "confidence"]
    assert all(Path(p).is_file() and Path(p).parent.name == label for p, label in zip(predictions["path"], predictions["label"]))
    assert (predictions["label"] == predictions["prediction"]).mean() == pytest.approx(metrics["test"]["accuracy"])


def test_predict_and_eval_on_files_folders_and_tables_through_the_cli(cli_run, clips, capsys):
    run_dir, _ = cli_run
    files = sorted(str(p) for p in (clips["test"] / "low").iterdir())[:2] + [str(next((clips["test"] / "high").glob("*.flac")))]
    assert main(["predict", str(run_dir), *files]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[-1] for line in lines] == files
    assert [line.split("\t")[0] for line in lines] == ["low", "low", "high"]
    assert main(["predict", str(run_dir), str(clips["test"]), "--json"]) == 0
    answers = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(answers) == 12 and all(Path(a["path"]).is_file() for a in answers)
    assert np.mean([Path(a["path"]).parent.name == a["label"] for a in answers]) >= 0.8
    scored = run_dir.parent / "scored.csv"
    assert main(["predict", str(run_dir), "--file", str(clips["test"]), "--out", str(scored)]) == 0
    assert {"path", "label", "prediction", "confidence", "p(low)"} <= set(pd.read_csv(scored).columns)
    assert capsys.readouterr().out.strip() == f"Wrote 12 predictions to {scored}."
    assert main(["eval", str(run_dir), str(clips["test"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] >= 0.8
    table = clips["test"] / "gold.csv"
    pd.DataFrame({"sound": [f"{p.parent.name}/{p.name}" for p in sorted(clips["test"].rglob("*_*.*"))],
                  "language": [p.parent.name for p in sorted(clips["test"].rglob("*_*.*"))]}).to_csv(table, index=False)
    assert main(["eval", str(run_dir), str(table), "--label-column", "language"]) == 0
    assert capsys.readouterr().out.startswith("12 examples: accuracy ")


def test_pipeline_on_the_run_folder_answers_like_tunesmith(cli_run, clips):
    from transformers import pipeline

    run_dir, _ = cli_run
    files = sorted(clips["test"].rglob("*_*.*"))  # stereo, 16-48 kHz, and a 3.2 s clip each that both cut to its first 2 s
    ours = tunesmith.load(run_dir, precision="fp32").predict([str(f) for f in files])
    theirs = pipeline("audio-classification", model=str(run_dir))(decoded(files), top_k=2)
    for mine, answer in zip(ours, theirs):
        assert answer[0]["label"] == mine["label"]
        for entry in answer:
            assert entry["score"] == pytest.approx(mine["scores"][entry["label"]], abs=1e-4)


def test_python_predict_takes_paths_dicts_and_arrays(cli_run, clips):
    run = tunesmith.load(cli_run[0], precision="fp32")
    path = sorted((clips["test"] / "low").glob("*.flac"))[0]
    samples, rate = sf.read(path, dtype="float32")
    records = run.predict([str(path), {"array": samples, "sampling_rate": rate}, aud.decode_clip(str(path), 16000)])
    assert records[0]["path"] == str(path) and records[1]["path"] is None and records[2]["path"] is None
    assert records[0]["label"] == records[1]["label"] == records[2]["label"] == "low"
    assert records[0]["scores"] == pytest.approx(records[1]["scores"], abs=1e-6)
    with pytest.raises(tunesmith.errors.TunesmithError, match="does not exist; give audio files, a folder of clips"):
        run.predict(["nowhere.wav"])


# -- bad inputs -----------------------------------------------------------------------------------

def bad_data(root: Path, case: str, monkeypatch) -> list[str]:
    """The training arguments of one bad input."""
    good = write_class_folders(root / "good", 4, seed=2, long_at=-1)
    if case == "empty-class":
        (good / "silence").mkdir()
        return [str(good)]
    if case == "one-class":
        write_class_folders(root / "one", 3, seed=3)
        for f in (root / "one" / "high").iterdir():
            f.unlink()
        (root / "one" / "high").rmdir()
        return [str(root / "one")]
    if case == "no-clips":
        (root / "none" / "docs").mkdir(parents=True)
        (root / "none" / "docs" / "readme.txt").write_text("hello")
        return [str(root / "none")]
    if case == "undecodable":
        (good / "low" / "broken.ogg").write_bytes(b"OggS but not really")
        return [str(good)]
    if case == "mp3-without-decoder":
        monkeypatch.setattr(aud, "mp3_decodable", lambda: False)
        sf.write(good / "high" / "song.mp3", toy_clip("high", 0.5, 16000, 1, np.random.default_rng(0)).astype(np.float32), 16000,
                 format="MP3") if "MP3" in sf.available_formats() else (good / "high" / "song.mp3").write_bytes(b"\xff\xfb" * 50)
        return [str(good)]
    if case in ("max-seconds-fraction", "max-seconds-too-long"):
        return [str(good), "--max-seconds", "1.5" if case == "max-seconds-fraction" else "45"]
    rows = pd.DataFrame({"path": [p.relative_to(good).as_posix() for p in sorted(good.rglob("*.*"))],
                         "label": [p.parent.name for p in sorted(good.rglob("*.*"))]})
    if case == "missing-path":
        rows.loc[3, "path"] = "low/gone.wav"
    elif case == "escaping-path":
        rows.loc[5, "path"] = "../../etc/passwd.wav"
    elif case == "absolute-outside":
        (root / "outside.wav").write_bytes((good / rows["path"][0]).read_bytes())
        rows.loc[2, "path"] = str(root / "outside.wav")
    rows.to_csv(good / "clips.csv", index=False)
    return [str(good / "clips.csv")]


@pytest.mark.parametrize("case, expected", [
    ("empty-class", "The class folder '.*silence' of '.*good' holds no WAV, FLAC, OGG, Opus, MP3 or AIFF clips; add clips or remove that folder."),
    ("one-class", "The audio folder '.*one' has a single class folder \\('low'\\); a classifier needs at least two"),
    ("no-clips", "is a folder with no images in class sub-folders; .*for audio classification each class's clips"),
    ("missing-path", "1 of 8 audio paths in '.*clips.csv' name no file: line 5 \\('low/gone.wav'\\)"),
    ("escaping-path", "Line 7 of '.*clips.csv' lists '../../etc/passwd.wav', which is outside the data folder"),
    ("absolute-outside", "Line 4 of '.*clips.csv' lists '.*outside.wav', which is outside the data folder"),
    ("undecodable", "1 of 9 training clips cannot be decoded: '.*low/broken.ogg' \\(.*\\); fix or remove them, or pass --skip-bad-files"),
    ("mp3-without-decoder", "1 of 9 training clips cannot be decoded: '.*high/song.mp3' \\(MP3, which this machine's libsndfile .* cannot decode "
                            "\\(MP3 needs libsndfile 1.1.0 or newer\\): `pip install --upgrade soundfile`.*or convert the clips to WAV or FLAC\\)"),
    ("max-seconds-fraction", "--max-seconds 1.5 is not a whole number of seconds, which a Whisper model's window must be; give 1 or 2."),
    ("max-seconds-too-long", "--max-seconds 45 is longer than this Whisper model's 30 s window \\(its positional table\\); give at most 30."),
])
def test_bad_audio_input_is_one_sentence_and_nothing_finished(case, expected, tmp_path, tiny_whisper, monkeypatch):
    out = tmp_path / "run"
    code, printed, errors = train_cli(*bad_data(tmp_path, case, monkeypatch), "--model", tiny_whisper, "--out", out, *FLAGS)
    lines = [line for line in errors.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1 and re.search(expected, lines[0]), errors
    assert "Traceback" not in errors + printed
    assert_nothing_finished(out)


def test_skip_bad_files_trains_without_them_and_says_how_many(tmp_path, tiny_whisper, monkeypatch):
    args = bad_data(tmp_path, "undecodable", monkeypatch)
    (Path(args[0]) / "high" / "empty.wav").write_bytes(b"")
    out = tmp_path / "run"
    code, printed, errors = train_cli(*args, "--model", tiny_whisper, "--out", out, "--skip-bad-files", *FLAGS, "--epochs", "1")
    assert code == 0, errors
    assert "Skipped 2 of 10 training clips that cannot be decoded (--skip-bad-files)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["examples"] + metrics["validation"]["examples"] == 8


def test_a_text_model_is_refused_for_audio(tmp_path, clips, tiny_model):
    code, _, errors = train_cli(clips["train"], "--model", tiny_model, "--out", tmp_path / "run", *FLAGS)
    assert code == 2 and "(model type 'bert') is not one transformers builds an audio classifier from" in errors


# -- the decode cache and the crops -----------------------------------------------------------------

def test_each_file_decodes_once_over_epochs_and_refit(tmp_path, clips, tiny_whisper, monkeypatch):
    calls = Counter()
    real = aud.read_clip
    monkeypatch.setattr(aud, "read_clip", lambda path: calls.update([str(path)]) or real(path))
    run = tunesmith.finetune(clips["train"], out=str(tmp_path / "run"), test=str(clips["test"]), model=str(tiny_whisper),
                             **dict(OPTIONS, epochs=3, refit="on"))
    assert run.metrics["refit"] is not None and run.metrics["train"]["epochs"] >= 2  # two phases, several epochs each
    files = {str(p.resolve()) for p in clips["train"].rglob("*_*.*")} | {str(p.resolve()) for p in clips["test"].rglob("*_*.*")}
    assert set(calls) == files and set(calls.values()) == {1}  # 52 files: checked, measured and cached by one decode each


def test_training_steps_crop_long_clips_at_random_under_the_seed(tmp_path, clips, tiny_whisper):
    from tunesmith.tasks.audio_classification import AudioClassification

    task = AudioClassification(["high", "low"], max_seconds=1)
    extractor = task.load_preprocessor(str(tiny_whisper), None)
    assert extractor.chunk_length == 1 and extractor.n_samples == 16000
    files = sorted(str(p) for p in clips["test"].rglob("*_1.*"))  # the 3.2 s clips
    features = task.encode(extractor, pd.DataFrame({"file": files, "path": files}), 0)
    assert features.random_crop and features.lengths.tolist() == [50, 50]
    with torch.inference_mode():
        evaluated = [task.collate(features, [0, 1], 0)["input_features"] for _ in range(2)]
    assert torch.equal(*evaluated) and evaluated[0].shape == (2, 80, 100)
    start = extractor([aud.decode_clip(files[0], 16000)], sampling_rate=16000, return_tensors="pt")["input_features"]
    assert torch.allclose(evaluated[0][:1], start, atol=1e-5)  # evaluation: the clip's first second, as the extractor cuts it
    torch.manual_seed(7)
    trained = task.collate(features, [0, 1], 0)["input_features"]
    torch.manual_seed(7)
    assert torch.equal(trained, task.collate(features, [0, 1], 0)["input_features"])
    assert not torch.equal(trained, evaluated[0])
    assert features.without_augmentation().random_crop is False


def test_runs_with_crops_repeat_under_the_seed(tmp_path, clips, tiny_whisper):
    common = dict(OPTIONS, epochs=2, max_seconds=1)
    first = tunesmith.finetune(clips["train"], out=str(tmp_path / "a"), model=str(tiny_whisper), **common).metrics
    again = tunesmith.finetune(clips["train"], out=str(tmp_path / "b"), model=str(tiny_whisper), **common).metrics
    other = tunesmith.finetune(clips["train"], out=str(tmp_path / "c"), model=str(tiny_whisper), **dict(common, seed=3)).metrics
    assert np.array(first["curves"]["losses"]) == pytest.approx(np.array(again["curves"]["losses"]), abs=1e-6)
    assert first["curves"]["losses"] != other["curves"]["losses"]


# -- methods on the audio encoder ---------------------------------------------------------------------

def test_head_trains_from_the_frozen_cache_on_uncropped_clips(tmp_path, clips, tiny_whisper):
    from rich.console import Console
    from safetensors.torch import load_file

    printed = io.StringIO()
    run = tunesmith.finetune(clips["train"], out=str(tmp_path / "head"), model=str(tiny_whisper), method="head", console=Console(file=printed, width=400),
                             **dict(OPTIONS, epochs=3, max_seconds=1))
    assert re.search(r"Frozen layers: embeddings \+ 2 layers computed once for 40 examples \(without training augmentation", printed.getvalue())
    base, tuned = load_file(tiny_whisper / "model.safetensors"), load_file(tmp_path / "head" / "model.safetensors")
    encoder = [k for k in tuned if k.startswith("encoder.layers.")]
    assert encoder and all(torch.equal(base[k], tuned[k]) for k in encoder)  # frozen
    assert not torch.equal(base["encoder.layer_norm.weight"], tuned["encoder.layer_norm.weight"])  # the head trained
    assert run.metrics["parameters"]["trainable"] < 0.3 * run.metrics["parameters"]["total"]


def test_a_lora_run_predicts_and_loads_in_pipeline(tmp_path, clips, tiny_whisper):
    from transformers import pipeline

    run = tunesmith.finetune(clips["train"], out=str(tmp_path / "lora"), test=str(clips["test"]), model=str(tiny_whisper), method="lora",
                             **dict(OPTIONS, epochs=4))
    assert (tmp_path / "lora" / "adapter_config.json").is_file() and run.metrics["test"]["examples"] == 12
    files = sorted(clips["test"].rglob("*_*.*"))[:4]
    ours = run.predict([str(f) for f in files])
    # base/ leaves out the base weights' 1,500-row positional table, which transformers builds again from
    # Whisper's sinusoids: the first 100 rows of those are what the tiny model (and whisper-tiny-en) hold
    theirs = pipeline("audio-classification", model=str(tmp_path / "lora"))(decoded(files), top_k=2)
    for mine, answer in zip(ours, theirs):
        assert answer[0]["label"] == mine["label"]
        assert answer[0]["score"] == pytest.approx(mine["score"], abs=1e-4)


def test_another_audio_model_keeps_its_own_feature_extractor_and_lengths(tmp_path, clips):
    """A tiny wav2vec2 (what a hub name such as facebook/wav2vec2-base gives): no window cut into the model, each
    batch padded to its longest clip with an attention mask, a clip's cost its own 20 ms frames."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification, pipeline

    folder = tmp_path / "tiny-wav2vec2"
    config = Wav2Vec2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, conv_dim=(16, 16, 16),
                            conv_stride=(5, 4, 16), conv_kernel=(10, 4, 16), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                            feat_extract_norm="layer", do_stable_layer_norm=True, classifier_proj_size=16, mask_time_prob=0.0)
    torch.manual_seed(0)
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True, do_normalize=True).save_pretrained(folder)
    run = tunesmith.finetune(clips["train"], out=str(tmp_path / "w2v"), test=str(clips["test"]), model=str(folder), **dict(OPTIONS, epochs=6))
    assert run.record["max_seconds"] == 2 and json.loads((tmp_path / "w2v" / "config.json").read_text())["model_type"] == "wav2vec2"
    assert run.metrics["test"]["accuracy"] >= 0.75
    assert run.metrics["train"]["tokens"] < 6 * run.metrics["train"]["examples"] * 100  # short clips cost less than the 2 s window
    files = [f for f in sorted(clips["test"].rglob("*_*.*")) if sf.info(str(f)).duration < 2][:4]  # uncut: pipeline sees the same clips
    ours = tunesmith.load(tmp_path / "w2v", precision="fp32").predict([str(f) for f in files])
    theirs = pipeline("audio-classification", model=str(tmp_path / "w2v"))(decoded(files), top_k=2)
    for mine, answer in zip(ours, theirs):
        assert answer[0]["label"] == mine["label"] and answer[0]["score"] == pytest.approx(mine["score"], abs=1e-3)
