"""Datasets built from Debian packages: fashion-mnist (IDX -> PNG) and spoken-letters (KLettres Ogg clips).

The fast tests build tiny .deb files here (an ar archive holding a data.tar.xz) and replace the
apt-get download step, so no network is used; the slow tests fetch the real packages.
"""
from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tunesmith.assets.debian_datasets as debian_datasets
from tunesmith.assets import debian
from tunesmith.assets.debian_datasets import FASHION_CLASSES, FASHION_DIR, KLETTRES_DIR, build_spoken_letters, read_idx
from tunesmith.assets.registry import DATASETS, dataset_files
from tunesmith.errors import TunesmithError

SPLITS = ("train", "validation", "test")


# -- tiny packages made here ---------------------------------------------------------------------
def ar_archive(members: list[tuple[str, bytes]]) -> bytes:
    parts = [b"!<arch>\n"]
    for name, data in members:
        parts.append(f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode())
        parts.append(data + (b"\n" if len(data) % 2 else b""))
    return b"".join(parts)


def fake_deb(path: Path, files: dict[str, bytes], compression: str = "xz", gnu_names: bool = False) -> Path:
    """A .deb as dpkg writes it: debian-binary, control.tar.xz, data.tar.<compression> with ./usr/... members."""
    def tar(entries: dict[str, bytes], mode: str) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tf:
            for name, data in sorted(entries.items()):
                info = tarfile.TarInfo(f"./{name}")
                info.size, info.mtime = len(data), 0
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    suffix = "/" if gnu_names else ""
    data_name = "data.tar" + (f".{compression}" if compression else "")
    path.write_bytes(ar_archive([("debian-binary" + suffix, b"2.0\n"), ("control.tar.xz" + suffix, tar({"control": b"Package: x\n"}, "w:xz")),
                                 (data_name + suffix, tar(files, f"w:{compression}" if compression else "w"))]))
    return path


def idx_bytes(values: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, values.ndim]) + struct.pack(f">{values.ndim}I", *values.shape)
    return gzip.compress(header + values.astype(np.uint8).tobytes(), mtime=0)


def fashion_files(per_class_train: int = 20, per_class_test: int = 5) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    rng = np.random.RandomState(0)
    arrays = {}
    for stem, per_class in (("train", per_class_train), ("t10k", per_class_test)):
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        arrays[f"{stem}-images"] = rng.randint(0, 256, size=(len(labels), 28, 28))
        arrays[f"{stem}-labels"] = labels
    files = {f"{FASHION_DIR}/{name}-idx{3 if 'images' in name else 1}-ubyte.gz": idx_bytes(a) for name, a in arrays.items()}
    files["usr/share/doc/dataset-fashion-mnist/copyright"] = b"License: Expat\n"
    return files, arrays


