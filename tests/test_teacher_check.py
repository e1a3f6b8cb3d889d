"""The teacher checked against the student trained alone, on validation data: the verdict on fixed numbers,
that only the validation split is scored, and how the report and the card say it. The end-to-end run with a
teacher that is worse than the baseline is in test_recipes.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hf_distill.recipes.teacher_check import (
    NOT_CHECKED,
    TEACHER_BETTER,
    TEACHER_NOT_BETTER,
    check_teacher_worth,
    teacher_verdict,
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

    from test_report import make_run_report

    from hf_distill.hub.card import render_model_card
    from hf_distill.reports.report import make_report

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
