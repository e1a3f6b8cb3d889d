"""Evaluation metrics that work offline: ``compute_metrics`` functions for the Trainer, perplexity, agreement.

``evaluate.load("accuracy")`` and friends fetch their scripts from the Hub and fail without it, so the
metrics here call scikit-learn and the ``seqeval`` package directly. Positions labelled ``-100`` (special
tokens, later sub-tokens, padding) never count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score

IGNORE_INDEX = -100


def _predictions_and_labels(eval_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions, label_ids)`` from an ``EvalPrediction`` or a plain pair.

    A model that returns more than logits gives a tuple of predictions; the logits come first.
    """
    predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions), np.asarray(labels)


def accuracy_f1(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for sequence classification: accuracy and macro F1.

    ``eval_pred``: logits ``(N, C)`` and labels ``(N,)``. Macro F1 weighs every class equally, so a
    model that ignores the smaller class cannot hide behind accuracy on an unbalanced set.
    """
    logits, labels = _predictions_and_labels(eval_pred)
    predictions = logits.argmax(-1)
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
    }


def seqeval_metrics(label_list: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for token classification: entity-level precision, recall and F1 (``seqeval``).

    Entities are scored whole, as in the CoNLL evaluation: a predicted entity counts only when its type
    and span both match. Logits ``(B, T, C)`` become tag names through ``label_list``; positions labelled
    -100 are left out before scoring, so only the first sub-token of each word is judged. ``accuracy`` is
    the token-level accuracy over those positions.
    """
    try:
        from seqeval.metrics import accuracy_score as seq_accuracy
        from seqeval.metrics import f1_score as seq_f1
        from seqeval.metrics import precision_score, recall_score
    except ImportError as error:
        raise ImportError(
            "the seqeval package is not installed: entity-level NER metrics are computed with it; "
            'install it with `pip install "hf_distill[ner]"` (or `pip install seqeval`).'
        ) from error
    names = list(label_list)

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits, labels = _predictions_and_labels(eval_pred)
        predictions = logits.argmax(-1)
        true_tags, predicted_tags = [], []
        for predicted_row, label_row in zip(predictions, labels):
            keep = label_row != IGNORE_INDEX
            true_tags.append([names[i] for i in label_row[keep]])
            predicted_tags.append([names[i] for i in predicted_row[keep]])
        return {
            "precision": float(precision_score(true_tags, predicted_tags, zero_division=0)),
            "recall": float(recall_score(true_tags, predicted_tags, zero_division=0)),
            "f1": float(seq_f1(true_tags, predicted_tags, zero_division=0)),
            "accuracy": float(seq_accuracy(true_tags, predicted_tags)),
        }

    return compute_metrics


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([list(row) + [value] * (width - len(row)) for row in rows], dtype=torch.long)


@torch.no_grad()
def perplexity(
    model: torch.nn.Module, dataset: Any, batch_size: int = 8, device: str | torch.device | None = None
) -> float:
    """Held-out perplexity of a causal LM: ``exp(sum of token NLL / number of predicted tokens)``.

    ``dataset`` rows hold ``input_ids`` and optionally ``attention_mask`` and ``labels`` (default: the
    input ids; -100 marks tokens not to score). Position ``t`` predicts label ``t + 1``, as in the models'
    own loss. Summing over all tokens before dividing weighs every token equally, unlike a mean of
    per-batch losses, which over-weighs short batches. The model runs in eval mode on ``device`` (default:
    where its parameters are) and its training mode is restored afterwards. Rows of different lengths are
    padded on the right (labels with -100).
    """
    if batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size} is below 1: rows are scored in batches of that size; pass batch_size >= 1."
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start : start + batch_size]
            input_ids = _pad(rows["input_ids"], 0)
            attention_mask = _pad(rows.get("attention_mask") or [[1] * len(r) for r in rows["input_ids"]], 0)
            labels = _pad(rows.get("labels") or rows["input_ids"], IGNORE_INDEX)
            labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            shifted_logits = logits[:, :-1].float()
            shifted_labels = labels[:, 1:].to(device)
            total_nll += F.cross_entropy(
                shifted_logits.reshape(-1, shifted_logits.size(-1)),
                shifted_labels.reshape(-1),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            ).item()
            total_tokens += int((shifted_labels != IGNORE_INDEX).sum())
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise ValueError(
            "no token to score: every label after the first position is -100 (or the dataset is empty), so "
            "perplexity is 0/0; check that the held-out split has rows and that labels are not all masked."
        )
    return math.exp(total_nll / total_tokens)


def agreement(
    student_logits: torch.Tensor | np.ndarray,
    teacher_logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
) -> float:
    """Fraction of positions where student and teacher pick the same class (argmax over the last dim).

    Shapes ``(N, C)`` or ``(B, T, V)``; ``labels`` (``(N,)`` or ``(B, T)``), when given, leave out the
    positions labelled -100. It says how far the student imitates the teacher, right or wrong, which task
    accuracy alone does not.
    """
    student = torch.as_tensor(student_logits)
    teacher = torch.as_tensor(teacher_logits)
    if student.shape != teacher.shape:
        raise ValueError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ in shape: "
            "agreement compares them position by position; pass logits for the same inputs and label set."
        )
    matches = student.argmax(-1) == teacher.argmax(-1)
    if labels is not None:
        keep = torch.as_tensor(labels) != IGNORE_INDEX
        if keep.shape != matches.shape:
            raise ValueError(
                f"labels {tuple(keep.shape)} do not match the logits' positions {tuple(matches.shape)}: each "
                "position needs one label; pass labels of shape logits.shape[:-1]."
            )
        matches = matches[keep]
    if matches.numel() == 0:
        raise ValueError(
            "no position to compare: the logits are empty or every label is -100, so agreement is 0/0; "
            "pass at least one unmasked position."
        )
    return matches.float().mean().item()
