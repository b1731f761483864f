"""Where the data comes from: the user's files or a bundled dataset's, and reading any of them.

Every task reads its files through `read_data_file`, so a format reader added here (CoNLL
token files, SQuAD JSON) serves training, validation, test, predict and eval files alike.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..assets.registry import DATASETS, dataset_files, require_dataset
from ..errors import TunesmithError
from .read import FORMATS, read_table

# --data names that `datasets` fetches from the Hugging Face hub (online only): SQuAD's train split
# trains (validation held out of it), its official dev split is the test.
HUB_QA_DATASETS = {"squad": "rajpurkar/squad", "squad_v2": "rajpurkar/squad_v2"}


def resolve_sources(data_cfg) -> dict[str, str | None]:
    """Paths of train/validation/test: a file, or the files of a bundled dataset name."""
    if not data_cfg.data:
        raise TunesmithError("No training data given; pass a file (CSV, TSV, JSON, JSONL, Parquet, or plain text .txt) or a bundled dataset name "
                             "such as rotten-tomatoes.")
    sources = {"train": data_cfg.data, "validation": data_cfg.validation, "test": data_cfg.test}
    path = Path(data_cfg.data)
    if not path.exists() and data_cfg.data in HUB_QA_DATASETS:
        files = hub_qa_files(data_cfg.data)
        sources["train"] = str(files["train"])
        if data_cfg.test is None:
            sources["test"] = str(files["test"])
    elif not path.exists() and not path.suffix and (data_cfg.data in DATASETS or "/" not in data_cfg.data):
        asset = require_dataset(data_cfg.data)
        require_trainable(asset)
        files = dataset_files(data_cfg.data)
        sources["train"] = str(files["train"])
        if data_cfg.validation is None and data_cfg.val_fraction != 0:  # None or a fraction: the dataset's own split
            sources["validation"] = str(files["validation"])
        if data_cfg.test is None:
            sources["test"] = str(files["test"])
    return sources


def read_data_file(path, encoding: str | None = None, role: str = "data") -> pd.DataFrame:
    """The raw rows of a data file (a table of cells; list cells where the format has them).

    A folder of class sub-folders of images or audio clips becomes one row per file (`path` relative to the
    folder, `label` the class folder; data/media_files.py); token-per-line tagged files (CoNLL, WNUT) one row per
    sentence with `tokens` and `tags` lists; SQuAD JSON files one row per question (id, question,
    context, answers; checked against the context later, by the task); plain text (a .txt or .md file, or a
    folder of them) one `text` row per document, marked by attrs['raw_text'] (data/raw_text.py, for the
    causal-lm task); every other file is read as a table (CSV, TSV, JSON, JSONL, Parquet). A table of image
    or clip paths (a bundled dataset's CSV among them) is a table like any other: its paths are relative to
    its folder, which the image or audio task resolves.
    """
    from .conll import looks_like_conll, read_conll
    from .raw_text import is_text_file, is_text_folder, read_text_file, read_text_folder
    from .squad import looks_like_squad, squad_rows

    if Path(path).is_dir() and Path(path).suffix.lower() not in FORMATS:  # a folder named like a file (x.csv/) is a mistake read_table names
        if is_text_folder(path):  # .txt/.md files and no images or clips
            return read_text_folder(path, encoding, role)
        from .audio import AUDIO_FILES
        from .images import IMAGE_FILES
        from .media_files import folder_table

        # images or clips, whichever the class folders hold; scoring on a folder of one class is fine
        return folder_table(path, (IMAGE_FILES, AUDIO_FILES), min_classes=2 if role == "training" else 1)
    if looks_like_conll(path):
        return read_conll(path, encoding)
    if looks_like_squad(path):
        return squad_rows(path)
    if is_text_file(path):  # after CoNLL: a tagged .txt is token data
        return read_text_file(path, encoding, role)
    return read_table(path, encoding, role=role)


def require_trainable(asset) -> None:
    """A bundled dataset of a task this version has no module for yet gets a sentence, not a column error."""
    from ..tasks import TASKS

    if asset.task_name not in TASKS:
        raise TunesmithError(f"The bundled dataset '{asset.name}' ({asset.task}) needs the {asset.task_name} task, which this version of "
                             f"tunesmith cannot train yet (it trains: {', '.join(TASKS)}); pick another dataset from `tunesmith datasets`.")


def hub_qa_files(name: str) -> dict[str, Path]:
    """{'train', 'test'} JSONL files of a hub QA dataset, fetched once with `datasets` into the user cache."""
    from ..assets.fetch import cache_dir
    from ..atomic import atomic_folder

    folder = cache_dir() / "hub" / name
    files = {split: folder / f"{split}.jsonl" for split in ("train", "test")}
    if all(f.is_file() for f in files.values()):
        return files
    try:
        import datasets

        loaded = datasets.load_dataset(HUB_QA_DATASETS[name])
    except ImportError:
        raise TunesmithError(f"--data {name} is read from the Hugging Face hub with the `datasets` package, which is not installed; "
                             f"`pip install datasets`, or pass a SQuAD JSON or JSONL file.") from None
    except (OSError, ValueError) as exc:  # datasets raises ConnectionError (an OSError) offline
        raise TunesmithError(f"--data {name} is downloaded from the Hugging Face hub, which could not be reached ({str(exc).splitlines()[0][:120]}); "
                             f"connect to the internet once (it is cached after), or pass a SQuAD JSON or JSONL file.") from None
    with atomic_folder(folder) as tmp:
        for split, hub_split in (("train", "train"), ("test", "validation")):
            write_qa_jsonl(loaded[hub_split], tmp / f"{split}.jsonl")
    return files


def write_qa_jsonl(rows, path: Path) -> None:
    """Hugging Face SQuAD rows (answers as {"text": [...], "answer_start": [...]}) as our QA JSONL,
    one {"id", "question", "context", "answers": [{"text", "answer_start"}]} object a line."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            answers = [{"text": t, "answer_start": int(s)} for t, s in zip(row["answers"]["text"], row["answers"]["answer_start"])]
            record = {"id": str(row["id"]), "question": row["question"], "context": row["context"], "answers": answers}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
