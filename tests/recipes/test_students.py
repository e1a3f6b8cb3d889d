"""Building the recipe's students: one of each kind, and a causal LM refused for a classifier."""

from __future__ import annotations

import pytest
import torch

from hf_distill.recipes.arguments import (
    StudentArguments,
)
from hf_distill.recipes.students import build_student
from tests.helpers.recipes import task_data
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2


def test_gpt2_student_for_a_classifier_is_refused():
    teacher = tiny_bert_classifier()
    with pytest.raises(ValueError, match="student_init 'gpt2' builds a causal LM, but this task is"):
        build_student(
            "gpt2", teacher, StudentArguments(student_init=["gpt2"]), task_data("sequence_classification")
        )


def test_students_of_each_kind(tmp_path):
    teacher = tiny_bert_classifier(num_labels=2)
    task = task_data("sequence_classification")
    args = StudentArguments(student_num_layers=1, student_config_overrides='{"hidden_size": 16}')
    layered = build_student("teacher_layers", teacher, StudentArguments(student_num_layers=1), task)
    assert layered.config.num_hidden_layers == 1
    torch.testing.assert_close(
        layered.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[0].output.dense.weight
    )
    from_config = build_student("config", teacher, args, task)
    assert (from_config.config.num_hidden_layers, from_config.config.hidden_size) == (1, 16)
    teacher.save_pretrained(tmp_path / "given")
    given = build_student(
        "pretrained",
        teacher,
        StudentArguments(student_init=["pretrained"], student_model_name_or_path=str(tmp_path / "given")),
        task_data("sequence_classification", label_kwargs={"num_labels": 2}),
    )
    torch.testing.assert_close(given.classifier.weight, teacher.classifier.weight)
    lm_teacher = tiny_gpt2()
    gpt2 = build_student("gpt2", lm_teacher, StudentArguments(student_num_layers=1), task_data("causal_lm"))
    assert gpt2.config.vocab_size == lm_teacher.config.vocab_size and gpt2.config.n_layer == 1
