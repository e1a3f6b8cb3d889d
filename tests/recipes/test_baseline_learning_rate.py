"""``baseline_learning_rate``: the no-KD baseline trained at its own, separately tuned learning rate."""

from __future__ import annotations

import pytest
from transformers import BertForSequenceClassification

from hf_distill.recipes.student_arguments import StudentArguments
from tests.helpers.recipes import needs_rotten_tomatoes, run_recipe, save_tiny_teacher, tiny_flags


@pytest.mark.parametrize("rate", [0.0, -1e-4, float("nan"), float("inf")])
def test_a_baseline_learning_rate_that_is_not_positive_is_refused(rate):
    with pytest.raises(ValueError, match=r"baseline_learning_rate=.* must be a positive number.*e\.g\. 2e-4"):
        StudentArguments(baseline_learning_rate=rate)


@needs_rotten_tomatoes
def test_the_baseline_trains_at_its_own_learning_rate_and_the_report_says_which(
    tmp_path, wordpiece_tokenizer
):
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    flags = tiny_flags(
        tmp_path / "run",
        teacher_model_name_or_path=teacher,
        fine_tune_teacher="never",
        lr_scheduler_type="constant",
        learning_rate="1e-3",
        baseline_learning_rate="5e-2",
    )
    report = run_recipe("sentiment", flags)
    rates = {s["kind"]: s["learning_rate"] for s in report["students"]}
    assert rates == {"distilled": pytest.approx(1e-3), "no_kd_baseline": pytest.approx(5e-2)}
    for student in report["students"]:
        logged = [e["learning_rate"] for e in report["log_history"][student["name"]] if "learning_rate" in e]
        assert logged and logged == pytest.approx([student["learning_rate"]] * len(logged)), student["name"]
