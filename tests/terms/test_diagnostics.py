"""Teacher diagnostics on hand-built targets whose tail mass, top-k overlap and matched share are known."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.losses.topk import topk_teacher
from hf_distill.model_kind import CAUSAL_LM, SEQUENCE_CLASSIFICATION
from hf_distill.teachers.cross_tokenizer import AlignedTeacher, CrossTokenizerTarget
from hf_distill.terms.diagnostics import (
    diagnostics_due,
    logits_tail_mass,
    teacher_diagnostics,
    topk_overlap,
    topk_tail_mass,
)

# Teacher probabilities at two positions; at k = 2 the tails are 0.15 + 0.05 = 0.2 and 0.05 + 0.05 = 0.1.
TEACHER = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.7, 0.2, 0.05, 0.05]]).log()
# Student: top-2 {1, 2} at the first position (one of the teacher's {0, 1}), {0, 1} at the second (both).
STUDENT = torch.tensor([[0.1, 0.9, 0.5, 0.0], [3.0, 2.0, 1.0, 0.0]])


def lm_batch(labels: list[int]) -> DistillationBatch:
    ids = torch.tensor([[1, 1, 2]])
    return DistillationBatch.from_inputs(
        {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor([labels])}
    )


def lm(rows: torch.Tensor) -> torch.Tensor:
    """Two positions as a causal LM's three (the last has no next token and is cut by the shift)."""
    return torch.cat([rows, torch.zeros(1, rows.shape[-1])]).unsqueeze(0)


def args(k: int = 2, temperature: float = 1.0) -> SimpleNamespace:
    return SimpleNamespace(temperature=temperature, teacher_diagnostics_top_k=k)


def test_the_pure_measures_on_hand_computed_values():
    mass, ids = logits_tail_mass(TEACHER, 2, 1.0)
    torch.testing.assert_close(mass, torch.tensor([0.2, 0.1]))
    assert ids.tolist() == [[0, 1], [0, 1]]
    values = TEACHER[:, :2]
    tail = torch.tensor([0.2, 0.1]).log()
    torch.testing.assert_close(topk_tail_mass(values, tail, 1.0), torch.tensor([0.2, 0.1]))
    torch.testing.assert_close(topk_overlap(STUDENT, ids), torch.tensor([0.5, 1.0]))
    # k = V leaves no tail.
    torch.testing.assert_close(logits_tail_mass(TEACHER, 9, 1.0)[0], torch.zeros(2), atol=1e-6, rtol=0)


def test_tail_mass_at_the_training_temperature_matches_a_sorted_reference():
    logits = torch.randn(5, 11, generator=torch.Generator().manual_seed(0)) * 3
    for temperature in (0.5, 2.0):
        p = torch.softmax(logits / temperature, dim=-1)
        reference = 1 - p.sort(dim=-1, descending=True).values[:, :3].sum(-1)
        torch.testing.assert_close(logits_tail_mass(logits, 3, temperature)[0], reference)
        # The top-k form of the same teacher (what a cache holds) gives the same tail mass.
        values, _, tail = topk_teacher(logits, 3, temperature=temperature)
        torch.testing.assert_close(topk_tail_mass(values, tail, temperature), reference)


def test_causal_lm_diagnostics_average_over_the_shifted_label_positions():
    target = TeacherTarget(TargetKind.LIVE, logits=lm(TEACHER))
    found = teacher_diagnostics(CAUSAL_LM, lm(STUDENT), target, lm_batch([-100, 1, 2]), args())
    assert found["teacher_tail_mass"].item() == pytest.approx(0.15)
    assert found["topk_overlap"].item() == pytest.approx(0.75)
    assert "matched_share" not in found
    # Only the first prediction has a label: its values alone.
    found = teacher_diagnostics(CAUSAL_LM, lm(STUDENT), target, lm_batch([-100, 1, -100]), args())
    assert found["teacher_tail_mass"].item() == pytest.approx(0.2)
    assert found["topk_overlap"].item() == pytest.approx(0.5)
    # A row without labels is a transfer row: the KD term covers its attended positions, and so do these.
    found = teacher_diagnostics(CAUSAL_LM, lm(STUDENT), target, lm_batch([-100] * 3), args())
    assert found["teacher_tail_mass"].item() == pytest.approx(0.15)
    # No KD position (without labels, only the first token attended): nothing to log.
    ids = torch.tensor([[1, 1, 2]])
    padded = DistillationBatch.from_inputs({"input_ids": ids, "attention_mask": torch.tensor([[1, 0, 0]])})
    assert teacher_diagnostics(CAUSAL_LM, lm(STUDENT), target, padded, args()) == {}


