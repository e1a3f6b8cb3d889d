"""Hidden-state matching (:mod:`hf_distill.terms.hidden_states`): the uniform layer map, the layer-map check, the
per-token losses and the matcher with its learned projection, against values computed by hand; and the trainer's
refusal of a map naming a missing layer."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill.terms.hidden_states import (
    HiddenStateMatcher,
    check_layer_map,
    per_token_hidden_loss,
    uniform_layer_map,
)
from hf_distill.trainer import DistillationTrainer
from tests.helpers.refusals import args, bert, rows


def test_uniform_layer_map_by_hand():
    # Student layer k matches teacher layer round(k * L_t / L_s); the embeddings (index 0) are left out.
    assert uniform_layer_map(2, 4) == [(1, 2), (2, 4)]
    assert uniform_layer_map(3, 12) == [(1, 4), (2, 8), (3, 12)]
    # 6 / 4 = 1.5 per layer: 1.5, 3, 4.5, 6 round (halves to even) to 2, 3, 4, 6; the last layers meet.
    assert uniform_layer_map(4, 6) == [(1, 2), (2, 3), (3, 4), (4, 6)]
    assert uniform_layer_map(1, 1) == [(1, 1)]


def test_check_layer_map_accepts_the_last_index_and_names_the_first_past_it():
    # Index L is the output of the last layer (indices run 0..L, 0 = embeddings): it is a layer, L + 1 is not.
    assert check_layer_map([(0, 0), (2, 4)], 2, 4) == [(0, 0), (2, 4)]
    with pytest.raises(ValueError, match=r"names student layer 3, but the student has 2 layers \(.*0\.\.2"):
        check_layer_map([(3, 4)], 2, 4)
    with pytest.raises(ValueError, match=r"names teacher layer 5, but the teacher has 4 layers.*'uniform'"):
        check_layer_map([(1, 5)], 2, 4)


def test_per_token_losses_by_hand():
    student, teacher = torch.tensor([[[1.0, 2.0]]]), torch.tensor([[[3.0, 2.0]]])
    # MSE over the width: ((1 - 3)^2 + 0^2) / 2 = 2.
    assert per_token_hidden_loss(student, teacher, "mse").tolist() == [[2.0]]
    # 1 - cos: (1, 2) . (3, 2) = 7, |(1, 2)| |(3, 2)| = sqrt(5) sqrt(13).
    cosine = per_token_hidden_loss(student, teacher, "cosine")
    assert cosine.shape == (1, 1) and cosine.item() == pytest.approx(1 - 7 / math.sqrt(65), abs=1e-6)
    with pytest.raises(ValueError, match="Unknown hidden-state loss 'l1'; use 'mse' or 'cosine'"):
        per_token_hidden_loss(student, teacher, "l1")


def test_matcher_projects_the_student_and_sums_over_kept_tokens():
    matcher = HiddenStateMatcher([(1, 2)], student_width=2, teacher_width=3)
    assert list(matcher.projections) == ["1"]
    with torch.no_grad():
        matcher.projections["1"].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        matcher.projections["1"].bias.copy_(torch.tensor([0.0, 0.0, 1.0]))
    student_layer = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    teacher_layer = torch.tensor([[[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    student_hidden = (torch.zeros(1, 2, 2), student_layer)
    teacher_hidden = (torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), teacher_layer)
    # Projected tokens: (1, 2, 1 + 2 + 1) = (1, 2, 4) and (3, -1, 3 - 1 + 1) = (3, -1, 3).
    # MSE against (1, 1, 1): (0 + 1 + 9) / 3 = 10/3; against (0, 0, 0): (9 + 1 + 9) / 3 = 19/3.
    both = matcher(student_hidden, teacher_hidden, torch.tensor([[1, 1]]))
    assert both.item() == pytest.approx(29 / 3, rel=1e-6)
    first = matcher(student_hidden, teacher_hidden, torch.tensor([[1, 0]]))
    assert first.item() == pytest.approx(10 / 3, rel=1e-6)
    assert matcher(student_hidden, teacher_hidden, None).item() == pytest.approx(29 / 3, rel=1e-6)
    first.backward()
    assert teacher_layer.grad is None  # the teacher is a target, never trained through the matcher
    assert matcher.projections["1"].weight.grad.abs().sum() > 0


def test_matcher_of_equal_widths_has_no_projection_and_takes_the_cosine():
    matcher = HiddenStateMatcher([(1, 1)], student_width=2, teacher_width=2, loss="cosine")
    assert len(matcher.projections) == 0
    student = (torch.zeros(1, 2, 2), torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
    teacher = (torch.zeros(1, 2, 2), torch.tensor([[[0.0, 1.0], [2.0, 2.0]]]))
    # Orthogonal: 1 - 0 = 1; parallel: 1 - 1 = 0.
    assert matcher(student, teacher, torch.tensor([[1, 1]])).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize(
    ("layer_map", "message"),
    [
        ("1:9", r"names teacher layer 9, but the teacher has 4 layers"),
        ("3:4", r"names student layer 3, but the student has 2"),
    ],
)
def test_layer_map_names_a_missing_layer(layer_map, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        DistillationTrainer(
            model=bert(),
            teacher_model=bert(seed=1, hidden=32, layers=4),
            args=args(tmp_path, hidden_state_weight=1.0, hidden_layer_map=layer_map),
            train_dataset=rows(),
        )
