"""The recipe's report.json: retention and speed-up against the teacher, for either metric direction."""

from __future__ import annotations

import math

import pytest

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.report_json import build_report
from hf_distill.reports.report import validate_report
from tests.helpers.recipes import task_data


def _entry(metric, b1, b32):
    return {"metric": metric, "parameters": 10, "size_bytes": 40, "latency_ms_b1": b1, "latency_ms_b32": b32}


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_report_retention_and_speedup(tmp_path, higher_is_better):
    task = task_data("causal_lm")
    task.higher_is_better = higher_is_better
    task.metric_name = "accuracy" if higher_is_better else "perplexity"
    teacher = {"name_or_path": "t", "revision": None, **_entry(8.0, 10.0, 40.0)}
    student = {"name": "s", "kind": "distilled", "init": "gpt2", "output_dir": "o", **_entry(10.0, 5.0, 10.0)}
    args = DistillationTrainingArguments(output_dir=str(tmp_path), report_to="none", temperature=3.0)
    report = build_report(task, teacher, [student], args, {"s": [{"loss": 1.0, "step": 1}]})
    validate_report(report)
    expected = 10.0 / 8.0 if higher_is_better else 8.0 / 10.0
    assert report["students"][0]["retention"] == pytest.approx(expected)
    assert report["students"][0]["speedup_b1"] == pytest.approx(2.0)
    assert report["students"][0]["speedup_b32"] == pytest.approx(4.0)
    assert report["distillation"]["temperature"] == 3.0
    assert report["data"]["train_size"] == 1 and not math.isnan(report["students"][0]["retention"])
