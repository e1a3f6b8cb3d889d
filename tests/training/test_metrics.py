"""Tests for hf_distill.training.metrics against values worked out by hand and an independent per-token loop."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import EvalPrediction, GPT2Config, GPT2LMHeadModel

from hf_distill.training.metrics import accuracy_f1, agreement, perplexity, seqeval_metrics

X = -100
LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _one_hot(ids: list[list[int]], n_classes: int) -> np.ndarray:
    """Logits whose argmax is ``ids`` (a -100 id gets an arbitrary class, as a padded position would)."""
    ids_array = np.asarray(ids)
    logits = np.zeros((*ids_array.shape, n_classes), dtype=np.float32)
    for index in np.ndindex(ids_array.shape):
        logits[(*index, max(int(ids_array[index]), 0))] = 5.0
    return logits


def test_accuracy_f1_against_hand_values():
    labels = np.array([0, 0, 0, 1])
    predictions = [0, 0, 1, 1]
    # accuracy 3/4; class 0: P=1, R=2/3, F1=0.8; class 1: P=1/2, R=1, F1=2/3; macro = (0.8 + 2/3) / 2
    metrics = accuracy_f1(EvalPrediction(predictions=_one_hot([predictions], 2)[0], label_ids=labels))
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    # A model returning extra outputs gives a tuple whose first element is the logits.
    assert accuracy_f1(((_one_hot([predictions], 2)[0], np.zeros(4)), labels)) == metrics


def test_seqeval_metrics_entity_level_ignoring_masked_positions():
    compute = seqeval_metrics(LABELS)
    # Gold (unmasked): [B-PER I-PER O B-LOC] and [B-LOC]: 3 entities (PER 0-1, LOC 3, LOC 0).
    # Predicted:       [B-PER O     O B-LOC] and [B-PER]: PER 0-0 (wrong span), LOC 3 (right), PER 0 (wrong type).
    labels = np.array([[X, 1, 2, 0, 3, X], [X, 3, X, X, X, X]])
    predicted = [
        [4, 1, 0, 0, 3, 4],
        [0, 1, 3, 3, 3, 3],
    ]  # masked positions predict junk, which must not count
    metrics = compute(EvalPrediction(predictions=_one_hot(predicted, len(LABELS)), label_ids=labels))
    assert metrics["precision"] == pytest.approx(1 / 3)
    assert metrics["recall"] == pytest.approx(1 / 3)
    assert metrics["f1"] == pytest.approx(1 / 3)
    assert metrics["accuracy"] == pytest.approx(3 / 5)  # tokens right: B-PER, O, B-LOC of 5


def test_seqeval_metrics_without_seqeval(monkeypatch):
    monkeypatch.setitem(sys.modules, "seqeval", None)
    monkeypatch.setitem(sys.modules, "seqeval.metrics", None)
    with pytest.raises(
        ImportError, match=r"the seqeval package is not installed.*pip install \"hf_distill\[ner\]\""
    ):
        seqeval_metrics(LABELS)


@pytest.fixture(scope="module")
def tiny_lm() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=11, n_embd=16, n_layer=2, n_head=2, n_positions=16, bos_token_id=0, eos_token_id=0
        )
    )


def _naive_nll(model: GPT2LMHeadModel, input_ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Sum of -log p(label[t+1] | ids[:t+1]) token by token, with a fresh forward pass per prefix."""
    model.eval()
    total, count = 0.0, 0
    for t in range(len(input_ids) - 1):
        if labels[t + 1] == X:
            continue
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([input_ids[: t + 1]])).logits[0, -1]
        total -= torch.log_softmax(logits.double(), -1)[labels[t + 1]].item()
        count += 1
    return total, count


def test_perplexity_matches_token_by_token_computation(tiny_lm):
    rows = {
        "input_ids": [[1, 2, 3, 4, 5], [6, 7, 8], [9, 10, 1, 2]],
        "labels": [[1, 2, 3, 4, 5], [6, X, 8], [9, 10, X, X]],
    }
    nll, count = zip(*(_naive_nll(tiny_lm, ids, lab) for ids, lab in zip(rows["input_ids"], rows["labels"])))
    assert sum(count) == 4 + 1 + 1
    expected = math.exp(sum(nll) / sum(count))
    dataset = Dataset.from_dict(rows)
    tiny_lm.train()
    assert perplexity(tiny_lm, dataset, batch_size=2, device="cpu") == pytest.approx(expected, rel=1e-5)
    assert tiny_lm.training, "the model's training mode is restored"
    assert perplexity(tiny_lm, dataset, batch_size=1) == pytest.approx(expected, rel=1e-5)


def test_perplexity_without_labels_scores_every_next_token(tiny_lm):
    ids = [3, 1, 4, 1, 5, 9]
    nll, count = _naive_nll(tiny_lm, ids, ids)
    dataset = Dataset.from_dict({"input_ids": [ids], "attention_mask": [[1] * 6]})
    assert perplexity(tiny_lm, dataset) == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_perplexity_errors(tiny_lm):
    with pytest.raises(ValueError, match="no token to score: every label after the first position is -100"):
        perplexity(tiny_lm, Dataset.from_dict({"input_ids": [[1, 2]], "labels": [[1, X]]}))
    with pytest.raises(ValueError, match="batch_size=0 is below 1"):
        perplexity(tiny_lm, Dataset.from_dict({"input_ids": [[1, 2]]}), batch_size=0)


def test_agreement_hand_values_and_masking():
    student = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]])  # argmax 0, 1, 0
    teacher = torch.tensor([[[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]]])  # argmax 0, 0, 1
    assert agreement(student, teacher) == pytest.approx(1 / 3)
    assert agreement(student, teacher, labels=torch.tensor([[0, X, X]])) == pytest.approx(1.0)
    assert agreement(student.numpy()[0], teacher.numpy()[0], labels=np.array([1, 1, X])) == pytest.approx(0.5)


def test_agreement_errors():
    logits = torch.zeros(2, 3)
    with pytest.raises(
        ValueError, match=r"student logits \(2, 3\) and teacher logits \(2, 4\) differ in shape"
    ):
        agreement(logits, torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"labels \(3,\) do not match the logits' positions \(2,\)"):
        agreement(logits, logits, labels=torch.zeros(3))
    with pytest.raises(
        ValueError, match="no position to compare: the logits are empty or every label is -100"
    ):
        agreement(logits, logits, labels=torch.full((2,), X))
