"""Your own data files for the recipes, read with ``datasets.load_dataset(<builder>, data_files=...)``: which
builder a file needs, the files checked before anything is read, and a split without a file cut out of the
training split (seeded, and reported).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets import DatasetDict
from datasets.exceptions import DatasetGenerationError

from hf_distill.recipes.data_common import check_fractions, group_split, notice

SPLITS = ("train", "validation", "test")
# The datasets builder of each file suffix; a .tsv file is a CSV file with tab delimiters.
FILE_BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
BUILDER_NAMES = frozenset({"csv", "json", "parquet", "text"})


def data_files(
    train_file: str | os.PathLike | None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
) -> dict[str, Path]:
    """The given files by split (``{}`` when none is), each checked to exist before anything is loaded."""
    given = {
        split: Path(path)
        for split, path in zip(SPLITS, (train_file, validation_file, test_file))
        if path is not None
    }
    if given and "train" not in given:
        raise ValueError(
            "validation_file/test_file were given without train_file: there would be nothing to train on; "
            "pass train_file too."
        )
    for split, path in given.items():
        if not path.exists():
            raise FileNotFoundError(
                f"{split}_file {str(path)!r} does not exist: the {split} split is read from it; check the path "
                f"(--{split}_file)."
            )
    return given


def builder_for(files: Mapping[str, Path], builder: str | None, accepted: Sequence[str], task: str) -> str:
    """The ``datasets`` builder that reads ``files``: ``builder`` when given (``--dataset_name csv``), else the
    one of their suffix; every file must need the same one and it must be one of ``accepted``."""
    if builder is not None:
        if builder not in accepted:
            raise ValueError(
                f"dataset_name={builder!r} with data files: the {task} recipe reads {', '.join(accepted)} files; "
                "leave dataset_name unset and the builder is taken from the files' suffix."
            )
        return builder
    suffixes = {path.suffix.lower() for path in files.values()}
    builders = {FILE_BUILDERS.get(suffix) for suffix in suffixes}
    if len(suffixes) > 1 or None in builders or not builders <= set(accepted):
        wanted = sorted(s for s, b in FILE_BUILDERS.items() if b in accepted)
        raise ValueError(
            f"the {task} recipe reads {', '.join(wanted)} files, and every split the same kind; got "
            f"{', '.join(sorted(str(p) for p in files.values()))}. Convert the files, or name the format with "
            "--dataset_name csv / json / parquet."
        )
    return builders.pop()


def load_data_files(
    files: Mapping[str, Path | Sequence[Path]], builder: str, **builder_kwargs: Any
) -> DatasetDict:
    """``datasets.load_dataset(builder, data_files=files)``, a ``.tsv`` file read with tab delimiters; a file
    the builder cannot parse raises ``ValueError`` naming the files."""
    paths = {
        split: [str(p) for p in ([path] if isinstance(path, Path) else path)] for split, path in files.items()
    }
    if builder == "csv" and all(p.lower().endswith(".tsv") for ps in paths.values() for p in ps):
        builder_kwargs.setdefault("delimiter", "\t")
    try:
        loaded = datasets.load_dataset(builder, data_files=paths, **builder_kwargs)
    except DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise ValueError(
            f"the {builder} reader could not read {sorted(p for ps in paths.values() for p in ps)} "
            f"({type(cause).__name__}: {' '.join(str(cause).split())[:300]}); check that they are {builder} "
            "files and that every row has the same fields."
        ) from error
    return DatasetDict({split: loaded[split] for split in SPLITS if split in loaded})


def carve_indices(
    n_rows: int, *, missing: Mapping[str, float], seed: int, source: str
) -> dict[str, list[int]]:
    """Row indices of train and of the ``missing`` splits (``{"validation": 0.1}``: share of the rows), cut
    from ``n_rows`` training rows with ``seed`` (:func:`group_split`, one row per group); reports the cut."""
    shares = {f"{split}_size": missing.get(split, 0.0) for split in ("validation", "test")}
    check_fractions(**shares)
    indices = group_split([str(i) for i in range(n_rows)], seed=seed, **shares)
    for split in missing:
        if split in indices:
            notice(
                f"data: {split} = {len(indices[split])} of the {n_rows} rows of {source} ({missing[split]:.0%}), "
                f"cut out of training with split_seed={seed}; pass --{split}_file to use your own."
            )
    return indices


def carve_missing_splits(
    splits: DatasetDict,
    *,
    seed: int,
    validation_size: float,
    test_size: float,
    source: str,
) -> DatasetDict:
    """``splits`` with validation and test: one that is missing is cut out of ``train`` (see
    :func:`carve_indices`); shares of 0 go without that split."""
    missing = {
        split: share
        for split, share in (("validation", validation_size), ("test", test_size))
        if split not in splits and share
    }
    if not missing:
        return splits
    train = splits["train"]
    indices = carve_indices(len(train), missing=missing, seed=seed, source=source)
    carved = {split: train.select(rows) for split, rows in indices.items()}
    carved.update({split: ds for split, ds in splits.items() if split != "train"})
    return DatasetDict({split: carved[split] for split in SPLITS if split in carved})