def ogg_clip(seconds: float, pitch: float) -> bytes:
    import soundfile

    t = np.arange(int(8000 * seconds)) / 8000
    buf = io.BytesIO()
    soundfile.write(buf, (0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32), 8000, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def klettres_files(counts: dict[str, int]) -> dict[str, bytes]:
    files = {}
    for i, (locale, n) in enumerate(sorted(counts.items())):
        for j in range(n):
            kind = "alpha" if j % 2 else "syllab"
            files[f"{KLETTRES_DIR}/{locale}/{kind}/c{j:02d}.ogg"] = ogg_clip(0.2 + 0.01 * j, 200 + 50 * i)
        files[f"{KLETTRES_DIR}/{locale}/sounds.xml"] = b"<sounds/>"  # not a clip: must be left out
    return files


@pytest.fixture
def offline_apt(monkeypatch, tmp_path):
    """A cache in tmp_path, no installed packages, and `apt-get download` replaced by copying the fake .deb of each package."""
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(debian, "INSTALLED_ROOT", tmp_path / "system")
    debs: dict[str, Path] = {}
    calls: list[tuple[str, str]] = []

    def fake_download(package, version, dest, hint=""):
        calls.append((package, version))
        dest.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(debs[package], dest / f"{package}_{version.replace(':', '%3a')}_all.deb"))

    monkeypatch.setattr(debian, "download_deb", fake_download)
    return debs, calls


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- the .deb reader ---------------------------------------------------------------------------
@pytest.mark.parametrize("compression,gnu_names", [("xz", False), ("gz", True), ("bz2", False), ("", True)])
def test_extract_deb_reads_the_data_tar_and_keeps_only_the_asked_folder(tmp_path, compression, gnu_names):
    files = {"usr/share/x/a.bin": os.urandom(1001), "usr/share/x/sub/b.txt": b"odd length", "usr/share/y/c": b"other folder"}
    deb = fake_deb(tmp_path / "x.deb", files, compression, gnu_names)
    assert set(debian.ar_members(deb)) == {"debian-binary", "control.tar.xz", "data.tar" + (f".{compression}" if compression else "")}
    debian.extract_deb(deb, tmp_path / "root", ("usr/share/x/",))
    assert tree_bytes(tmp_path / "root") == {k: v for k, v in files.items() if k.startswith("usr/share/x/")}


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb to make a zstd package")
def test_a_compression_python_cannot_read_goes_through_dpkg_deb(tmp_path):
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text("Package: tiny\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n")
    (tree / "usr/share/tiny").mkdir(parents=True)
    (tree / "usr/share/tiny/data.bin").write_bytes(b"\x00zstd\xff" * 100)
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zzstd", "--build", str(tree), str(tmp_path / "tiny.deb")], check=True, capture_output=True)
    assert "data.tar.zst" in debian.ar_members(tmp_path / "tiny.deb")
    debian.extract_deb(tmp_path / "tiny.deb", tmp_path / "root", ("usr/share/tiny/",))
    assert (tmp_path / "root/usr/share/tiny/data.bin").read_bytes() == b"\x00zstd\xff" * 100


def test_a_damaged_deb_is_one_sentence(tmp_path):
    bad = tmp_path / "bad.deb"
    bad.write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(TunesmithError, match="is not a Debian package .*fetch it again"):
        debian.ar_members(bad)
    good = fake_deb(tmp_path / "x.deb", {"usr/share/x/a": b"a" * 500})
    (tmp_path / "cut.deb").write_bytes(good.read_bytes()[:-100])
    with pytest.raises(TunesmithError, match="is truncated"):
        debian.ar_members(tmp_path / "cut.deb")


# -- the download step's errors ------------------------------------------------------------------
def one_sentence(message: str, package: str) -> None:
    assert "\n" not in message and message.endswith(".") and message[0].isupper()
    assert package in message and f"sudo apt-get install {package}" in message


def test_no_apt_get_is_one_sentence_naming_the_package_and_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(TunesmithError) as err:
        debian.download_deb("klettres-data", "4:22.12.3-1", tmp_path / "dl")
    one_sentence(str(err.value), "klettres-data")
    assert "apt-get is not available" in str(err.value)


