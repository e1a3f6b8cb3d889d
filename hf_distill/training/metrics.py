"""Evaluation metrics that work offline: ``compute_metrics`` functions for the Trainer, perplexity, agreement.

The metrics are ``evaluate`` modules shipped in the package (``hf_distill/evaluate_metrics/<name>/``) and
loaded by path with :func:`load_metric`, so they work without the Hub: ``accuracy_f1`` (scikit-learn),
``seqeval_entities`` (``seqeval``) and ``bits_per_byte`` (bits per byte and perplexity from per-text sums).
Online, :func:`load_metric` also takes any Hub name; :data:`HUB_EQUIVALENTS` says which Hub module computes
the same numbers as each local one.

Each task's scoring keeps per-example statistics beside the metrics (:class:`ExampleScores`), from which the
corpus metric is recomputed on any resample of the test examples (:data:`CORPUS_METRICS`): the correct
predictions for accuracy, each sentence's gold / predicted / correct entity counts for entity F1, each text's
NLL, tokens and bytes for bits per byte and perplexity. Positions labelled ``-100`` (special tokens, later
sub-tokens, padding) never count.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hf_distill.losses.divergences import IGNORE_INDEX
from hf_distill.training.padding import pad_rows

EVALUATE_METRICS_DIR = Path(__file__).resolve().parent / "evaluate_metrics"
LOCAL_METRICS = ("accuracy_f1", "seqeval_entities", "bits_per_byte")
# The Hub's evaluate modules that give the same numbers as each local one (when the Hub can be reached).
HUB_EQUIVALENTS = {
    "accuracy_f1": ("accuracy", "f1 (average='macro')"),
    "seqeval_entities": ("seqeval",),
    "bits_per_byte": ("perplexity (perplexity only; it runs a Hub model itself)",),
}


@functools.cache
def load_metric(name: str) -> Any:
    """The ``evaluate`` module ``name``: one shipped in the package (:data:`LOCAL_METRICS`, loaded by path, so
    offline) or else whatever ``evaluate.load(name)`` finds (a Hub name such as ``"accuracy"`` or a path)."""
    import evaluate

    if name in LOCAL_METRICS:
        return evaluate.load(str(EVALUATE_METRICS_DIR / name))
    return evaluate.load(name)


@dataclass
class ExampleScores:
    """A model's metrics on a split and the per-example statistics they are recomputed from.

    ``statistics`` maps each name of the task's entry in :data:`CORPUS_METRICS` to an array with one value per
    test example, in the split's order (so two models' arrays pair example by example).
    """

    metrics: dict[str, float]
    statistics: dict[str, np.ndarray]


def corpus_accuracy(correct: np.ndarray, axis: int = -1) -> np.ndarray:
    """Share of correct predictions along ``axis`` (``correct`` holds 0/1 per example)."""
    return np.mean(correct, axis=axis)


def corpus_entity_f1(
    gold: np.ndarray, predicted: np.ndarray, correct: np.ndarray, axis: int = -1
) -> np.ndarray:
    """Micro entity F1 from per-sentence counts, summed along ``axis`` first:
    ``2 * correct / (gold + predicted)`` (= 2PR / (P + R)); 0 when neither side has an entity, as seqeval."""
    total = np.sum(gold, axis=axis) + np.sum(predicted, axis=axis)
    doubled = 2.0 * np.sum(correct, axis=axis)
    return np.divide(doubled, total, out=np.zeros_like(doubled, dtype=float), where=total > 0)


def corpus_bits_per_byte(nll: Any, n_bytes: Any, axis: int = -1) -> np.ndarray:
    """``sum(nll) / sum(bytes) / ln 2`` along ``axis``: NLL in nats of the predicted tokens, bytes they cover."""
    return np.sum(np.asarray(nll, dtype=float), axis=axis) / np.sum(n_bytes, axis=axis) / math.log(2)


def corpus_perplexity(nll: Any, tokens: Any, axis: int = -1) -> np.ndarray:
    """``exp(sum(nll) / sum(tokens))`` along ``axis``: every token weighs the same."""
    return np.exp(np.sum(np.asarray(nll, dtype=float), axis=axis) / np.sum(tokens, axis=axis))


# For each task metric: the per-example statistics it needs, in order, and the function of them.
CORPUS_METRICS: dict[str, tuple[tuple[str, ...], Callable[..., np.ndarray]]] = {
    "accuracy": (("correct",), corpus_accuracy),
    "f1": (("gold_entities", "predicted_entities", "correct_entities"), corpus_entity_f1),
    "bits_per_byte": (("nll", "bytes"), corpus_bits_per_byte),
    "perplexity": (("nll", "tokens"), corpus_perplexity),
}


def _predictions_and_labels(eval_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions, label_ids)`` from an ``EvalPrediction`` or a plain pair.

    A model that returns more than logits gives a tuple of predictions; the logits come first.
    """
    predictions, labels = eval_pred[0], eval_pred[1]
    if isinstance(predictions, (tuple, list)):
        predictions = predictions[0]
    return np.asarray(predictions), np.asarray(labels)


