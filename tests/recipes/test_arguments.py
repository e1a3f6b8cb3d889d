"""The recipe arguments refuse bad values with the field, the value and the fix."""

from __future__ import annotations

import pytest

from hf_distill.recipes.arguments import ReportArguments, StudentArguments, TeacherArguments
from hf_distill.recipes.data_arguments import DataArguments


def test_argument_errors():
    with pytest.raises(ValueError, match="fine_tune_teacher='sometimes' is not one of"):
        TeacherArguments(fine_tune_teacher="sometimes")
    with pytest.raises(
        ValueError, match=r"student_init \['layers'\] holds \['layers'\]; each entry must be one of"
    ):
        StudentArguments(student_init=["layers"])
    with pytest.raises(ValueError, match="student_init 'pretrained' needs student_model_name_or_path"):
        StudentArguments(student_init=["pretrained"])
    with pytest.raises(ValueError, match="is not valid JSON"):
        StudentArguments(student_config_overrides="{hidden_size: 8}")
    with pytest.raises(ValueError, match="must be a JSON object of config fields, got list"):
        StudentArguments(student_config_overrides="[1, 2]")
    with pytest.raises(ValueError, match=r"max_test_samples=0 must be >= 1"):
        DataArguments(max_test_samples=0)
    with pytest.raises(ValueError, match=r"max_length=1 must be >= 2"):
        DataArguments(max_length=1)
    with pytest.raises(ValueError, match="latency_rounds=0 must be >= 1"):
        ReportArguments(latency_rounds=0)
    with pytest.raises(ValueError, match="latency_threads=0 must be >= 1"):
        ReportArguments(latency_threads=0)
    assert StudentArguments(student_init="teacher_layers, gpt2").student_init == ["teacher_layers", "gpt2"]
