"""Transfer sets for the recipes: in-domain text without labels, which the student learns from through the
teacher's soft targets alone (the labels of its rows are -100; see :mod:`hf_distill.terms.logits`).

Where the rows come from:

* ``--transfer_file`` (sentiment, NER: split into words by :mod:`.ner_transfer`): a CSV / TSV, JSON Lines, Parquet or plain-text file (one example per line), read with
  ``datasets.load_dataset`` through :mod:`.data_files`; ``--text_column`` names its text column (default
  ``text``); any label column in it is ignored.
* without a file, the offline default: the training rows the recipe does not use as labeled rows (those past
  ``max_train_samples``), with their labels dropped. Sentiment: more Rotten Tomatoes snippets; NER: more
  sentences of the same tweet corpus, tags dropped (the same corpus, not another source of tweets); code: more
  blocks of the training files (held-out files never), each a KD-only row (labels -100).

NER also reads other-domain English text that is on every machine (``--transfer_source``, :mod:`.ner_transfer`).
``--transfer_samples N`` caps the rows (the first N). The transfer rows never reach the teacher's fine-tune nor
the no-KD baseline: both see the labeled rows only, the baseline's real alternative.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import ClassLabel, Dataset, Features, Value, concatenate_datasets

from hf_distill.recipes.data_common import check_not_empty
from hf_distill.recipes.data_files import builder_for, load_data_files

TRANSFER_BUILDERS = ("csv", "json", "parquet", "text")


def transfer_builder(path: Path) -> str:
    """The ``datasets`` builder of a transfer file: ``text`` for ``.txt`` (one example per line), else the
    builder of its suffix (:func:`.data_files.builder_for`)."""
    if path.suffix.lower() == ".txt":
        return "text"
    return builder_for({"transfer": path}, None, TRANSFER_BUILDERS, "transfer-set")


def load_transfer_file(path: str | Path, text_column: str | None = None) -> Dataset:
    """The rows of ``path`` as a dataset with one ``text`` column (str), empty texts dropped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file has no text column (name it with ``--text_column``) or no non-empty text.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"transfer_file {str(path)!r} does not exist: the transfer set (text without labels) is read from "
            "it; check the path (--transfer_file)."
        )
    loaded = load_data_files({"train": path}, transfer_builder(path))["train"]
    column = text_column or "text"
    if column not in loaded.column_names:
        raise ValueError(
            f"transfer_file {str(path)!r} has no column {column!r} (it has {loaded.column_names}): the "
            "transfer set's text is read from it; name the text column with --text_column."
        )
    texts = [t.strip() for t in loaded[column] if isinstance(t, str) and t.strip()]
    if not texts:
        raise ValueError(
            f"transfer_file {str(path)!r} holds no text in column {column!r}; a transfer set needs in-domain "
            "text (one example per row or line)."
        )
    return Dataset.from_dict({"text": texts})


def transfer_texts(
    train: Dataset,
    labeled_rows: int | None,
    transfer_file: str | None,
    text_column: str | None,
    samples: int | None,
) -> Dataset | None:
    """The transfer set's texts (a ``text`` column), or None when none is asked for.

    ``train``: the full training split before it is cut to ``labeled_rows`` (``max_train_samples``); without
    ``transfer_file`` its rows past ``labeled_rows`` are the transfer set (none left: refused).
    """
    if transfer_file is None and samples is None:
        return None
    if transfer_file is not None:
        texts = load_transfer_file(transfer_file, text_column)
    else:
        if labeled_rows is None or labeled_rows >= len(train):
            raise ValueError(
                f"transfer_samples={samples} without --transfer_file takes the training rows past "
                f"max_train_samples ({labeled_rows}) as the transfer set, but the training split has "
                f"{len(train)} rows, so none is left; lower max_train_samples or give a --transfer_file."
            )
        texts = train.select(range(labeled_rows, len(train))).select_columns(["text"])
    if samples is not None and samples < len(texts):
        texts = texts.select(range(samples))
    check_not_empty(texts, "transfer")
    return texts


def tokenize_transfer(texts: Dataset, tokenizer: Any, max_length: int) -> Dataset:
    """Sequence-classification transfer rows: the tokenizer's inputs (truncated to ``max_length``, padded by
    the collator) and ``labels`` -100 on every row, so the KD term alone learns from them."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenizer(batch["text"], truncation=True, max_length=max_length)
        return {**encoded, "labels": [-100] * len(batch["text"])}

    return texts.map(tokenize, batched=True, remove_columns=texts.column_names)


def with_transfer(labeled: Dataset, transfer: Dataset | None) -> Dataset:
    """The distilled student's training set: the labeled rows and the transfer rows (labels -100) in one
    dataset (Trainer shuffles them together, so batches mix both); the labeled rows alone without a transfer
    set."""
    if transfer is None:
        return labeled
    features = {name: labeled.features[name] for name in labeled.column_names}
    if isinstance(features.get("labels"), ClassLabel):
        features["labels"] = Value("int64")  # a ClassLabel holds no -100
    missing = sorted(set(labeled.column_names) ^ set(transfer.column_names))
    if missing:
        raise ValueError(
            f"the transfer rows and the labeled rows differ in columns ({missing}); tokenize both with the same "
            "tokenizer."
        )
    labeled = labeled.cast(Features(features))
    transfer = transfer.cast(Features(features))
    return concatenate_datasets([labeled, transfer])


def rows_past(train: Dataset, labeled_rows: int | None, samples: int | None, task: str) -> Dataset | None:
    """The training rows past the first ``labeled_rows`` (at most ``samples``): the offline transfer set of the
    NER and code recipes, whose labels the caller drops (:func:`unlabeled`); None when ``samples`` is None."""
    if samples is None:
        return None
    if labeled_rows is None or labeled_rows >= len(train):
        raise ValueError(
            f"transfer_samples={samples} takes the {task} training rows past max_train_samples ({labeled_rows}) "
            f"as the transfer set, but there are {len(train)}, so none is left; lower max_train_samples."
        )
    return train.select(range(labeled_rows, min(len(train), labeled_rows + samples)))


def unlabeled(tokenized: Dataset) -> Dataset:
    """Token-level rows (NER, causal LM) with every label -100: the KD term alone learns from them."""

    def drop(batch: dict[str, list]) -> dict[str, list]:
        return {"labels": [[-100] * len(labels) for labels in batch["labels"]]}

    return tokenized.map(drop, batched=True)


def refuse_transfer_file(transfer_file: str | None, task: str) -> None:
    """A transfer file is read by the sentiment and NER recipes only (code needs blocks of its own corpus)."""
    if transfer_file is not None:
        raise ValueError(
            f"--transfer_file is read by the sentiment and NER recipes only; the {task} recipe takes "
            "--transfer_samples N (its training rows past max_train_samples, labels dropped) as its transfer set."
        )


def refuse_transfer_source(transfer_source: str | None, task: str) -> None:
    """A named offline source of other-domain text is read by the NER recipe only (:mod:`.ner_transfer`)."""
    if transfer_source is not None:
        raise ValueError(
            f"--transfer_source {transfer_source} is read by the NER recipe only (untagged sentences of other "
            f"text); the {task} recipe takes --transfer_file FILE or --transfer_samples N as its transfer set."
        )