def classification_scores(eval_pred: Any) -> ExampleScores:
    """Accuracy and macro F1 (the ``accuracy_f1`` module) of logits ``(N, C)`` against labels ``(N,)``, with
    each example's ``correct`` (0/1) kept for resampling."""
    logits, labels = _predictions_and_labels(eval_pred)
    predictions = logits.argmax(-1)
    metrics = load_metric("accuracy_f1").compute(predictions=predictions, references=labels)
    return ExampleScores(metrics, {"correct": (predictions == labels).astype(float)})


def accuracy_f1(eval_pred: Any) -> dict[str, float]:
    """``compute_metrics`` for sequence classification: accuracy and macro F1.

    Macro F1 weighs every class equally, so a model that ignores the smaller class cannot hide behind accuracy
    on an unbalanced set.

    Args:
        eval_pred (EvalPrediction | tuple): logits ``(N, C)`` and labels ``(N,)``, as the Trainer passes them;
            when the predictions are a tuple, its first element is taken as the logits.

    Returns:
        dict[str, float]: ``{"accuracy", "f1"}``, the share of argmax predictions equal to their label and
        the unweighted mean of the per-class F1.
    """
    return classification_scores(eval_pred).metrics


def entity_scores(label_list: Sequence[str]) -> Callable[[Any], ExampleScores]:
    """Entity-level precision, recall and F1 (the ``seqeval_entities`` module) of token logits, with each
    sentence's gold, predicted and correct entity counts kept for resampling.

    Entities are scored whole, as in the CoNLL evaluation: a predicted entity counts only when its type
    and span both match. Logits ``(B, T, C)`` become tag names through ``label_list``; positions labelled
    -100 are left out before scoring, so only the first sub-token of each word is judged. ``accuracy`` is
    the token-level accuracy over those positions.
    """
    try:
        from seqeval.metrics import sequence_labeling
    except ImportError as error:
        raise ImportError(
            "the seqeval package is not installed: entity-level NER metrics are computed with it; "
            'install it with `pip install "hf_distill[ner]"` (or `pip install seqeval`).'
        ) from error
    names = list(label_list)

    def score(eval_pred: Any) -> ExampleScores:
        logits, labels = _predictions_and_labels(eval_pred)
        predictions = logits.argmax(-1)
        true_tags, predicted_tags = [], []
        for predicted_row, label_row in zip(predictions, labels):
            keep = label_row != IGNORE_INDEX
            true_tags.append([names[i] for i in label_row[keep]])
            predicted_tags.append([names[i] for i in predicted_row[keep]])
        metrics = load_metric("seqeval_entities").compute(predictions=predicted_tags, references=true_tags)
        counts = np.zeros((3, len(true_tags)))
        for index, (gold, predicted) in enumerate(zip(true_tags, predicted_tags)):
            gold_entities, predicted_entities = (
                set(sequence_labeling.get_entities(gold)),
                set(sequence_labeling.get_entities(predicted)),
            )
            counts[:, index] = (
                len(gold_entities),
                len(predicted_entities),
                len(gold_entities & predicted_entities),
            )
        statistics = dict(zip(CORPUS_METRICS["f1"][0], counts))
        return ExampleScores(metrics, statistics)

    return score


