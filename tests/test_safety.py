"""Safety: safetensors only on the way out; pickles and remote code only when asked for, and even
then pickles are read with weights_only=True; data files cannot point outside their folder."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

import tunesmith
from tunesmith.assets.resolve import load_pretrained
from tunesmith.cli import main
from tunesmith.config import ModelConfig
from tunesmith.data.paths import safe_member_path
from tunesmith.errors import TunesmithError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def make_pickle_only_model(tiny_model: Path, folder: Path) -> Path:
    """The tiny model with its weights as pytorch_model.bin only (transformers 5 no longer writes it)."""
    from safetensors.torch import load_file

    shutil.copytree(tiny_model, folder)
    weights = folder / "model.safetensors"
    torch.save(load_file(str(weights)), folder / "pytorch_model.bin")
    weights.unlink()
    return folder


class RunsCode:
    """Unpickling this runs code: what a hostile .bin file does."""

    def __reduce__(self):
        return (exec, ("open('PWNED_MARKER', 'w').write('pwned')",))


def test_run_folder_and_checkpoints_hold_no_pickled_weights(tmp_path, reviews_csv, tiny_options):
    out = tmp_path / "run"
    tunesmith.finetune(reviews_csv, out=str(out), **dict(tiny_options, epochs=2, checkpoint_every=3))
    top = [p.name for p in out.iterdir() if p.is_file()]
    assert "model.safetensors" in top
    assert not [n for n in top if n.endswith(PICKLE_SUFFIXES)]
    checkpoints = sorted((out / "checkpoints").glob("step-*"))
    assert checkpoints and (out / "checkpoints" / "best.safetensors").is_file()
    for folder in checkpoints:
        # weights and RNG as safetensors; only the optimizer state is a torch file, read back with weights_only=True
        assert sorted(p.name for p in folder.iterdir()) == ["model.safetensors", "optimizer.pt", "rng.safetensors", "state.json"]
        torch.load(folder / "optimizer.pt", weights_only=True)


def test_our_own_torch_load_calls_use_weights_only():
    source = Path(tunesmith.__file__).parent
    calls = [(p, line) for p in source.rglob("*.py") for line in p.read_text().splitlines() if "torch.load(" in line]
    assert calls, "checkpoint.py reads optimizer.pt with torch.load"
    assert all("weights_only=True" in line for _, line in calls), calls


def test_pickle_only_model_is_refused_without_trust_pickle(tmp_path, tiny_model):
    folder = make_pickle_only_model(tiny_model, tmp_path / "pickled")
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(TunesmithError, match="only as pickle files.*--trust-pickle"):
        load_pretrained(AutoModelForSequenceClassification, str(folder), ModelConfig())


def test_trusted_pickle_loads_with_weights_only(tmp_path, tiny_model, monkeypatch):
    folder = make_pickle_only_model(tiny_model, tmp_path / "pickled")
    from transformers import AutoModelForSequenceClassification

    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model = load_pretrained(AutoModelForSequenceClassification, str(folder), ModelConfig(trust_pickle=True), num_labels=2)
    assert calls and all(flag is True for flag in calls)  # transformers' default; a change there fails here
    assert model.bert.embeddings.word_embeddings.weight.shape[1] == 32


def test_trusted_pickle_that_holds_code_is_still_refused(tmp_path, tiny_model, monkeypatch):
    folder = make_pickle_only_model(tiny_model, tmp_path / "hostile")
    with open(folder / "pytorch_model.bin", "wb") as fh:
        pickle.dump({"weight": RunsCode()}, fh, protocol=2)
    monkeypatch.chdir(tmp_path)
    from transformers import AutoModelForSequenceClassification

    with pytest.raises(TunesmithError, match="hold more than tensors"):
        load_pretrained(AutoModelForSequenceClassification, str(folder), ModelConfig(trust_pickle=True))
    assert not (tmp_path / "PWNED_MARKER").exists()


def make_remote_code_model(tiny_model: Path, folder: Path) -> Path:
    """A model folder whose config asks transformers to import its own evil.py."""
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="evil-bert", auto_map={"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "evil.py").write_text(
        "open('REMOTE_CODE_RAN', 'w').write('ran')\n"
        "from transformers import BertConfig, BertForSequenceClassification\n"
        "class EvilConfig(BertConfig):\n    model_type = 'evil-bert'\n"
        "class EvilModel(BertForSequenceClassification):\n    config_class = EvilConfig\n")
    return folder


def test_remote_code_does_not_run_unless_asked(tmp_path, tiny_model, reviews_csv, monkeypatch, capsys):
    folder = make_remote_code_model(tiny_model, tmp_path / "remote")
    monkeypatch.chdir(tmp_path)
    code = main(["train", str(reviews_csv), "--model", str(folder), "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert code == 2 and "--trust-remote-code" in capsys.readouterr().err
    assert not (tmp_path / "REMOTE_CODE_RAN").exists()
    assert not (tmp_path / "run").exists()

    from transformers import AutoConfig

    load_pretrained(AutoConfig, str(folder), ModelConfig(trust_remote_code=True))  # the flag is honoured
    assert (tmp_path / "REMOTE_CODE_RAN").exists()


# -- paths listed in data files (for the image/audio tasks) ---------------------------------------

def test_safe_member_path_keeps_paths_inside_the_folder(tmp_path):
    base = tmp_path / "data"
    (base / "img").mkdir(parents=True)
    (base / "img" / "cat.png").write_bytes(b"png")
    assert safe_member_path(base, "img/cat.png") == (base / "img" / "cat.png").resolve()
    assert safe_member_path(base, "./img/../img/cat.png") == (base / "img" / "cat.png").resolve()
    for escape in ("../secret.txt", "img/../../secret.txt", "/etc/passwd", "~/.ssh/id_rsa", "..", "img/../.."):
        with pytest.raises(TunesmithError, match="outside the data folder"):
            safe_member_path(base, escape)
    outside = tmp_path / "secret.txt"
    outside.write_text("s")
    assert safe_member_path(base, "../secret.txt", allow_outside=True) == outside.resolve()


def test_safe_member_path_follows_symlinks_before_judging(tmp_path):
    base = tmp_path / "data"
    base.mkdir()
    (tmp_path / "secret.txt").write_text("s")
    (base / "innocent.png").symlink_to(tmp_path / "secret.txt")
    with pytest.raises(TunesmithError, match="outside the data folder"):
        safe_member_path(base, "innocent.png")


@pytest.mark.parametrize("bad", ["", "   ", "img\x00.png", None, 3.5])
def test_safe_member_path_rejects_empty_and_odd_cells(tmp_path, bad):
    with pytest.raises(TunesmithError):
        safe_member_path(tmp_path, bad)
