"""The recipe arguments refuse bad values with the field, the value and the fix; the one RecipeConfig holds
them by name, and parse_recipe_args still gives the tuple in its old order."""

from __future__ import annotations

import dataclasses

import pytest

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.modes.self_distillation import SelfDistillationTrainingArguments
from hf_distill.recipes.arguments import (
    RecipeConfig,
    ReportArguments,
    StudentArguments,
    TeacherArguments,
    parse_recipe_args,
    parse_recipe_config,
)
from hf_distill.recipes.budget import BudgetArguments
from hf_distill.recipes.caching import CacheArguments
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.mode_select import ModeArguments


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


FLAGS = ["--output_dir", "out", "--report_to", "none", "--teacher_model_name_or_path", "my-teacher",
         "--student_num_layers", "2", "--max_length", "40", "--latency_rounds", "3", "--temperature", "3.0"]  # fmt: skip


def test_parse_recipe_config_names_every_group():
    config = parse_recipe_config(FLAGS, task="sequence_classification")
    assert config.teacher.teacher_model_name_or_path == "my-teacher"
    assert config.student.student_num_layers == 2
    assert config.data.max_length == 40
    assert config.report.latency_rounds == 3
    assert config.mode.distillation_mode == "kd"
    assert type(config.training) is DistillationTrainingArguments and config.training.temperature == 3.0
    assert config.extras == ()


def test_the_mode_picks_the_training_class_and_a_command_reads_its_own_group_by_type():
    config = parse_recipe_config(
        [*FLAGS, "--distillation_mode", "self_distillation", "--max_latency_ms", "7"],
        extra=(BudgetArguments,),
    )
    assert type(config.training) is SelfDistillationTrainingArguments
    assert config.extra(BudgetArguments).max_latency_ms == 7.0
    with pytest.raises(
        ValueError, match=r"holds 0 CacheArguments groups \(its extra groups: \['BudgetArguments'\]\)"
    ):
        config.extra(CacheArguments)


def test_parse_recipe_args_keeps_the_old_tuple_in_its_order():
    # Scripts written before RecipeConfig unpack (teacher, student, data, report, mode, *extra, training).
    config = parse_recipe_config([*FLAGS, "--max_params", "1000"], extra=(BudgetArguments,))
    groups = parse_recipe_args([*FLAGS, "--max_params", "1000"], extra=(BudgetArguments,))
    assert [type(g) for g in groups] == [
        TeacherArguments, StudentArguments, DataArguments, ReportArguments, ModeArguments, BudgetArguments,
        DistillationTrainingArguments,
    ]  # fmt: skip
    teacher, student, data, report, mode, budget, training = groups
    assert (teacher, student, data, report, mode, budget) == (
        config.teacher, config.student, config.data, config.report, config.mode, config.extra(BudgetArguments)
    )  # fmt: skip
    assert training.temperature == config.training.temperature == 3.0
    assert groups == config.as_tuple()[:-1] + (training,)


def test_from_groups_places_groups_by_class_in_any_order(tmp_path):
    training = DistillationTrainingArguments(output_dir=str(tmp_path), report_to="none")
    teacher, budget = TeacherArguments(teacher_model_name_or_path="t"), BudgetArguments(max_params=10)
    config = RecipeConfig.from_groups([budget, training, DataArguments(max_length=8), teacher])
    assert config.teacher is teacher and config.training is training and config.data.max_length == 8
    assert config.extras == (budget,) and config.extra(BudgetArguments) is budget
    # Groups left out are their defaults.
    assert config.student == StudentArguments() and config.mode == ModeArguments()
    changed = dataclasses.replace(config, student=StudentArguments(student_num_layers=1))
    assert changed.student.student_num_layers == 1 and changed.teacher is teacher
    with pytest.raises(ValueError, match="needs the training arguments"):
        RecipeConfig.from_groups([teacher])
    with pytest.raises(ValueError, match="two TeacherArguments groups were given for the one 'teacher'"):
        RecipeConfig.from_groups([teacher, training, TeacherArguments()])
    with pytest.raises(TypeError):
        RecipeConfig(training, teacher)  # keyword-only: a group cannot land in the wrong place