def seqeval_metrics(label_list: Sequence[str]) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` for token classification: the metrics of :func:`entity_scores`.

    Entities are scored whole (type and span must both match), as in the CoNLL evaluation, and only the
    positions not labelled -100 are judged, so later sub-tokens and special tokens never count.

    Args:
        label_list (Sequence[str]): the tag names in label-id order (e.g. ``["O", "B-PER", "I-PER", ...]``);
            they turn the argmax of the logits and the label ids into tags.

    Returns:
        Callable[[EvalPrediction], dict[str, float]]: a function of logits ``(B, T, C)`` and labels ``(B, T)``
        that returns ``{"precision", "recall", "f1", "accuracy"}`` (entity-level micro precision, recall and
        F1; token accuracy).

    Raises:
        ImportError: ``seqeval`` is not installed (the ``ner`` extra).
    """
    score = entity_scores(label_list)
    return lambda eval_pred: score(eval_pred).metrics


@torch.no_grad()
def text_nll(
    model: torch.nn.Module,
    dataset: Any,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    tokenizer: Any = None,
) -> dict[str, np.ndarray]:
    """Each row's summed token NLL (nats) under a causal LM, its number of predicted tokens and, given the
    ``tokenizer``, the UTF-8 bytes of those tokens: ``{"nll", "tokens"[, "bytes"]}``, one value per row.

    ``dataset`` rows hold ``input_ids`` and optionally ``attention_mask`` and ``labels`` (default: the
    input ids; -100 marks tokens not to score). Position ``t`` predicts label ``t + 1``, as in the models'
    own loss. The bytes are those of the predicted tokens decoded without clean-up (exact for byte-level BPE
    tokenizers such as GPT-2's and SmolLM2's). The model runs in eval mode on ``device`` (default: where its
    parameters are) and its training mode is restored afterwards. Rows of different lengths are padded on
    the right (labels with -100).
    """
    if batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size} is below 1: rows are scored in batches of that size; pass batch_size >= 1."
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    nll, tokens, n_bytes = [], [], []
    try:
        for start in range(0, len(dataset), batch_size):
            rows = dataset[start : start + batch_size]
            input_ids = pad_rows(rows["input_ids"], 0)
            attention_mask = pad_rows(
                rows.get("attention_mask") or [[1] * len(r) for r in rows["input_ids"]], 0
            )
            labels = pad_rows(rows.get("labels") or rows["input_ids"], IGNORE_INDEX)
            labels = labels.masked_fill(attention_mask == 0, IGNORE_INDEX)
            logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
            shifted_labels = labels[:, 1:]
            token_nll = F.cross_entropy(
                logits[:, :-1].float().transpose(1, 2),
                shifted_labels.to(device),
                ignore_index=IGNORE_INDEX,
                reduction="none",
            )
            nll += token_nll.sum(-1).double().tolist()
            scored = shifted_labels != IGNORE_INDEX
            tokens += scored.sum(-1).tolist()
            if tokenizer is not None:
                n_bytes += [
                    len(tokenizer.decode(row[keep].tolist(), clean_up_tokenization_spaces=False).encode())
                    for row, keep in zip(shifted_labels, scored)
                ]
    finally:
        model.train(was_training)
    result = {"nll": np.asarray(nll, dtype=float), "tokens": np.asarray(tokens, dtype=float)}
    if tokenizer is not None:
        result["bytes"] = np.asarray(n_bytes, dtype=float)
    return result


def perplexity(
    model: torch.nn.Module, dataset: Any, batch_size: int = 8, device: str | torch.device | None = None
) -> float:
    """Held-out perplexity of a causal LM: ``exp(sum of token NLL / number of predicted tokens)``.

    Summing over all tokens before dividing weighs every token equally, unlike a mean of per-batch losses,
    which over-weighs short batches.

    Args:
        model (torch.nn.Module): a causal LM whose output has ``.logits``; it runs in eval mode without
            gradients and its training mode is restored afterwards.
        dataset (Dataset | Sequence[dict]): rows with ``input_ids`` and optionally ``attention_mask`` and
            ``labels`` (default: the input ids; -100 marks tokens not to score), as :func:`text_nll` reads
            them. Position ``t`` predicts token ``t + 1``.
        batch_size (int): rows per forward pass (padded on the right within a batch). Default 8.
        device (str | torch.device | None): where the batches go; None uses the device of the model's
            parameters.

    Returns:
        float: the perplexity over every scored token of the dataset.

    Raises:
        ValueError: ``batch_size`` below 1, or no token to score (an empty dataset or all labels -100).
    """
    sums = text_nll(model, dataset, batch_size, device)
    if sums["tokens"].sum() == 0:
        raise ValueError(
            "no token to score: every label after the first position is -100 (or the dataset is empty), so "
            "perplexity is 0/0; check that the held-out split has rows and that labels are not all masked."
        )
    return float(corpus_perplexity(sums["nll"], sums["tokens"]))


def language_model_scores(
    model: torch.nn.Module, dataset: Any, tokenizer: Any, batch_size: int = 8
) -> ExampleScores:
    """Bits per byte and perplexity (the ``bits_per_byte`` module) of a causal LM on ``dataset``, with each
    row's NLL, tokens and bytes kept for resampling (:func:`text_nll`)."""
    return scores_from_nll(text_nll(model, dataset, batch_size, tokenizer=tokenizer))


def scores_from_nll(sums: dict[str, np.ndarray]) -> ExampleScores:
    """Bits per byte and perplexity from each row's ``{"nll", "tokens", "bytes"}`` (:func:`text_nll`'s shape, or
    a served teacher's prompt log-probabilities), the rows kept for resampling.

    Raises:
        ValueError: no byte to score.
    """
    if sums["bytes"].sum() == 0:
        raise ValueError(
            "no byte to score: no row has a predicted token (the dataset is empty or its labels are all "
            "-100), so bits per byte is 0/0; check that the held-out split has rows."
        )
    metrics = load_metric("bits_per_byte").compute(
        nll=sums["nll"], tokens=sums["tokens"], bytes=sums["bytes"]
    )
    return ExampleScores(metrics, sums)


def agreement(
    student_logits: torch.Tensor | np.ndarray,
    teacher_logits: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray | None = None,
) -> float:
    """Fraction of positions where student and teacher pick the same class (argmax over the last dim).

    It says how far the student imitates the teacher, right or wrong, which task accuracy alone does not.

    Args:
        student_logits (Tensor | np.ndarray): ``(N, C)`` or ``(B, T, V)``.
        teacher_logits (Tensor | np.ndarray): same shape as ``student_logits``.
        labels (Tensor | np.ndarray | None): ``(N,)`` or ``(B, T)`` (``logits.shape[:-1]``); positions
            labelled -100 are left out. None compares every position.

    Returns:
        float: the share in ``[0, 1]`` of compared positions whose argmaxes agree.

    Raises:
        ValueError: the two logits differ in shape, ``labels`` do not match their positions, or no position
            is left to compare.
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