def test_no_network_is_one_sentence_with_apts_reason(monkeypatch, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "apt-get"
    fake.write_text("#!/bin/sh\necho \"Err:1 http://deb.debian.org/debian bookworm/main\" >&2\n"
                    "echo \"E: Failed to fetch http://deb.debian.org/x.deb  Temporary failure resolving 'deb.debian.org'\" >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(TunesmithError) as err:
        debian.download_deb("dataset-fashion-mnist", "0.0~git20200523.55506a9-1", tmp_path / "dl", hint=debian.fix_hint("dataset-fashion-mnist", tmp_path / "c"))
    message = str(err.value)
    one_sentence(message, "dataset-fashion-mnist")
    assert "Temporary failure resolving" in message and "Err:1" not in message and f"copy the folder {tmp_path / 'c'}" in message


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get")
def test_an_unknown_package_is_one_sentence(tmp_path):
    with pytest.raises(TunesmithError) as err:
        debian.download_deb("tunesmith-no-such-package", "1.0", tmp_path / "dl")
    one_sentence(str(err.value), "tunesmith-no-such-package")
    assert "Unable to locate package" in str(err.value) or "not available" in str(err.value)


# -- fashion-mnist ---------------------------------------------------------------------------
def test_read_idx_parses_the_header_and_refuses_a_bad_one(tmp_path):
    values = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    (tmp_path / "ok.gz").write_bytes(idx_bytes(values))
    assert read_idx(tmp_path / "ok.gz").tolist() == values.tolist()
    (tmp_path / "short.gz").write_bytes(gzip.compress(gzip.decompress(idx_bytes(values))[:-1]))
    with pytest.raises(TunesmithError, match="holds 23 values where its header says 24"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "float.gz").write_bytes(gzip.compress(b"\0\0\x0d\x01" + struct.pack(">I", 1) + b"\0" * 4))
    with pytest.raises(TunesmithError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "float.gz")


def test_fashion_mnist_builds_pngs_and_a_stratified_split_from_the_deb(offline_apt, tmp_path):
    from PIL import Image

    debs, calls = offline_apt
    files, arrays = fashion_files()
    debs["dataset-fashion-mnist"] = fake_deb(tmp_path / "fashion.deb", files)
    paths = dataset_files("fashion-mnist")
    folder = paths["train"].parent
    assert folder == tmp_path / "cache/datasets/fashion-mnist" and calls == [("dataset-fashion-mnist", "0.0~git20200523.55506a9-1")]
    splits = {s: pd.read_csv(paths[s]) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [180, 20, 50]
    assert list(splits["train"].columns) == ["path", "label"]
    # stratified: every class keeps its share in validation; the official test set is kept whole, in order
    assert Counter(splits["validation"]["label"]) == {c: 2 for c in FASHION_CLASSES}
    assert splits["test"]["path"].tolist() == [f"images/test/{i:05d}.png" for i in range(50)]
    assert sorted(splits["train"]["path"].tolist() + splits["validation"]["path"].tolist()) == [f"images/train/{i:05d}.png" for i in range(200)]
    for split, stem in (("train", "train"), ("validation", "train"), ("test", "t10k")):
        for row in splits[split].sample(5, random_state=0).itertuples():
            index = int(Path(row.path).stem)
            with Image.open(folder / row.path) as image:
                assert image.mode == "L" and image.size == (28, 28)
                assert np.array_equal(np.asarray(image), arrays[f"{stem}-images"][index])
            assert row.label == FASHION_CLASSES[arrays[f"{stem}-labels"][index]]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["package"] == "dataset-fashion-mnist" and manifest["version"] == "0.0~git20200523.55506a9-1"
    assert manifest["deb_sha256"] == debian.sha256(debs["dataset-fashion-mnist"]) and manifest["from"] == "apt-get download"
    assert manifest["file_count"] == 253 and set(manifest["files"]) == {"train.csv", "validation.csv", "test.csv"}
    assert not list(folder.parent.glob(".fashion-mnist-*"))  # the temporary folder and the .deb are gone
    dataset_files("fashion-mnist")
    assert len(calls) == 1  # built once


def test_fashion_mnist_build_is_the_same_bytes_twice(offline_apt, tmp_path, monkeypatch):
    debs, _ = offline_apt
    debs["dataset-fashion-mnist"] = fake_deb(tmp_path / "fashion.deb", fashion_files()[0])
    trees = []
    for cache in ("one", "two"):
        monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / cache))
        trees.append(tree_bytes(dataset_files("fashion-mnist")["train"].parent))
    assert trees[0] == trees[1] and len(trees[0]) == 254  # manifest included: 250 PNGs, 3 CSVs


def test_installed_package_files_are_read_without_downloading(offline_apt, tmp_path):
    _, calls = offline_apt
    files, _ = fashion_files(per_class_train=10, per_class_test=1)
    for name, data in files.items():
        (tmp_path / "system" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "system" / name).write_bytes(data)
    paths = dataset_files("fashion-mnist")
    assert calls == [] and len(pd.read_csv(paths["validation"])) == 10
    manifest = json.loads((paths["test"].parent / "manifest.json").read_text())
    assert manifest["from"] == str(tmp_path / "system" / FASHION_DIR) and "deb_sha256" not in manifest


def test_an_interrupted_build_leaves_no_complete_looking_entry(offline_apt, tmp_path, monkeypatch):
    debs, calls = offline_apt
    debs["dataset-fashion-mnist"] = fake_deb(tmp_path / "fashion.deb", fashion_files()[0])
    asset = DATASETS["fashion-mnist"]

    def build_then_crash(root, out):
        asset.build(root, out)
        raise KeyboardInterrupt  # after every file but the manifest is written

    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(asset, build=build_then_crash))
    with pytest.raises(KeyboardInterrupt):
        dataset_files("fashion-mnist")
    cache = tmp_path / "cache/datasets"
    assert [p.name for p in cache.iterdir()] == []  # neither the entry nor its temporary folder
    # a folder left by something else without a manifest is not taken as built, and is replaced
    (cache / "fashion-mnist").mkdir()
    (cache / "fashion-mnist/train.csv").write_text("path,label\nstale.png,Bag\n")
    monkeypatch.setitem(DATASETS, "fashion-mnist", asset)
    assert len(pd.read_csv(dataset_files("fashion-mnist")["train"])) == 180 and len(calls) == 2


