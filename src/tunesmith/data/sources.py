"""Where the data comes from: the user's files or a bundled dataset's, and reading any of them.

Every task reads its files through `read_data_file`, so a format reader added here (CoNLL
token files, SQuAD JSON) serves training, validation, test, predict and eval files alike.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..assets.registry import DATASETS, dataset_files, require_dataset
from ..errors import TunesmithError
from .read import read_table


def resolve_sources(data_cfg) -> dict[str, str | None]:
    """Paths of train/validation/test: a file, or the files of a bundled dataset name."""
    if not data_cfg.data:
        raise TunesmithError("No training data given; pass a file (CSV, TSV, JSON, JSONL, Parquet) or a bundled dataset name such as rotten-tomatoes.")
    sources = {"train": data_cfg.data, "validation": data_cfg.validation, "test": data_cfg.test}
    path = Path(data_cfg.data)
    if not path.exists() and not path.suffix and (data_cfg.data in DATASETS or "/" not in data_cfg.data):
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

    Token-per-line tagged files (CoNLL, WNUT) become one row per sentence with `tokens` and `tags`
    lists; every other file is read as a table (CSV, TSV, JSON, JSONL, Parquet).
    """
    from .conll import looks_like_conll, read_conll

    if looks_like_conll(path):
        return read_conll(path, encoding)
    return read_table(path, encoding, role=role)


def require_trainable(asset) -> None:
    """A bundled dataset of a task this version has no module for yet gets a sentence, not a column error."""
    from ..tasks import TASKS

    if asset.task_name not in TASKS:
        raise TunesmithError(f"The bundled dataset '{asset.name}' ({asset.task}) needs the {asset.task_name} task, which this version of "
                             f"tunesmith cannot train yet (it trains: {', '.join(TASKS)}); pick another dataset from `tunesmith datasets`.")
