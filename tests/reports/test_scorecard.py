"""The multi-seed scorecard's intervals against an independent numpy bootstrap written here, cases with a
known answer (identical models, a constant shift), hand values, the verdict's wording and the refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hf_distill.reports.scorecard import model_interval, paired_difference, stack_statistics, verdict

N_EXAMPLES, SEEDS = 300, 3
# Fixed per-example results: seed s of the distilled model is right on a different, fixed subset.
_rng = np.random.default_rng(12345)
KD_CORRECT = (_rng.random((SEEDS, N_EXAMPLES)) < 0.80).astype(float)
NO_KD_CORRECT = (_rng.random((SEEDS, N_EXAMPLES)) < 0.74).astype(float)
GOLD = _rng.integers(0, 3, (SEEDS, N_EXAMPLES)).astype(float)
KD_PREDICTED = _rng.integers(0, 3, (SEEDS, N_EXAMPLES)).astype(float)
KD_RIGHT = np.minimum(GOLD, KD_PREDICTED) * (_rng.random((SEEDS, N_EXAMPLES)) < 0.7)
NO_KD_PREDICTED = _rng.integers(0, 3, (SEEDS, N_EXAMPLES)).astype(float)
NO_KD_RIGHT = np.minimum(GOLD, NO_KD_PREDICTED) * (_rng.random((SEEDS, N_EXAMPLES)) < 0.5)


def seeds_of(**arrays: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{name: values[s] for name, values in arrays.items()} for s in range(SEEDS)]


def numpy_bootstrap(
    per_seed_metric, arrays: list[np.ndarray], n_resamples: int = 8000
) -> tuple[float, float]:
    """A plain percentile bootstrap: draw example indices with replacement, the same draw for every seed and
    every array; the statistic is the mean over seeds of ``per_seed_metric`` of the resampled arrays, each
    ``(seeds, resamples, examples)`` and summed over the last axis."""
    index = np.random.default_rng(2024).integers(0, N_EXAMPLES, (n_resamples, N_EXAMPLES))
    values = per_seed_metric(*(a[:, index] for a in arrays)).mean(axis=0)
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def entity_f1(gold, predicted, right):
    return 2 * right.sum(-1) / (gold.sum(-1) + predicted.sum(-1))


def test_accuracy_difference_matches_an_independent_bootstrap():
    kd = stack_statistics(seeds_of(correct=KD_CORRECT), "accuracy")
    no_kd = stack_statistics(seeds_of(correct=NO_KD_CORRECT), "accuracy")
    result = paired_difference(kd, no_kd, "accuracy", n_resamples=8000)
    per_seed = KD_CORRECT.mean(1) - NO_KD_CORRECT.mean(1)
    np.testing.assert_allclose(result["per_seed"], per_seed)
    assert result["difference"] == pytest.approx(per_seed.mean())
    expected = numpy_bootstrap(lambda a, b: a.mean(-1) - b.mean(-1), [KD_CORRECT, NO_KD_CORRECT])
    np.testing.assert_allclose(
        result["interval"], expected, atol=0.004
    )  # Monte Carlo error of two bootstraps
    assert result["interval"][0] < result["difference"] < result["interval"][1]


def test_entity_f1_is_recomputed_from_resampled_counts():
    names = ("gold_entities", "predicted_entities", "correct_entities")
    kd = stack_statistics(seeds_of(**dict(zip(names, (GOLD, KD_PREDICTED, KD_RIGHT)))), "f1")
    no_kd = stack_statistics(seeds_of(**dict(zip(names, (GOLD, NO_KD_PREDICTED, NO_KD_RIGHT)))), "f1")
    model = model_interval(kd, "f1", n_resamples=8000)
    expected_seeds = [entity_f1(GOLD[s], KD_PREDICTED[s], KD_RIGHT[s]) for s in range(SEEDS)]
    np.testing.assert_allclose(model["per_seed"], expected_seeds)
    expected = numpy_bootstrap(entity_f1, [GOLD, KD_PREDICTED, KD_RIGHT])
    np.testing.assert_allclose(model["interval"], expected, atol=0.004)
    difference = paired_difference(kd, no_kd, "f1", n_resamples=8000)
    expected = numpy_bootstrap(
        lambda g, p, r, q, w: entity_f1(g, p, r) - entity_f1(g, q, w),
        [GOLD, KD_PREDICTED, KD_RIGHT, NO_KD_PREDICTED, NO_KD_RIGHT],
    )
    np.testing.assert_allclose(difference["interval"], expected, atol=0.006)


def test_identical_models_differ_by_exactly_zero():
    kd = stack_statistics(seeds_of(correct=KD_CORRECT), "accuracy")
    result = paired_difference(kd, kd.copy(), "accuracy")
    assert result == {"difference": 0.0, "interval": [0.0, 0.0], "per_seed": [0.0, 0.0, 0.0]}
    assert verdict(result, "accuracy", True, 3, N_EXAMPLES) == (
        "no significant difference: +0.0 points [0.0, 0.0] (accuracy KD - no-KD, 3 seeds, 300 test examples)"
    )


def test_a_constant_shift_in_bits_per_byte_is_exactly_that_shift():
    # Every text of the distilled model costs 0.25 bits per byte less: NLL lower by 0.25 * bytes * ln 2.
    n_bytes = _rng.integers(20, 200, (SEEDS, N_EXAMPLES)).astype(float)
    nll = n_bytes * _rng.uniform(1.0, 3.0, (SEEDS, N_EXAMPLES))
    tokens = np.ceil(n_bytes / 3)
    baseline = stack_statistics(seeds_of(nll=nll, bytes=n_bytes), "bits_per_byte")
    distilled = stack_statistics(
        seeds_of(nll=nll - 0.25 * n_bytes * math.log(2), bytes=n_bytes), "bits_per_byte"
    )
    result = paired_difference(distilled, baseline, "bits_per_byte")
    np.testing.assert_allclose([result["difference"], *result["interval"]], [-0.25] * 3, rtol=1e-9)
    assert verdict(result, "bits_per_byte", False, 3, N_EXAMPLES).startswith(
        "distillation beats training alone by -0.25 [-0.25, -0.25] (bits_per_byte KD - no-KD"
    )
    # Perplexity by hand on the first seed: exp(sum NLL / sum tokens).
    ppl = stack_statistics(seeds_of(nll=nll, tokens=tokens), "perplexity")
    assert model_interval(ppl, "perplexity")["per_seed"][0] == pytest.approx(
        math.exp(nll[0].sum() / tokens[0].sum())
    )


def test_all_right_against_all_wrong_is_100_points():
    ones, zeros = np.ones((SEEDS, N_EXAMPLES)), np.zeros((SEEDS, N_EXAMPLES))
    result = paired_difference(
        stack_statistics(seeds_of(correct=zeros), "accuracy"),
        stack_statistics(seeds_of(correct=ones), "accuracy"),
        "accuracy",
    )
    assert result["difference"] == -1.0 and result["interval"] == [-1.0, -1.0]
    assert verdict(result, "accuracy", True, 3, 300) == (
        "training alone beats distillation: -100.0 points [-100.0, -100.0] "
        "(accuracy KD - no-KD, 3 seeds, 300 test examples)"
    )


@pytest.mark.parametrize(
    ("difference", "interval", "higher", "expected"),
    [
        (0.021, [0.009, 0.033], True, "distillation beats training alone by +2.1 points [0.9, 3.3]"),
        (-0.003, [-0.012, 0.006], True, "no significant difference: -0.3 points [-1.2, 0.6]"),
        (-0.021, [-0.033, -0.009], True, "training alone beats distillation: -2.1 points [-3.3, -0.9]"),
        (0.0, [0.0, 0.01], True, "no significant difference: +0.0 points [0.0, 1.0]"),  # 0 inside: no win
        (0.12, [0.05, 0.2], False, "training alone beats distillation: +0.12 [0.05, 0.2]"),  # perplexity rose
    ],
)
def test_verdict_wording(difference, interval, higher, expected):
    metric = "accuracy" if higher else "perplexity"
    line = verdict({"difference": difference, "interval": interval}, metric, higher, 1, 800)
    assert line == f"{expected} ({metric} KD - no-KD, 1 seed, 800 test examples)"


def test_a_single_seed_interval_is_over_examples_alone():
    result = model_interval(stack_statistics(seeds_of(correct=KD_CORRECT)[:1], "accuracy"), "accuracy")
    assert result["per_seed"] == [pytest.approx(KD_CORRECT[0].mean())]
    low, high = result["interval"]
    se = math.sqrt(KD_CORRECT[0].mean() * (1 - KD_CORRECT[0].mean()) / N_EXAMPLES)
    assert low == pytest.approx(result["mean"] - 1.96 * se, abs=0.01)  # normal approximation, roughly
    assert high == pytest.approx(result["mean"] + 1.96 * se, abs=0.01)


def test_refusals():
    with pytest.raises(ValueError, match="metric 'bleu' has no per-example statistics to resample"):
        stack_statistics([{"correct": np.ones(3)}], "bleu")
    with pytest.raises(ValueError, match=r"needs the per-example statistics \['correct'\] of every seed"):
        stack_statistics([{"correct": np.ones(3)}, {"right": np.ones(3)}], "accuracy")
    with pytest.raises(ValueError, match=r"the seeds' statistics hold \[3, 4\] examples"):
        stack_statistics([{"correct": np.ones(3)}, {"correct": np.ones(4)}], "accuracy")
    with pytest.raises(ValueError, match="hold NaN or infinite values"):
        stack_statistics([{"nll": np.array([1.0, np.inf]), "bytes": np.ones(2)}], "bits_per_byte")
    one = stack_statistics([{"correct": np.ones(3)}], "accuracy")
    two = stack_statistics([{"correct": np.ones(3)}] * 2, "accuracy")
    with pytest.raises(ValueError, match=r"differ in shape \(seeds, statistics, examples\)"):
        paired_difference(one, two, "accuracy")
