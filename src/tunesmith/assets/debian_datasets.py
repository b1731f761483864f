"""Bundled image and audio datasets built from Debian packages: fashion-mnist and spoken-letters.

Both are fetched by debian.py (the installed package's files, else `apt-get download` without
root) and built once into the user cache as a folder of files plus train/validation/test CSVs
with a `path` column (relative to the CSV's folder) and a `label` column.
"""
from __future__ import annotations

import functools
import gzip
import math
import shutil
import struct
from pathlib import Path

from ..errors import TunesmithError
from .debian import fetch_deb_into_cache
from .registry import SPLIT_SEED, DatasetAsset, register_dataset, write_fixed_split


def fetch_debian_dataset(asset: DatasetAsset, installed: str, build_version: int) -> Path:
    """DatasetAsset.fetch for a Debian package: the cached folder holding the split CSVs."""
    return fetch_deb_into_cache(f"datasets/{asset.name}", asset.package, asset.version, installed, asset.build, build_version)


# -- fashion-mnist --------------------------------------------------------------------------
FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one Fashion-MNIST uses


def read_idx(path: Path):
    """An IDX file (the MNIST format, gzipped) as a numpy uint8 array of the shape its header gives."""
    import numpy as np

    if not path.is_file():
        raise TunesmithError(f"{path} is missing; the package that should hold it is incomplete, so reinstall it or delete the cache folder and fetch again.")
    raw = gzip.decompress(path.read_bytes())
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != IDX_UBYTE:
        raise TunesmithError(f"{path} is not an IDX file of unsigned bytes (bad magic number); reinstall the package or fetch it again.")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != math.prod(dims):
        raise TunesmithError(f"{path} holds {values.size} values where its header says {math.prod(dims)}; the file is damaged, so fetch it again.")
    return values.reshape(dims)


def read_fashion_split(source: Path, stem: str):
    images, labels = read_idx(source / f"{stem}-images-idx3-ubyte.gz"), read_idx(source / f"{stem}-labels-idx1-ubyte.gz")
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.shape != images.shape[:1] or labels.max(initial=0) >= len(FASHION_CLASSES):
        raise TunesmithError(f"The Fashion-MNIST files {stem}-* in {source} do not hold 28x28 images with one label 0-9 each; fetch them again.")
    return images, labels


def build_fashion_mnist(root: Path, out: Path) -> None:
    import pandas as pd
    from PIL import Image
    from sklearn.model_selection import train_test_split

    source = root / FASHION_DIR
    tables = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        images, labels = read_fashion_split(source, stem)
        (out / "images" / split).mkdir(parents=True)
        paths = [f"images/{split}/{i:05d}.png" for i in range(len(images))]  # numbered by position in the official file
        for rel, pixels in zip(paths, images):
            Image.fromarray(pixels).save(out / rel, format="PNG")  # uint8 2-D: 8-bit grayscale, no timestamp
        tables[split] = pd.DataFrame({"path": paths, "label": [FASHION_CLASSES[k] for k in labels]})
    # the official test set stays the test set; validation is a stratified tenth of the official training set
    official = tables["train"]
    train, validation = train_test_split(official, test_size=len(official) // 10, stratify=official["label"], random_state=SPLIT_SEED)
    for split, part in (("train", train.sort_index()), ("validation", validation.sort_index()), ("test", tables["test"])):
        part.to_csv(out / f"{split}.csv", index=False)


register_dataset(DatasetAsset(
    name="fashion-mnist", package="dataset-fashion-mnist", version="0.0~git20200523.55506a9-1",
    description="Fashion-MNIST (Zalando): 28x28 grayscale PNG photos of clothing in 10 classes (T-shirt/top ... Ankle boot), "
                "the official 10,000-image test set; MIT (Expat) licence, Zalando SE 2017",
    task="image classification, 10 classes", size="70,000 images (54,000 train / 6,000 validation / 10,000 test)",
    build=build_fashion_mnist, text_column="path", label_column="label", suffix=".csv", task_name="image-classification",
    fetch=functools.partial(fetch_debian_dataset, installed=FASHION_DIR, build_version=1),
    source_text="from Debian dataset-fashion-mnist=0.0~git20200523.55506a9-1 (apt-get download, no root needed)",
))


# -- spoken-letters -------------------------------------------------------------------------
KLETTRES_DIR = "usr/share/klettres"
CLIP_KINDS = ("alpha", "syllab")  # KLettres' letters and syllables
# KLettres' folders are locales; en_GB joins en, being the same language (another speaker)
LANGUAGES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "en": "English", "en_GB": "English", "es": "Spanish",
    "fr": "French", "he": "Hebrew", "hu": "Hungarian", "it": "Italian", "lt": "Lithuanian", "ml": "Malayalam",
    "nb": "Norwegian", "nds": "Low German", "nl": "Dutch", "pt_BR": "Portuguese", "ru": "Russian", "tn": "Setswana",
    "uk": "Ukrainian",
}
# A stratified quarter is the test set, so a language needs 40 clips for 10 of them to be test clips
MIN_CLIPS = 40
TEST_FRACTION, VALIDATION_FRACTION = 0.25, 0.15


def klettres_clips(root: Path):
    """Every recording in the package: (path under clips/, language), sorted so the build is the same everywhere."""
    import pandas as pd

    base = root / KLETTRES_DIR
    rows = [(f"clips/{clip.relative_to(base).as_posix()}", LANGUAGES.get(locale.name, locale.name))
            for locale in sorted(p for p in base.iterdir() if p.is_dir())
            for kind in CLIP_KINDS
            for clip in sorted((locale / kind).glob("*.ogg"))]
    return pd.DataFrame(rows, columns=["path", "label"])


def build_spoken_letters(root: Path, out: Path, min_clips: int = MIN_CLIPS) -> None:
    clips = klettres_clips(root)
    counts = clips["label"].value_counts()
    clips = clips[clips["label"].isin(counts.index[counts >= min_clips])].reset_index(drop=True)
    if clips["label"].nunique() < 2:
        raise TunesmithError(f"The KLettres recordings in {root / KLETTRES_DIR} have fewer than two languages with {min_clips} clips; "
                             f"reinstall klettres-data or fetch it again.")
    for rel in clips["path"]:
        # copied, not hard-linked: a link into /usr/share would let a write to the cache change the system's file
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / KLETTRES_DIR / rel.removeprefix("clips/"), out / rel)
    n = len(clips)
    write_fixed_split(clips, out, "label", n_test=round(n * TEST_FRACTION), n_validation=round(n * VALIDATION_FRACTION))


register_dataset(DatasetAsset(
    name="spoken-letters", package="klettres-data", version="4:22.12.3-1",
    description="KLettres (KDE) recordings of spoken letters and syllables labeled by language (spoken-language ID; en and en_GB "
                "are both English; Arabic and Norwegian, under 40 clips, left out); mostly one speaker per language, so the speaker "
                "and the recording set help too; Ogg Vorbis, mostly 44.1 kHz (Danish letters 128 kHz), mono and stereo, 0.2-7.6 s "
                "(median 1.6 s, 95% under 2.9 s); GPL-2+ (KDE KLettres)",
    task="audio classification, 17 languages", size="1,779 clips (1,067 train / 267 validation / 445 test)",
    build=build_spoken_letters, text_column="path", label_column="label", suffix=".csv", task_name="audio-classification",
    fetch=functools.partial(fetch_debian_dataset, installed=KLETTRES_DIR, build_version=1),
    source_text="from Debian klettres-data=4:22.12.3-1 (apt-get download, no root needed)",
))
