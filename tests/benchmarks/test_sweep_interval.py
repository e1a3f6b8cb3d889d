"""The paired interval of benchmarks/sweep_sentiment.py against an independent computation on fixed numbers."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.helpers.paths import BENCHMARKS

SCRIPT = BENCHMARKS / "sweep_sentiment.py"


@pytest.fixture(scope="module")
def sweep():
    spec = importlib.util.spec_from_file_location("sweep_sentiment", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paired_interval_against_hand_computation_and_numpy_bootstrap(sweep):
    # 2 seeds x 8 test examples: 1 = correct. Per example, distilled - no-KD averaged over seeds:
    # seed 1: (1, 0, 1, 0, 0, 0, 1, 0), seed 2: (1, 0, 0, 0, 0, 0, 1, 0) -> (1, 0, 0.5, 0, 0, 0, 1, 0),
    # mean 2.5 / 8 = 31.25 points.
    kd = np.array([[1, 1, 1, 0, 1, 1, 1, 0], [1, 1, 0, 1, 0, 1, 1, 0]], dtype=bool)
    base = np.array([[0, 1, 0, 0, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1, 0, 0]], dtype=bool)
    result = sweep.paired_interval(kd, base)
    assert result["mean"] == pytest.approx(31.25)
    # Independent percentile bootstrap over examples with numpy's own generator.
    per_example = np.array([1, 0, 0.5, 0, 0, 0, 1, 0])
    rng = np.random.default_rng(123)
    means = per_example[rng.integers(0, 8, size=(200_000, 8))].mean(axis=1) * 100
    low, high = np.percentile(means, [2.5, 97.5])
    assert result["low"] == pytest.approx(low, abs=1.6) and result["high"] == pytest.approx(high, abs=1.6)
    assert result["low"] < result["mean"] < result["high"]


def test_paired_interval_of_identical_models_is_zero(sweep):
    hits = np.array([[1, 0, 1, 1], [0, 0, 1, 1]], dtype=bool)
    result = sweep.paired_interval(hits, hits.copy())
    assert result == {"mean": 0.0, "low": 0.0, "high": 0.0}
