"""Predictions in the dataset's order, whatever the training arguments' sampling strategy.

Under ``train_sampling_strategy="group_by_length"`` transformers 5 draws evaluation batches through a
``LengthGroupedSampler`` too, seeded with ``args.seed`` (``Trainer._get_eval_sampler``): ``Trainer.predict`` then
returns predictions and label ids permuted, in an order that changes with the seed. Corpus metrics do not
notice; anything that pairs rows by position does: per-example statistics paired across models scored under
other seeds (the scorecard's seeds, the teacher, the exported graphs), and window rows regrouped into sentences.
:func:`predict_in_order` scores with the strategy set to ``"sequential"``, which only the training batches
read, so the rows come back in the dataset's order (across processes, as ``Trainer.predict`` gathers them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PredictionOutput

ORDER_CHANGING_STRATEGIES = ("group_by_length",)


def in_order_args(args: TrainingArguments) -> TrainingArguments:
    """``args`` whose evaluation batches follow the dataset's order: a copy with the sequential sampling
    strategy when ``args`` groups by length (``args`` itself otherwise)."""
    if getattr(args, "train_sampling_strategy", None) not in ORDER_CHANGING_STRATEGIES:
        return args
    return dataclasses.replace(args, train_sampling_strategy="sequential")


def predict_in_order(
    model: nn.Module, args: TrainingArguments, dataset: Any, data_collator: Callable | None = None
) -> PredictionOutput:
    """``Trainer.predict`` of ``model`` on ``dataset`` with ``args``, row ``i`` of the predictions and label ids
    being the dataset's row ``i``.

    Args:
        model (nn.Module): the model to score (a PyTorch model, or anything called like one).
        args (TrainingArguments): the arguments scoring runs with (batch size, device, precision).
        dataset (Any): the rows to score.
        data_collator (Callable | None): batches the rows, as the Trainer's own.

    Returns:
        PredictionOutput: ``predictions``, ``label_ids`` and ``metrics``, in the dataset's order.
    """
    trainer = Trainer(model=model, args=in_order_args(args), data_collator=data_collator)
    return trainer.predict(dataset)
