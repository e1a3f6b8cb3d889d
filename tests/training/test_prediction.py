"""Predictions come back in the dataset's order under every sampling strategy: transformers 5 draws evaluation
batches by length too when the training arguments group by length, seeded with ``args.seed``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

from hf_distill.training.prediction import in_order_args, predict_in_order
from tests.helpers.tiny_models import make_wordpiece_tokenizer, tiny_bert_classifier


def _rows(n: int = 40) -> Dataset:
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 30, size=n)
    return Dataset.from_dict(
        {
            "input_ids": [rng.integers(5, 80, size=int(k)).tolist() for k in lengths],
            "labels": rng.integers(0, 3, size=n).tolist(),
        }
    )


def _args(tmp_path, seed: int, strategy: str = "group_by_length") -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(tmp_path),
        per_device_eval_batch_size=4,
        train_sampling_strategy=strategy,
        seed=seed,
        report_to=[],
        use_cpu=True,
    )


def _row_by_row(model, rows: Dataset) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(input_ids=torch.tensor([r["input_ids"]])).logits.numpy() for r in rows])


@pytest.mark.parametrize("seed", [1, 2])
def test_predictions_and_labels_follow_the_dataset_under_group_by_length(tmp_path, seed):
    model, rows = tiny_bert_classifier().eval(), _rows()
    collator = DataCollatorWithPadding(make_wordpiece_tokenizer())
    output = predict_in_order(model, _args(tmp_path, seed), rows, collator)
    assert output.label_ids.tolist() == rows["labels"]
    np.testing.assert_allclose(output.predictions, _row_by_row(model, rows), atol=1e-5)


def test_the_plain_trainer_permutes_them_which_is_why_the_scorers_do_not_use_it(tmp_path):
    model, rows = tiny_bert_classifier().eval(), _rows()
    collator = DataCollatorWithPadding(make_wordpiece_tokenizer())
    orders = [
        Trainer(model=model, args=_args(tmp_path, seed), data_collator=collator)
        .predict(rows)
        .label_ids.tolist()
        for seed in (1, 2)
    ]
    assert orders[0] != rows["labels"] or orders[1] != rows["labels"], (
        "transformers now keeps the evaluation order under group_by_length: predict_in_order may be unneeded"
    )
    assert sorted(orders[0]) == sorted(rows["labels"])


def test_in_order_args_copies_only_arguments_that_group_by_length(tmp_path):
    grouped = _args(tmp_path, 3)
    copied = in_order_args(grouped)
    assert copied is not grouped and copied.train_sampling_strategy == "sequential"
    assert grouped.train_sampling_strategy == "group_by_length", (
        "the caller's arguments are left as they were"
    )
    assert (copied.seed, copied.per_device_eval_batch_size) == (3, 4)
    random = _args(tmp_path, 3, strategy="random")
    assert in_order_args(random) is random
