"""Transfer sets in the recipes: the files they are read from, the offline default (training rows past the
labeled ones, labels dropped), the distilled student's training set, and the baseline's matched steps."""

from __future__ import annotations

import json

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from hf_distill import DistillationTrainingArguments
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.data_transfer import (
    load_transfer_file,
    refuse_transfer_file,
    rows_past,
    tokenize_transfer,
    transfer_texts,
    unlabeled,
    with_transfer,
)
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.tasks import TaskData
from hf_distill.recipes.training import baseline_changes, optimizer_steps
from tests.helpers.tiny_models import make_wordpiece_tokenizer

TEXTS = ["a fine film", "dull and long", "great cast", "not worth it"]


def write(tmp_path, kind: str):
    path = tmp_path / f"transfer.{kind}"
    if kind == "csv":
        path.write_text("review,stars\n" + "\n".join(f"{t},3" for t in TEXTS) + "\n")
    elif kind == "jsonl":
        path.write_text("\n".join(json.dumps({"review": t}) for t in TEXTS) + "\n")
    elif kind == "parquet":
        Dataset.from_dict({"review": TEXTS}).to_parquet(str(path))
    else:
        path.write_text("\n".join(TEXTS) + "\n\n")  # a blank line is no example
    return path


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet", "txt"])
def test_transfer_file_is_read_in_every_format(tmp_path, kind):
    column = None if kind == "txt" else "review"
    rows = load_transfer_file(write(tmp_path, kind), column)
    assert rows.column_names == ["text"] and rows["text"] == TEXTS


def test_transfer_file_errors_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="transfer_file .* does not exist.*--transfer_file"):
        load_transfer_file(tmp_path / "missing.csv")
    with pytest.raises(
        ValueError, match="has no column 'text' \\(it has \\['review', 'stars'\\]\\).*--text_column"
    ):
        load_transfer_file(write(tmp_path, "csv"))
    xml = tmp_path / "rows.xml"
    xml.write_text("<rows/>")
    with pytest.raises(ValueError, match="transfer-set recipe reads .*files"):
        load_transfer_file(xml)


def labeled_train(n: int = 10) -> Dataset:
    features = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
    return Dataset.from_dict(
        {"text": [f"snippet {i}" for i in range(n)], "label": [i % 2 for i in range(n)]}, features=features
    )


def test_offline_default_is_the_training_rows_past_the_labeled_ones():
    rows = transfer_texts(labeled_train(10), 4, None, None, 5)
    assert rows.column_names == ["text"] and rows["text"] == [f"snippet {i}" for i in range(4, 9)]
    assert transfer_texts(labeled_train(10), 4, None, None, None) is None  # not asked for
    everything = transfer_texts(labeled_train(10), 4, None, None, 100)
    assert everything["text"] == [f"snippet {i}" for i in range(4, 10)]
    with pytest.raises(ValueError, match="none is left; lower max_train_samples or give a --transfer_file"):
        transfer_texts(labeled_train(10), 10, None, None, 5)


def test_transfer_rows_join_labeled_rows_with_labels_minus_100():
    tokenizer = make_wordpiece_tokenizer()
    tokenize = lambda b: tokenizer(b["text"], truncation=True, max_length=8)  # noqa: E731
    labeled = (
        labeled_train(4).map(tokenize, batched=True, remove_columns=["text"]).rename_column("label", "labels")
    )
    transfer = tokenize_transfer(Dataset.from_dict({"text": TEXTS[:3]}), tokenizer, 8)
    assert transfer["labels"] == [-100, -100, -100]
    joined = with_transfer(labeled, transfer)
    assert len(joined) == 7 and joined["labels"] == [0, 1, 0, 1, -100, -100, -100]
    assert with_transfer(labeled, None) is labeled


def test_baseline_gets_as_many_steps_as_the_distilled_student(tmp_path):
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=32,
        num_train_epochs=1,
        use_cpu=True,
        report_to="none",
    )
    # 2,000 labeled rows: 63 batches of 32; with 4,000 transfer rows, 188.
    assert optimizer_steps(2000, args) == 63 and optimizer_steps(6000, args) == 188
    task = TaskData(
        "sequence_classification", None, "accuracy", True, "", None,
        train=list(range(2000)), validation=None, test=None, collator=None, evaluate=None, transfer=list(range(4000)),
    )  # fmt: skip
    assert baseline_changes(task, args, "match") == {"max_steps": 188}
    assert baseline_changes(task, args, "epochs") == {}
    task.transfer = None
    assert baseline_changes(task, args, "match") == {}


def test_recipe_argument_errors():
    with pytest.raises(ValueError, match="baseline_steps='more'.*'match'"):
        StudentArguments(baseline_steps="more")
    with pytest.raises(ValueError, match="transfer_samples=0 must be >= 1"):
        DataArguments(transfer_samples=0)
    with pytest.raises(FileNotFoundError, match="transfer_file 'nowhere.csv' does not exist"):
        DataArguments(transfer_file="nowhere.csv")


def test_token_level_transfer_rows_are_all_minus_100_and_join_their_labeled_rows():
    blocks = Dataset.from_dict(
        {"input_ids": [[i, i + 1, i + 2] for i in range(6)], "attention_mask": [[1, 1, 1]] * 6,
         "labels": [[i, i + 1, i + 2] for i in range(6)]}
    )  # fmt: skip
    transfer = unlabeled(rows_past(blocks, 2, 3, "codegen"))
    assert transfer["input_ids"] == [[2, 3, 4], [3, 4, 5], [4, 5, 6]]
    assert transfer["labels"] == [[-100] * 3] * 3
    joined = with_transfer(blocks.select(range(2)), transfer)
    assert joined["labels"] == [[0, 1, 2], [1, 2, 3]] + [[-100] * 3] * 3
    assert rows_past(blocks, 2, None, "ner") is None
    with pytest.raises(ValueError, match="none is left; lower max_train_samples"):
        rows_past(blocks, 6, 3, "ner")
    # NER reads a transfer file too (split into words, tests/test_ner_transfer.py); the code recipe does not.
    with pytest.raises(
        ValueError,
        match="--transfer_file is read by the sentiment and NER recipes only; the codegen recipe.*--transfer_samples",
    ):
        refuse_transfer_file("more.txt", "codegen")