def test_a_new_build_version_rebuilds_the_entry(offline_apt, tmp_path, monkeypatch):
    debs, calls = offline_apt
    debs["dataset-fashion-mnist"] = fake_deb(tmp_path / "fashion.deb", fashion_files()[0])
    asset = DATASETS["fashion-mnist"]
    dataset_files("fashion-mnist")
    newer = functools.partial(debian_datasets.fetch_debian_dataset, installed=FASHION_DIR, build_version=2)
    monkeypatch.setitem(DATASETS, "fashion-mnist", dataclasses.replace(asset, fetch=newer))
    folder = dataset_files("fashion-mnist")["train"].parent
    assert len(calls) == 2 and json.loads((folder / "manifest.json").read_text())["build_version"] == 2


# -- spoken-letters --------------------------------------------------------------------------
def spoken_letters_with(min_clips: int):
    asset = DATASETS["spoken-letters"]
    return dataclasses.replace(asset, build=functools.partial(build_spoken_letters, min_clips=min_clips))


def test_spoken_letters_labels_languages_drops_small_ones_and_splits_stratified(offline_apt, tmp_path, monkeypatch):
    import soundfile

    debs, _ = offline_apt
    files = klettres_files({"de": 20, "en": 12, "en_GB": 8, "ml": 40, "tn": 7})
    debs["klettres-data"] = fake_deb(tmp_path / "klettres.deb", files)
    monkeypatch.setitem(DATASETS, "spoken-letters", spoken_letters_with(min_clips=20))
    paths = dataset_files("spoken-letters")
    folder = paths["train"].parent
    splits = {s: pd.read_csv(paths[s]) for s in SPLITS}
    everything = pd.concat(splits.values())
    # en and en_GB are one language; Setswana, with 7 clips, is under the threshold
    assert Counter(everything["label"]) == {"German": 20, "English": 20, "Malayalam": 40}
    assert [len(splits[s]) for s in SPLITS] == [48, 12, 20]
    assert Counter(splits["test"]["label"]) == {"German": 5, "English": 5, "Malayalam": 10}
    assert everything["path"].is_unique and all(p.startswith("clips/") and p.endswith(".ogg") for p in everything["path"])
    for rel in everything["path"]:
        assert (folder / rel).read_bytes() == files[f"{KLETTRES_DIR}/{rel.removeprefix('clips/')}"]
    audio, rate = soundfile.read(folder / splits["test"]["path"][0])
    assert rate == 8000 and 0.15 < len(audio) / rate < 1.0
    assert not list(folder.rglob("sounds.xml"))


def test_spoken_letters_build_is_the_same_bytes_twice(offline_apt, tmp_path, monkeypatch):
    debs, _ = offline_apt
    debs["klettres-data"] = fake_deb(tmp_path / "klettres.deb", klettres_files({"cs": 10, "fr": 10, "it": 12}))
    monkeypatch.setitem(DATASETS, "spoken-letters", spoken_letters_with(min_clips=10))
    trees = []
    for cache in ("one", "two"):
        monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / cache))
        trees.append(tree_bytes(dataset_files("spoken-letters")["train"].parent))
    assert trees[0] == trees[1] and sum(name.endswith(".ogg") for name in trees[0]) == 32


