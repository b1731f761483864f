"""Audio clips as training data: finding them (a folder of class folders, or a table of paths), decoding
them once (soundfile), mono at the model's sampling rate, and the window of each clip the model sees.

Two layouts name the clips of a split, as for images (data/media_files.py, with AUDIO_FILES):

    clips/<class>/<clip>            one level of class folders; hidden files and folders skipped
    clips.csv (or .jsonl)           a column of paths (relative to the table's folder) and a label column

Decoding is libsndfile's, through soundfile: WAV, FLAC, Ogg Vorbis and Opus, AIFF, and MP3 where the
installed libsndfile has it (1.1.0 and newer; one sentence naming the fix where not). Channels are
averaged to mono and the rate converted with scipy's polyphase filter (resample_poly), never
torchaudio, whose CUDA builds break transformers here. `DecodedClips` keeps every clip once, as float32
at the model's rate, so later epochs, the refit and the test split never decode a file again.

The window: a clip longer than it is cropped (a random stretch of it for training steps, drawn from
torch's generator so a seed and a resumed checkpoint give the same crops; its start for evaluation and
prediction, which is where Whisper's feature extractor, and so `pipeline("audio-classification")`,
cuts a long clip); a shorter one is padded by the model's feature extractor.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import media_files
from .media_files import DecodedFiles, MediaKind

AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif")
SUFFIX_LIST = "WAV, FLAC, OGG, Opus, MP3 or AIFF"
# column names that hold clip paths, best first (the name alone is not enough: the cells must be audio files too)
PATH_NAMES = ("path", "audio", "audio_path", "file", "filename", "file_name", "filepath", "file_path", "clip", "audio_file",
              "recording", "sound", "wav")
AUDIO_FILES = MediaKind("audio", "clips", "<clip>", AUDIO_SUFFIXES, SUFFIX_LIST, PATH_NAMES, "--audio-column")
MP3_SINCE = "1.1.0"  # the first libsndfile that decodes MP3
FRAMES_PER_SECOND = 50  # encoder positions a second: Whisper's (two 10 ms mel frames each), wav2vec2's and HuBERT's 20 ms frames
# the rate of Whisper, wav2vec2, HuBERT and AST: the task checks (decodes) every clip at it before training and keeps
# the result, so a model of this rate never decodes a file twice; one of another rate decodes again in encode
USUAL_RATE = 16000


class ClipProblem(Exception):
    """A file soundfile opens but tunesmith cannot use; its text is the reason a message shows."""


# -- finding the clips of a split -------------------------------------------------------------------

def folder_table(folder, min_classes: int = 2) -> pd.DataFrame:
    """A folder of class sub-folders of clips as a raw table: `path` (relative to the folder) and `label`
    (the sub-folder's name). attrs['audio_folder'] marks the layout; attrs['notes'] says what was skipped."""
    return media_files.folder_table(folder, (AUDIO_FILES,), min_classes)


def clips_in(folder) -> list[Path]:
    """The clips of a folder to predict on: those in it and in its (class) sub-folders, sorted."""
    return media_files.files_in(folder, AUDIO_FILES)


def audio_column_of(raw: pd.DataFrame) -> str | None:
    """The column of clip paths, by name (path, audio, file, ...) or by its cells, or None."""
    return media_files.path_column_of(raw, AUDIO_FILES)


def find_audio_column(raw: pd.DataFrame, source, given: str | None = None, trained: str | None = None) -> str:
    """--audio-column, else the training run's column name (predict/eval), else inferred."""
    return media_files.find_path_column(raw, source, AUDIO_FILES, given, trained)


def resolve_audio_paths(raw: pd.DataFrame, column: str, source) -> tuple[list[str], list[str]]:
    """(resolved file of each row, the path as a person reads it); a bad cell is one sentence naming the rows."""
    return media_files.resolve_paths(raw, column, source, AUDIO_FILES)


# -- decoding ---------------------------------------------------------------------------------------

def mp3_decodable() -> bool:
    """Whether the libsndfile soundfile loaded reads MP3."""
    import soundfile

    return "MP3" in soundfile.available_formats()


def no_mp3_reason() -> str:
    import soundfile

    return (f"MP3, which this machine's libsndfile {soundfile.__libsndfile_version__} cannot decode (MP3 needs libsndfile {MP3_SINCE} "
            f"or newer): `pip install --upgrade soundfile` for wheels that bundle one, or convert the clips to WAV or FLAC")


def downmix(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) -> (frames,) float32: the channels' mean."""
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1)
    return np.ascontiguousarray(mono, dtype=np.float32)


