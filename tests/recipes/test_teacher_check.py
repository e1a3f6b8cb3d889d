"""The teacher checked against the student trained alone, on validation data: the verdict on fixed numbers,
that only the validation split is scored, and how the report and the card say it. The end-to-end run with a
teacher that is worse than the baseline is in tests/recipes/test_run.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hf_distill.recipes.teacher_check import (
    NOT_CHECKED,
    TEACHER_BETTER,
    TEACHER_NOT_BETTER,
    TEACHER_NOT_CLEARLY_BETTER,
    check_teacher_worth,
    teacher_verdict,
    warn_teacher_check,
)
from hf_distill.reports.format import report_notes


def test_a_teacher_above_the_baseline_is_better():
    check = teacher_verdict(0.80, {"s_no_kd": 0.75}, metric_name="accuracy", higher_is_better=True)
    assert check["verdict"] == TEACHER_BETTER and check["split"] == "validation"
    assert check["teacher_metric"] == 0.80 and check["baselines"] == {"s_no_kd": 0.75}
    assert "WARNING" not in check["message"] and "0.8" in check["message"]


@pytest.mark.parametrize("baseline", [0.75, 0.70])  # above the teacher, and a tie (a tie is not better)
def test_a_teacher_not_above_the_baseline_is_flagged(baseline):
    check = teacher_verdict(0.70, {"s_no_kd": baseline}, metric_name="f1", higher_is_better=True)
    assert check["verdict"] == TEACHER_NOT_BETTER
    assert check["message"].startswith("WARNING: the teacher is not better than the student trained alone")
    assert (
        f"s_no_kd {baseline:.4g}" in check["message"]
        and "train the teacher longer" in check["message"].lower()
    )


def test_lower_is_better_and_several_baselines():
    # Perplexity: the teacher at 12 beats baselines at 700 and 11,800.
    good = teacher_verdict(12.0, {"a": 700.0, "b": 11800.0}, metric_name="perplexity", higher_is_better=False)
    assert good["verdict"] == TEACHER_BETTER
    # One baseline below the teacher's perplexity is enough to flag it, and it is the one named.
    bad = teacher_verdict(800.0, {"a": 700.0, "b": 11800.0}, metric_name="perplexity", higher_is_better=False)
    assert (
        bad["verdict"] == TEACHER_NOT_BETTER
        and "a 700" in bad["message"]
        and "b 1.18e+04" not in bad["message"]
    )


def test_no_baseline_or_a_non_finite_metric_is_not_checked_and_says_why():
    alone = teacher_verdict(0.8, {}, metric_name="f1", higher_is_better=True)
    assert alone["verdict"] == NOT_CHECKED and "run_baseline is off" in alone["message"]
    broken = teacher_verdict(float("nan"), {"s": 0.5}, metric_name="f1", higher_is_better=True)
    assert broken["verdict"] == NOT_CHECKED and "teacher is not finite" in broken["message"]


def _task(validation):
    scored = []

    def evaluate(model, dataset, args):
        scored.append((model, dataset))
        return {"f1": {"teacher": 0.3, "baseline": 0.4}[model]}

    task = SimpleNamespace(
        validation=validation, test="TEST", evaluate=evaluate, metric_name="f1", higher_is_better=True
    )
    return task, scored


def test_the_check_scores_the_validation_split_only():
    task, scored = _task(validation=["row"] * 3)
    check = check_teacher_worth("teacher", {"s_no_kd": "baseline"}, task, training_args=None)
    assert [dataset for _, dataset in scored] == [task.validation, task.validation]
    assert check["verdict"] == TEACHER_NOT_BETTER and check["teacher_metric"] == 0.3
    assert check["baselines"] == {"s_no_kd": 0.4}


def test_without_a_validation_split_or_baseline_nothing_is_scored():
    task, scored = _task(validation=None)
    check = check_teacher_worth("teacher", {"s_no_kd": "baseline"}, task, training_args=None)
    assert check["verdict"] == NOT_CHECKED and "no validation split" in check["message"] and not scored
    task, scored = _task(validation=["row"])
    assert check_teacher_worth("teacher", {}, task, None)["verdict"] == NOT_CHECKED and not scored


def test_the_report_prints_the_check_under_the_table():
    check = teacher_verdict(0.5, {"s": 0.6}, metric_name="accuracy", higher_is_better=True)
    assert report_notes({"teacher_check": check}) == [check["message"]]
    assert report_notes({}) == []


def test_report_md_html_and_card_carry_the_check_and_the_latency_note(tmp_path):
    import json

    from hf_distill.hub.card import render_model_card
    from hf_distill.reports.report import make_report
    from tests.helpers.run_reports import make_run_report

    report = make_run_report()
    report["teacher_check"] = teacher_verdict(0.5, {"s": 0.6}, metric_name="accuracy", higher_is_better=True)
    report["latency_measurement"] = {"rounds": 5, "threads": 2, "device": "cpu", "cores": 2, "cpu_busy": True}
    for entry in [report["teacher"], *report["students"]]:  # the latency plot draws quartile whiskers
        entry["latency"] = {
            f"b{size}": {
                "q25_ms": 0.9 * entry[f"latency_ms_b{size}"],
                "q75_ms": 1.2 * entry[f"latency_ms_b{size}"],
            }
            for size in (1, 32)
        }
    (tmp_path / "report.json").write_text(json.dumps(report), encoding="utf-8")
    written = make_report(tmp_path)
    assert written["latency"].is_file()
    for kind in ("md", "html"):
        text = written[kind].read_text(encoding="utf-8")
        assert "the teacher is not better than the student trained alone" in text
        assert "re-time on a quiet machine" in text
    card = render_model_card(report, report["students"][0]["name"])
    assert report["teacher_check"]["message"] in card


# ---- the margin's interval ----------------------------------------------------------------------------------


def _scored_task(correct: dict[str, list[int]]):
    """A task whose models are named by strings and score the validation examples ``correct[name]`` (0/1)."""
    import numpy as np

    from hf_distill.training.metrics import ExampleScores

    def score_examples(model, dataset, args):
        assert dataset == "VALIDATION", "only the validation split is scored"
        hits = np.asarray(correct[model], dtype=float)
        return ExampleScores({"accuracy": float(hits.mean())}, {"correct": hits})

    def evaluate(model, dataset, args):
        raise AssertionError("with per-example scores, the check resamples them")

    return SimpleNamespace(
        validation="VALIDATION",
        test="TEST",
        evaluate=evaluate,
        score_examples=score_examples,
        metric_name="accuracy",
        higher_is_better=True,
    )


def test_a_clear_margin_says_beats_with_its_interval():
    # 100 validation examples: the teacher gets 90 right, the baseline 60, and every baseline hit is a teacher hit.
    teacher = [1] * 90 + [0] * 10
    baseline = [1] * 60 + [0] * 40
    task = _scored_task({"teacher": teacher, "baseline": baseline})
    check = check_teacher_worth("teacher", {"s_no_kd": "baseline"}, task, training_args=None)
    assert check["verdict"] == TEACHER_BETTER
    margin = check["margins"]["s_no_kd"]
    assert margin["difference"] == pytest.approx(0.30) and margin["validation_examples"] == 100
    low, high = margin["interval"]
    # 30 discordant pairs all in the teacher's favour: the margin is 0.3 * (share of them drawn); the
    # binomial's 95% range over 100 draws keeps it far from 0.
    assert 0.18 < low < 0.30 < high < 0.42
    assert check["message"].startswith(
        "The teacher beats the student trained alone on the validation split by +30.0 points ["
    )
    assert (
        f"[{100 * low:.1f}, {100 * high:.1f}] (teacher - s_no_kd, 100 validation examples)"
        in check["message"]
    )


def test_a_margin_within_noise_says_the_teacher_is_not_clearly_better(caplog):
    # Ahead by 1 example of 50 (as the Japanese NER check: 0.2905 against 0.283): noise.
    teacher = [1] * 15 + [0] * 35
    baseline = [1] * 14 + [0] * 36
    task = _scored_task({"teacher": teacher, "baseline": baseline})
    check = check_teacher_worth("teacher", {"s_no_kd": "baseline"}, task, training_args=None)
    assert check["verdict"] == TEACHER_NOT_CLEARLY_BETTER
    low, high = check["margins"]["s_no_kd"]["interval"]
    assert low <= 0 < high and check["margins"]["s_no_kd"]["difference"] == pytest.approx(0.02)
    assert "beats" not in check["message"]
    assert check["message"].startswith(
        "WARNING: the teacher is not clearly better than the student alone; distillation is unlikely to help."
    )
    assert "+2.0 points [" in check["message"] and "an interval that holds 0" in check["message"]
    with caplog.at_level("WARNING", logger="hf_distill.recipes.teacher_check"):
        warn_teacher_check(check)
    assert [record.levelname for record in caplog.records] == ["WARNING"]


def test_a_lower_is_better_margin_must_lie_below_zero():
    clear = {"s": {"difference": -50.0, "interval": [-80.0, -20.0], "validation_examples": 40}}
    noisy = {"s": {"difference": -50.0, "interval": [-80.0, 5.0], "validation_examples": 40}}
    kwargs = {"metric_name": "perplexity", "higher_is_better": False}
    assert teacher_verdict(12.0, {"s": 62.0}, margins=clear, **kwargs)["verdict"] == TEACHER_BETTER
    check = teacher_verdict(12.0, {"s": 62.0}, margins=noisy, **kwargs)
    assert check["verdict"] == TEACHER_NOT_CLEARLY_BETTER and "-50 [-80, 5]" in check["message"]


def test_a_teacher_behind_quotes_its_margin_and_without_scores_no_interval_is_claimed():
    margins = {"s": {"difference": -0.1, "interval": [-0.2, -0.01], "validation_examples": 30}}
    behind = teacher_verdict(0.5, {"s": 0.6}, metric_name="f1", higher_is_better=True, margins=margins)
    assert (
        behind["verdict"] == TEACHER_NOT_BETTER and "margin -10.0 points [-20.0, -1.0]" in behind["message"]
    )
    unscored = teacher_verdict(0.8, {"s": 0.6}, metric_name="f1", higher_is_better=True)
    assert "beats" not in unscored["message"] and "no interval" in unscored["message"]
    assert "margins" not in unscored