def test_a_package_without_the_expected_folder_is_one_sentence(offline_apt, tmp_path):
    debs, _ = offline_apt
    debs["klettres-data"] = fake_deb(tmp_path / "klettres.deb", {"usr/share/doc/klettres-data/copyright": b"GPL"})
    with pytest.raises(TunesmithError) as err:
        dataset_files("spoken-letters")
    one_sentence(str(err.value), "klettres-data")
    assert "/usr/share/klettres" in str(err.value)
    assert [p.name for p in (tmp_path / "cache/datasets").iterdir()] == []


def test_the_registry_entries_describe_the_files():
    fashion, letters = DATASETS["fashion-mnist"], DATASETS["spoken-letters"]
    assert (fashion.task_name, fashion.text_column, fashion.label_column, fashion.suffix) == ("image-classification", "path", "label", ".csv")
    assert (letters.task_name, letters.text_column, letters.label_column, letters.suffix) == ("audio-classification", "path", "label", ".csv")
    assert "Expat" in fashion.description and "GPL-2+" in letters.description
    assert fashion.origin.startswith("from Debian dataset-fashion-mnist=") and letters.origin.startswith("from Debian klettres-data=")


# -- the real packages -------------------------------------------------------------------------
def validation_digest(splits: dict[str, pd.DataFrame]) -> str:
    return hashlib.sha256("\n".join(sorted(splits["validation"]["path"])).encode()).hexdigest()


@pytest.mark.slow
def test_real_fashion_mnist_has_70000_labeled_images():
    from PIL import Image

    paths = dataset_files("fashion-mnist")
    splits = {s: pd.read_csv(paths[s]) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [54000, 6000, 10000]
    for split, per_class in (("train", 5400), ("validation", 600), ("test", 1000)):
        assert Counter(splits[split]["label"]) == {c: per_class for c in FASHION_CLASSES}
    everything = pd.concat(splits.values())
    assert everything["path"].is_unique
    for rel in everything["path"].sample(50, random_state=0):
        with Image.open(paths["train"].parent / rel) as image:
            assert image.mode == "L" and image.size == (28, 28) and 10 < np.asarray(image).mean() < 250
    manifest = json.loads((paths["train"].parent / "manifest.json").read_text())
    assert manifest["package"] == "dataset-fashion-mnist" and manifest["file_count"] == 70003
    assert validation_digest(splits) == "2700a6af3afadb02a076b4d6077665a5a5d8f6264faf15578298c6933ad2d1d5"  # the split never moves


@pytest.mark.slow
def test_real_spoken_letters_clips_decode_and_every_language_has_ten_test_clips():
    import soundfile

    asset = DATASETS["spoken-letters"]
    paths = dataset_files("spoken-letters")
    splits = {s: pd.read_csv(paths[s]) for s in SPLITS}
    labels = set(splits["train"]["label"])
    assert asset.task == f"audio classification, {len(labels)} languages" and len(labels) >= 10
    test_counts = Counter(splits["test"]["label"])
    assert set(test_counts) == labels == set(splits["validation"]["label"]) and min(test_counts.values()) >= 10
    assert f"{sum(len(s) for s in splits.values()):,}" in asset.size
    assert validation_digest(splits) == "921e42ed45545949898abc80d8c503d9091c2467b1641366d00a7bc4d3d94473"  # the split never moves
    rates = Counter()
    for rel in pd.concat(splits.values())["path"].sample(60, random_state=0):
        audio, rate = soundfile.read(paths["train"].parent / rel)
        rates[rate] += 1
        assert 0.1 < len(audio) / rate < 10 and np.abs(audio).max() > 0.01
        assert rate == 44100 or rel.startswith(("clips/da/", "clips/ml/"))  # Danish letters are 128 kHz, one Malayalam clip 22.05 kHz
    assert rates[44100] >= 50