def resample(samples: np.ndarray, rate: int, to_rate: int) -> np.ndarray:
    """Mono samples from `rate` to `to_rate` Hz with scipy's polyphase filter (its Kaiser window)."""
    from scipy.signal import resample_poly

    rate, to_rate = int(rate), int(to_rate)
    if rate == to_rate:
        return samples
    common = math.gcd(rate, to_rate)
    return np.ascontiguousarray(resample_poly(samples, to_rate // common, rate // common), dtype=np.float32)


def read_clip(path) -> tuple[np.ndarray, int]:
    """(mono float32 samples, the file's own rate) of an audio file, decoded in full."""
    import soundfile

    if str(path).lower().endswith(".mp3") and not mp3_decodable():
        raise ClipProblem(no_mp3_reason())
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    if not len(samples):
        raise ClipProblem("empty: no samples")
    return downmix(samples), int(rate)


def as_samples(array) -> np.ndarray:
    """An in-memory clip (1-D, or 2-D with channels on the shorter axis; floats in [-1, 1] or integers) as mono float32."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        array = array / float(np.iinfo(array.dtype).max)
    if array.ndim == 2:
        array = downmix(array if array.shape[1] <= array.shape[0] else array.T)
    if array.ndim != 1 or not array.size:
        raise ClipProblem(f"an array of shape {array.shape}, not a clip's samples (1-D, or frames x channels)")
    return np.ascontiguousarray(array, dtype=np.float32)


def decode_clip(source, rate: int) -> np.ndarray:
    """A clip as mono float32 at `rate` Hz, from a file, a {'array' (or 'raw'), 'sampling_rate'} dict (as
    transformers' pipeline takes it), or a bare array, which is taken to be at `rate` already."""
    if isinstance(source, dict):
        samples = source.get("array", source.get("raw"))
        if samples is None or "sampling_rate" not in source:
            raise ClipProblem("a dict without 'array' and 'sampling_rate'")
        return resample(as_samples(samples), source["sampling_rate"], rate)
    if isinstance(source, np.ndarray):
        return as_samples(source)
    samples, own_rate = read_clip(source)
    return resample(samples, own_rate, rate)


def decode_problem(exc: Exception) -> str:
    """A few words on why a clip did not decode."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, ClipProblem):
        return text
    if text.startswith("Error opening"):  # libsndfile: "Error opening 'x.wav': Format not recognised."
        text = text.split(": ", 1)[-1]
    if "format not recognised" in text.lower():
        return "not audio libsndfile can read"
    return text.removeprefix("Error : ").rstrip(".")[:80]


# -- the window ------------------------------------------------------------------------------------

def window_view(samples: np.ndarray, length: int, random_start: bool) -> np.ndarray:
    """What the model sees of a clip: all of it when it fits in `length` samples, else `length` of them,
    from a random start (torch's global generator, which fit() seeds and checkpoints restore) or from the start."""
    extra = len(samples) - length
    if extra <= 0:
        return samples
    start = int(torch.randint(0, extra + 1, (1,)).item()) if random_start else 0
    return samples[start:start + length]


def pads_itself(extractor) -> bool:
    """Whether a feature extractor pads a batch without being asked (Whisper pads to its window, AST to its
    frames); wav2vec2's and HuBERT's must be told to pad to the longest clip."""
    import inspect

    padding = inspect.signature(type(extractor).__call__).parameters.get("padding")
    return padding is None or bool(padding.default)


def extractor_inputs(extractor, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """The model inputs of a batch of clips (input_features, or input_values and attention_mask), float32."""
    options = {} if pads_itself(extractor) else {"padding": "longest"}
    batch = extractor(clips, sampling_rate=extractor.sampling_rate, return_tensors="pt", **options)
    return {key: value.float() if value.is_floating_point() else value for key, value in batch.items()}


def encoder_frames(samples: int, rate: int) -> int:
    """The cost of a clip in the units of batching and throughput: encoder positions, 50 a second."""
    return max(1, math.ceil(samples * FRAMES_PER_SECOND / rate))


# -- the decode cache -------------------------------------------------------------------------------

class DecodedClips(DecodedFiles):
    """Every clip decoded once (decode_clip), mono float32 at `rate`, kept by its resolved path
    (media_files.DecodedFiles: in memory, then in an unlinked temporary file)."""

    def __init__(self, rate: int, limit_bytes: int | None = None):
        # decode_clip is looked up at each call, so a test can count the decodes
        super().__init__(lambda source: decode_clip(source, rate), decode_problem, AUDIO_FILES, limit_bytes)
        self.rate = rate

    def seconds(self, path: str) -> float:
        """How long a decoded file lasts."""
        return len(self[self.by_path[path]]) / self.rate
