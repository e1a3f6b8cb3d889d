"""The small readers of the code benchmarks: which saved points the learning curve scores, which report rows
codegen_seeds keeps as the teacher's."""

from __future__ import annotations

import importlib.util

import pytest

from tests.helpers.paths import BENCHMARKS


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_the_curve_scores_checkpoints_in_step_order_or_the_final_model(tmp_path):
    curve = load("codegen_learning_curve")
    run = tmp_path / "student"
    for step in (120, 30, 60):
        saved(run / f"checkpoint-{step}")
    (run / "checkpoint-90").mkdir()  # no config.json: an interrupted save, skipped
    assert curve.saved_points(run) == [(30, run / "checkpoint-30"), (60, run / "checkpoint-60"),
                                       (120, run / "checkpoint-120")]  # fmt: skip
    final = saved(tmp_path / "final")
    assert curve.saved_points(final) == [("end", final)]
    with pytest.raises(SystemExit, match="holds neither a saved model nor checkpoint-<step>/ folders"):
        curve.saved_points(tmp_path)


def test_codegen_seeds_keeps_the_teacher_rows_not_students_named_teacher_layers():
    seeds = load("codegen_seeds")
    row = {"prompt_style": "raw", "prompts": 24, "parse_rate": 0.5, "degenerate_rate": 0.0}
    names = ["teacher", "teacher (raw)", "teacher (fine-tuned)", "teacher_layers-18L-distilled"]
    report = {
        "students": [{"name": "teacher_layers-18L-distilled"}],
        "generation": {"models": [{"name": name, **row} for name in names]},
    }
    assert [r["name"] for r in seeds.teacher_generation(report)] == names[:3]
