"""Whisper for short clips: an encoder window cut to the clips' length instead of Whisper's 30 seconds.

HF's Whisper encoder accepts exactly `max_source_positions * 2` log-mel frames (3,000: 30 s), so a
one-second spoken word pays for 30 s of attention. A model whose config says fewer positions, with
the first rows of the positional table, and a feature extractor whose `chunk_length` pads to the
same length, is an ordinary Whisper folder that plain transformers loads and runs the same way.
Its outputs are not the 30-second model's on the first frames: there, every position also
attends to the 28 s of padding. It is a different (shorter-context) starting point for fine-tuning.
"""
from __future__ import annotations

import copy
import math
from typing import Iterable

from ..errors import TunesmithError


def clip_window_seconds(durations: Iterable[float], coverage: float = 0.95, slack: float = 0.05, max_seconds: int = 30) -> int:
    """The window for a set of clips, in whole seconds within 1..max_seconds: long enough for the
    `coverage` quantile of the durations, less `slack`.

    Whole seconds because WhisperFeatureExtractor pads to `chunk_length * sampling_rate` samples
    and keeps `chunk_length` an integer. Clips longer than the window are cut by the extractor:
    with the default coverage, the longest 5% lose their ends (a few long outliers would otherwise
    set the cost of every batch), and `slack` lets a clip a few milliseconds over a whole second
    lose its tail instead of adding a second (KLettres' English letters are all 2.009 s, their
    last 50 ms silence).
    """
    import numpy as np

    values = np.asarray(list(durations), dtype=float)
    # the shortest duration that at least `coverage` of the clips fit in
    needed = float(np.quantile(values, coverage, method="inverted_cdf")) if values.size else 0.0
    return int(min(max(math.ceil(needed - slack), 1), max_seconds))


def shorten_whisper_window(model, feature_extractor, seconds: int):
    """(model, feature_extractor) for a `seconds`-long window; the inputs are left as they were.

    Works for any HF Whisper model (WhisperForAudioClassification, WhisperModel,
    WhisperForConditionalGeneration): only the encoder's positional table and the config's
    `max_source_positions` change, every other weight is copied.
    """
    if isinstance(seconds, float) and seconds.is_integer():
        seconds = int(seconds)
    rate, hop = feature_extractor.sampling_rate, feature_extractor.hop_length
    longest = model.config.max_source_positions * 2 * hop / rate  # two mel frames per encoder position
    if not isinstance(seconds, int) or not 1 <= seconds <= longest:
        raise TunesmithError(f"The Whisper window must be a whole number of seconds from 1 to {longest:g} (the model's positional "
                             f"table), not {seconds!r}.")
    frames = seconds * rate // hop
    if frames % 2 or (seconds * rate) % hop:
        raise TunesmithError(f"{seconds} s is {seconds * rate / hop:g} mel frames at {rate} Hz with hops of {hop}; Whisper's encoder "
                             f"needs an even whole number, so choose another window length.")
    positions = frames // 2

    state = model.state_dict()
    table = [key for key in state if key.endswith("encoder.embed_positions.weight")]
    if len(table) != 1:
        raise TunesmithError(f"{type(model).__name__} has no single Whisper encoder positional table; shorten_whisper_window "
                             f"needs an HF Whisper model.")
    state[table[0]] = state[table[0]][:positions].clone()

    config = copy.deepcopy(model.config)
    config.max_source_positions = positions
    short = type(model)(config)
    short.load_state_dict(state, strict=True)  # the new model must take every weight: nothing re-initialised
    like = next(model.parameters())
    short.to(device=like.device, dtype=like.dtype).train(model.training)

    return short, shorten_feature_extractor(feature_extractor, seconds)


def shorten_feature_extractor(feature_extractor, seconds: int):
    """A WhisperFeatureExtractor that pads and cuts to `seconds` (it derives n_samples and nb_max_frames from chunk_length)."""
    return type(feature_extractor)(**dict(feature_extractor.to_dict(), chunk_length=seconds))
