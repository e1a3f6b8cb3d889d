"""The package's ``evaluate`` modules, loaded by path as ``evaluate.load`` does offline, against scikit-learn,
seqeval and hand computations on fixed inputs; the per-example statistics the scorecard resamples give the
same corpus metrics as the modules."""

from __future__ import annotations

import math
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from datasets import Dataset
from seqeval.metrics import f1_score as seqeval_f1
from seqeval.metrics import precision_score as seqeval_precision
from seqeval.metrics import recall_score as seqeval_recall
from sklearn.metrics import accuracy_score, f1_score
from transformers import GPT2Config, GPT2LMHeadModel

import hf_distill
from hf_distill.training.metrics import (
    CORPUS_METRICS,
    EVALUATE_METRICS_DIR,
    LOCAL_METRICS,
    entity_scores,
    language_model_scores,
    load_metric,
)
from tests.helpers.paths import REPO

LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC"], ["O", "O"], ["B-PER", "O", "B-PER"]]
PREDICTED = [["B-PER", "O", "O", "B-LOC"], ["B-PER"], ["O", "B-LOC"], ["B-PER", "O", "B-PER"]]


def load_by_path(name: str):
    return evaluate.load(str(EVALUATE_METRICS_DIR / name))


def test_every_local_metric_is_a_folder_with_its_script():
    for name in LOCAL_METRICS:
        assert (EVALUATE_METRICS_DIR / name / f"{name}.py").is_file()


def test_accuracy_f1_module_equals_scikit_learn_and_hand_values():
    references = [0, 0, 0, 1, 2, 2]
    predictions = [0, 0, 1, 1, 2, 0]
    result = load_by_path("accuracy_f1").compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))
    assert result["f1"] == pytest.approx(f1_score(references, predictions, average="macro"))
    # By hand: 4 of 6 right; class 0 P=2/3 R=2/3, class 1 P=1/2 R=1, class 2 P=1 R=1/2.
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["f1"] == pytest.approx((2 / 3 + 2 / 3 + 2 / 3) / 3)


def test_seqeval_module_equals_seqeval_and_hand_values():
    result = load_by_path("seqeval_entities").compute(predictions=PREDICTED, references=GOLD)
    assert result["precision"] == pytest.approx(seqeval_precision(GOLD, PREDICTED))
    assert result["recall"] == pytest.approx(seqeval_recall(GOLD, PREDICTED))
    assert result["f1"] == pytest.approx(seqeval_f1(GOLD, PREDICTED))
    # By hand: gold PER 0-1, LOC 3, LOC 0, PER 0, PER 2 (5); predicted PER 0, LOC 3, PER 0 (s2), LOC 1 (s3),
    # PER 0, PER 2 (6); right: LOC 3, PER 0 and PER 2 of the last sentence (3).
    assert result["precision"] == pytest.approx(3 / 6)
    assert result["recall"] == pytest.approx(3 / 5)
    assert result["f1"] == pytest.approx(2 * 3 / (5 + 6))


def test_entity_counts_recompute_seqeval_f1():
    ids = [[LABELS.index(t) for t in row] + [-100] * (4 - len(row)) for row in GOLD]
    logits = np.zeros((len(GOLD), 4, len(LABELS)), dtype=np.float32)
    for i, row in enumerate(PREDICTED):
        for j, tag in enumerate(row):
            logits[i, j, LABELS.index(tag)] = 1.0
    scores = entity_scores(LABELS)((logits, np.asarray(ids)))
    names, corpus_f1 = CORPUS_METRICS["f1"]
    counts = [scores.statistics[name] for name in names]
    np.testing.assert_array_equal(counts[0], [2, 1, 0, 2])  # gold entities per sentence
    np.testing.assert_array_equal(counts[1], [2, 1, 1, 2])  # predicted
    np.testing.assert_array_equal(counts[2], [1, 0, 0, 2])  # right
    assert float(corpus_f1(*counts)) == pytest.approx(seqeval_f1(GOLD, PREDICTED))
    assert scores.metrics["f1"] == pytest.approx(seqeval_f1(GOLD, PREDICTED))


def test_bits_per_byte_module_against_hand_values():
    nll, tokens, n_bytes = [2.0, 4.0, 0.5], [2, 3, 1], [5, 10, 1]
    result = load_by_path("bits_per_byte").compute(nll=nll, tokens=tokens, bytes=n_bytes)
    assert result["bits_per_byte"] == pytest.approx(6.5 / 16 / math.log(2))
    assert result["perplexity"] == pytest.approx(math.exp(6.5 / 6))
    assert (result["tokens"], result["bytes"]) == (6, 16)


def test_load_metric_serves_the_local_module_once():
    first = load_metric("accuracy_f1")
    assert first is load_metric("accuracy_f1")
    assert first.compute(predictions=[1, 0], references=[1, 1])["accuracy"] == pytest.approx(0.5)


class _ByteTokenizer:
    """Each token id is one ASCII byte: decoding gives as many bytes as ids, so bytes are checkable by hand."""

    def decode(self, ids, clean_up_tokenization_spaces=False):
        return bytes(ids).decode("ascii")


def test_language_model_scores_against_a_per_token_loop():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=97, n_embd=16, n_layer=1, n_head=2, n_positions=16)).eval()
    rows = [[65, 66, 67, 68, 69], [70, 71, 72], [73, 74, 75, 76]]
    scores = language_model_scores(model, Dataset.from_dict({"input_ids": rows}), _ByteTokenizer(), 2)
    nll = []
    with torch.no_grad():
        for row in rows:
            log_probs = model(torch.tensor([row])).logits[0].log_softmax(-1)
            nll.append(-sum(log_probs[t, row[t + 1]].item() for t in range(len(row) - 1)))
    np.testing.assert_allclose(scores.statistics["nll"], nll, rtol=1e-5)
    np.testing.assert_array_equal(scores.statistics["tokens"], [4, 2, 3])
    np.testing.assert_array_equal(scores.statistics["bytes"], [4, 2, 3])  # ASCII ids: one byte each
    assert scores.metrics["bits_per_byte"] == pytest.approx(sum(nll) / 9 / math.log(2), rel=1e-5)
    assert scores.metrics["perplexity"] == pytest.approx(math.exp(sum(nll) / 9), rel=1e-5)


def test_an_installed_wheel_carries_the_modules():
    # The scripts sit in folders without __init__.py, so only package-data puts them into a wheel.
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["hf_distill"]
    package = Path(hf_distill.__file__).resolve().parent
    shipped = {path for pattern in patterns for path in package.glob(pattern)}
    assert {EVALUATE_METRICS_DIR / name / f"{name}.py" for name in LOCAL_METRICS} <= shipped