def test_a_topk_target_keeps_its_own_k_and_tail():
    values, tail = lm(TEACHER[:, :2]), lm(torch.tensor([[0.2], [0.1]]).log())[..., 0]
    ids = lm(torch.tensor([[0.0, 1.0], [0.0, 1.0]])).long()
    target = TeacherTarget(TargetKind.CACHED_TOPK, topk=(values, ids, tail))
    found = teacher_diagnostics(CAUSAL_LM, lm(STUDENT), target, lm_batch([-100, 1, 2]), args(k=3))
    assert found["teacher_tail_mass"].item() == pytest.approx(0.15)
    assert found["topk_overlap"].item() == pytest.approx(0.75)
    # The chunked path has no student logits: the tail mass alone.
    found = teacher_diagnostics(CAUSAL_LM, None, target, lm_batch([-100, 1, 2]), args())
    assert set(found) == {"teacher_tail_mass"}


def test_classification_rows_and_a_teacher_of_hidden_states():
    batch = DistillationBatch.from_inputs(
        {"input_ids": torch.ones(2, 3).long(), "labels": torch.tensor([0, -100])}
    )
    target = TeacherTarget(TargetKind.LIVE, logits=TEACHER)
    found = teacher_diagnostics(SEQUENCE_CLASSIFICATION, STUDENT, target, batch, args())
    # The unlabeled row is a transfer row: the KD term covers both rows.
    assert found["teacher_tail_mass"].item() == pytest.approx(0.15)
    assert found["topk_overlap"].item() == pytest.approx(0.75)
    hidden = TeacherTarget(TargetKind.LIVE, hidden=torch.zeros(1, 3, 4), head_weight=torch.zeros(4, 4))
    assert teacher_diagnostics(CAUSAL_LM, None, hidden, lm_batch([1, 1, 1]), args()) == {}


def test_matched_share_counts_the_shifted_attended_positions():
    matched = torch.tensor([[True, False, True, True]])
    aligned = AlignedTeacher(
        teacher_log_p=torch.zeros(4, 2), teacher_log_rest=torch.zeros(4), teacher_student_ids=torch.zeros(2).long(),
        rows=torch.arange(4).reshape(1, 4), matched=matched, valid=torch.ones(1, 4, dtype=torch.bool),
    )  # fmt: skip
    target = CrossTokenizerTarget(TargetKind.CROSS_TOKENIZER, aligned=aligned)
    ids = torch.ones(1, 4).long()
    batch = DistillationBatch.from_inputs({"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0]])})
    found = teacher_diagnostics(CAUSAL_LM, torch.zeros(1, 4, 3), target, batch, args())
    assert found == {"matched_share": pytest.approx(torch.tensor(0.5))}
    labeled = DistillationBatch.from_inputs({"input_ids": ids, "labels": torch.tensor([[5, 5, 5, 5]])})
    share = teacher_diagnostics(CAUSAL_LM, None, target, labeled, args())["matched_share"]
    assert share.item() == pytest.approx(2 / 3) and math.isfinite(share.item())


def logging(
    strategy: str = "steps", steps: float = 5, first: bool = False, on: bool = True
) -> SimpleNamespace:
    return SimpleNamespace(
        teacher_diagnostics=on, logging_strategy=strategy, logging_steps=steps, logging_first_step=first
    )


def test_diagnostics_are_measured_on_the_steps_trainer_logs():
    due = [s for s in range(12) if diagnostics_due(logging(), SimpleNamespace(global_step=s), True)]
    assert due == [4, 9]  # steps 5 and 10 are logged; global_step counts the steps already done
    first = [
        s for s in range(6) if diagnostics_due(logging(first=True), SimpleNamespace(global_step=s), True)
    ]
    assert first == [0, 4]
    # Trainer resolves a ratio of the run into steps on its state; a count in the arguments is read as is
    # (the state holds Trainer's default of 500 until training starts).
    state = SimpleNamespace(global_step=2, logging_steps=3)
    assert diagnostics_due(logging(steps=0.1), state, True)
    assert diagnostics_due(logging(steps=1), SimpleNamespace(global_step=7, logging_steps=500), True)
    assert diagnostics_due(logging(), SimpleNamespace(global_step=1), training=False)  # evaluation: always
    assert not diagnostics_due(logging(on=False), SimpleNamespace(global_step=4), True)
    assert not diagnostics_due(logging(strategy="no"), SimpleNamespace(global_step=4), True)
    assert diagnostics_due(logging(strategy="epoch"), SimpleNamespace(global_step=1), True)
