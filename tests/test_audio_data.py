"""Audio clips as data (data/audio.py, data/media_files.py): WAV, FLAC, OGG and MP3 decoded to mono at the
model's rate, stereo downmixed, other rates resampled, bad files named with a reason (MP3 without a decoder
among them), the folder and table layouts and their bad inputs, the window (a seeded random crop in
training, the start otherwise), the feature extractors' padding, and the decode cache in memory and on disk."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from tunesmith.data import audio as aud
from tunesmith.data import media_files
from tunesmith.data.images import IMAGE_FILES
from tunesmith.errors import TunesmithError


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.4) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


def write(path, samples: np.ndarray, rate: int, **options):
    sf.write(str(path), samples, rate, **options)
    return str(path)


# -- decoding -----------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix, rate, options", [(".wav", 16000, {}), (".wav", 44100, {"subtype": "PCM_24"}), (".flac", 48000, {}),
                                                   (".flac", 22050, {}), (".aiff", 8000, {})])
def test_lossless_stereo_clips_become_the_mono_mean_at_the_model_rate(tmp_path, suffix, rate, options):
    left, right = tone(1.0, rate), tone(1.0, rate, amplitude=0.1)
    path = write(tmp_path / f"x{suffix}", np.stack([left, right], 1), rate, **options)
    samples = aud.decode_clip(path, 16000)
    assert samples.dtype == np.float32 and samples.ndim == 1 and len(samples) == 16000
    expected = tone(1.0, 16000, amplitude=0.25)  # (0.4 + 0.1) / 2
    middle = slice(800, -800)  # the filter's edges aside
    assert np.abs(samples[middle] - expected[middle]).max() < 2e-3 + (1e-2 if rate == 8000 else 0)


@pytest.mark.parametrize("suffix, rate, options", [(".ogg", 44100, {"subtype": "VORBIS"}), (".opus", 48000, {"format": "OGG", "subtype": "OPUS"}),
                                                   (".mp3", 44100, {"format": "MP3", "subtype": "MPEG_LAYER_III"})])
def test_lossy_clips_keep_their_pitch_and_length(tmp_path, suffix, rate, options):
    if suffix == ".mp3" and not aud.mp3_decodable():
        pytest.skip("this libsndfile has no MP3")
    path = write(tmp_path / f"x{suffix}", np.stack([tone(1.5, rate, 660), tone(1.5, rate, 660)], 1), rate, **options)
    samples = aud.decode_clip(path, 16000)
    assert abs(len(samples) / 16000 - 1.5) < 0.08  # MP3 adds an encoder delay and padding
    assert abs(peak_hz(samples, 16000) - 660) < 3
    assert 0.2 < np.abs(samples).max() < 0.6


def test_in_memory_clips_dicts_integers_and_channel_layouts():
    at_8k = tone(0.5, 8000)
    from_dict = aud.decode_clip({"array": at_8k, "sampling_rate": 8000}, 16000)
    assert len(from_dict) == 8000 and abs(peak_hz(from_dict, 16000) - 440) < 3
    assert np.array_equal(aud.decode_clip({"raw": tone(0.5, 16000), "sampling_rate": 16000}, 16000), tone(0.5, 16000))
    as_int = (tone(0.5, 16000) * 32767).astype(np.int16)
    assert np.abs(aud.decode_clip(as_int, 16000) - tone(0.5, 16000)).max() < 1e-4
    stereo = np.stack([tone(0.5, 16000), np.zeros(8000, np.float32)])
    assert np.allclose(aud.decode_clip(stereo, 16000), tone(0.5, 16000) / 2)  # (channels, frames) and (frames, channels) alike
    assert np.allclose(aud.decode_clip(stereo.T, 16000), tone(0.5, 16000) / 2)
    with pytest.raises(aud.ClipProblem, match="without 'array' and 'sampling_rate'"):
        aud.decode_clip({"array": at_8k}, 16000)


def test_undecodable_files_are_found_with_a_reason(tmp_path):
    good = write(tmp_path / "good.flac", tone(1.0, 16000), 16000)
    data = open(good, "rb").read()
    (tmp_path / "cut.flac").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.ogg").write_text("not a sound")
    (tmp_path / "header.wav").write_bytes(b"RIFF1234WAVEjunkjunk")
    write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    files = [good] + [str(tmp_path / n) for n in ("cut.flac", "text.ogg", "header.wav", "empty.wav")]
    cache = aud.DecodedClips(16000)
    entries, bad = cache.decode_all(files)
    assert entries[0] == 0 and entries[1:] == [None] * 4 and cache.seconds(good) == 1.0
    reasons = dict(bad)
    assert sorted(reasons) == [1, 2, 3, 4]
    assert reasons[1] == "flac decoder lost sync" and reasons[2] == "not audio libsndfile can read"
    assert "No 'data' chunk" in reasons[3] and reasons[4] == "empty: no samples"
    with pytest.raises(TunesmithError, match="4 of 5 input clips cannot be decoded: .*cut.flac' \\(flac decoder lost sync\\), .*; fix or remove them.$"):
        cache.add_all(files)


def test_mp3_without_a_decoder_names_the_fix(tmp_path, monkeypatch):
    path = tmp_path / "x.mp3"
    path.write_bytes(b"\xff\xfb\x90\x00" * 100)
    monkeypatch.setattr(aud, "mp3_decodable", lambda: False)
    _, bad = aud.DecodedClips(16000).decode_all([str(path)])
    assert bad[0][1].startswith("MP3, which this machine's libsndfile") and "`pip install --upgrade soundfile`" in bad[0][1]
    assert "convert the clips to WAV or FLAC" in bad[0][1]


def test_resampling_is_polyphase_and_exact_in_length():
    clip = tone(2.0, 44100)
    out = aud.resample(clip, 44100, 16000)
    assert len(out) == 32000 and out.dtype == np.float32
    assert aud.resample(clip, 44100, 44100) is clip
    assert len(aud.resample(tone(1.0, 128000), 128000, 16000)) == 16000  # the Danish letters' rate


# -- layouts ------------------------------------------------------------------------------------

def class_folder(root, layout: dict, suffix: str = ".wav") -> None:
    for label, count in layout.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            write(root / label / f"{i}{suffix}", tone(0.2, 16000), 16000)


def test_folder_table_reads_clips_and_says_what_it_skipped(tmp_path):
    class_folder(tmp_path, {"yes": 2, "no": 3})
    (tmp_path / "yes" / ".DS_Store").write_text("x")
    (tmp_path / "yes" / "notes.txt").write_text("x")
    write(tmp_path / "loose.wav", tone(0.2, 16000), 16000)
    table = media_files.folder_table(tmp_path, (IMAGE_FILES, aud.AUDIO_FILES))  # as data/sources.py reads any folder
    assert table["path"].tolist() == ["no/0.wav", "no/1.wav", "no/2.wav", "yes/0.wav", "yes/1.wav"]
    assert table.attrs["audio_folder"] == str(tmp_path) and "image_folder" not in table.attrs
    notes = " ".join(table.attrs["notes"])
    assert "Skipped 1 file in the class folders" in notes and "without an audio suffix (only WAV, FLAC, OGG, Opus, MP3 or AIFF" in notes
    assert "Skipped 1 clip directly in" in notes and "'loose.wav'" in notes


@pytest.mark.parametrize("layout, expected", [
    ({}, "is a folder with no images in class sub-folders; for image classification put .*, for audio classification each class's clips "
         "\\('.*/<class>/<clip>', WAV, FLAC, OGG, Opus, MP3 or AIFF files\\), or give a CSV"),
    ({"yes": 2, "no": 0}, "no' of .* holds no WAV, FLAC, OGG, Opus, MP3 or AIFF clips; add clips or remove that folder"),
    ({"yes": 3}, "The audio folder '.*' has a single class folder \\('yes'\\); a classifier needs at least two"),
])
def test_folder_layout_errors(tmp_path, layout, expected):
    class_folder(tmp_path, layout)
    with pytest.raises(TunesmithError, match=expected):
        media_files.folder_table(tmp_path, (IMAGE_FILES, aud.AUDIO_FILES))


def test_loose_clips_without_class_folders_are_named(tmp_path):
    for i in range(3):
        write(tmp_path / f"{i}.flac", tone(0.2, 16000), 16000)
    with pytest.raises(TunesmithError, match="is a folder with 3 clips but no class sub-folders; for audio classification put each class's clips"):
        media_files.folder_table(tmp_path, (IMAGE_FILES, aud.AUDIO_FILES))
    assert [p.name for p in aud.clips_in(tmp_path)] == ["0.flac", "1.flac", "2.flac"]


def test_table_paths_resolve_against_the_table_folder_and_stay_inside_it(tmp_path):
    (tmp_path / "data" / "clips").mkdir(parents=True)
    write(tmp_path / "data" / "clips" / "a.wav", tone(0.2, 16000), 16000)
    write(tmp_path / "secret.wav", tone(0.2, 16000), 16000)
    csv = tmp_path / "data" / "clips.csv"
    files, shown = aud.resolve_audio_paths(pd.DataFrame({"path": ["clips/a.wav", "./clips/a.wav"]}), "path", csv)
    assert files == [str((tmp_path / "data" / "clips" / "a.wav").resolve())] * 2
    with pytest.raises(TunesmithError, match="Line 3 of .*clips.csv' lists '../secret.wav', which is outside the data folder"):
        aud.resolve_audio_paths(pd.DataFrame({"path": ["clips/a.wav", "../secret.wav"]}), "path", csv)
    with pytest.raises(TunesmithError, match="1 of 2 audio paths in .* name no file: line 3 \\('clips/b.wav'\\)"):
        aud.resolve_audio_paths(pd.DataFrame({"path": ["clips/a.wav", "clips/b.wav"]}), "path", csv)


def test_audio_column_by_name_or_by_its_cells():
    assert aud.audio_column_of(pd.DataFrame({"file": ["a.wav", "b.flac"], "label": ["x", "y"]})) == "file"
    assert aud.audio_column_of(pd.DataFrame({"where": ["a.OGG", "b/c.mp3"], "label": ["x", "y"]})) == "where"
    assert aud.audio_column_of(pd.DataFrame({"path": ["a.jpg", "b.png"], "label": ["x", "y"]})) is None
    assert aud.audio_column_of(pd.DataFrame({"text": ["a good film", "bad"], "label": ["x", "y"]})) is None
    with pytest.raises(TunesmithError, match="has no column 'clip'.*--audio-column"):
        aud.find_audio_column(pd.DataFrame({"file": ["a.wav"]}), "x.csv", given="clip")
    with pytest.raises(TunesmithError, match="holds the audio paths .*name it with --audio-column"):
        aud.find_audio_column(pd.DataFrame({"name": ["a"], "label": ["x"]}), "x.csv")


# -- the window and the feature extractors --------------------------------------------------------

def test_window_view_crops_long_clips_at_random_in_training_and_at_the_start_otherwise():
    clip = np.arange(1000, dtype=np.float32)
    assert aud.window_view(clip[:300], 400, random_start=True) is not None and len(aud.window_view(clip[:300], 400, True)) == 300
    assert np.array_equal(aud.window_view(clip, 400, random_start=False), clip[:400])
    starts = []
    for seed in range(30):
        torch.manual_seed(seed)
        view = aud.window_view(clip, 400, random_start=True)
        assert len(view) == 400 and view[-1] - view[0] == 399
        starts.append(int(view[0]))
    torch.manual_seed(3)
    assert int(aud.window_view(clip, 400, True)[0]) == starts[3]  # the seed decides
    assert len(set(starts)) > 20 and min(starts) >= 0 and max(starts) <= 600


def test_whisper_pads_to_its_window_and_wav2vec2_to_the_longest_clip():
    from transformers import Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    clips = [tone(0.5, 16000), tone(1.2, 16000)]
    whisper = WhisperFeatureExtractor(feature_size=80, chunk_length=2)
    batch = aud.extractor_inputs(whisper, clips)
    assert set(batch) == {"input_features"} and batch["input_features"].shape == (2, 80, 200)
    one = aud.extractor_inputs(whisper, clips[:1])["input_features"]
    assert torch.allclose(one[0], batch["input_features"][0], atol=1e-5)  # a batch pads each clip as alone: as pipeline(...) does
    wav2vec2 = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, return_attention_mask=True)
    batch = aud.extractor_inputs(wav2vec2, clips)
    assert batch["input_values"].shape == (2, 19200) and batch["attention_mask"][0].sum() == 8000
    assert aud.encoder_frames(16000, 16000) == 50 and aud.encoder_frames(1, 16000) == 1


# -- the decode cache -----------------------------------------------------------------------------

@pytest.mark.parametrize("limit", [None, 0, 40000])  # all in memory, all on disk, and memory first then disk
def test_decoded_clips_decode_each_file_once_in_memory_or_on_disk(tmp_path, monkeypatch, limit):
    paths = [write(tmp_path / f"{i}.flac", tone(0.3 + 0.1 * i, 22050, 300 + 50 * i), 22050) for i in range(5)]
    calls = []
    real = aud.decode_clip
    monkeypatch.setattr(aud, "decode_clip", lambda source, rate: calls.append(source) or real(source, rate))
    cache = aud.DecodedClips(16000, limit_bytes=limit)
    entries = cache.add_all(paths)
    assert cache.add_all(paths[::-1]).tolist() == entries[::-1].tolist()  # the second time: looked up, not decoded
    assert sorted(calls) == sorted(paths)
    for entry, path in zip(entries, paths):
        assert np.array_equal(cache[int(entry)], real(path, 16000)) and cache[int(entry)].dtype == np.float32
    assert (cache.file is None) == (limit is None)
    assert cache.seconds(paths[2]) == pytest.approx(0.5, abs=1e-4)
