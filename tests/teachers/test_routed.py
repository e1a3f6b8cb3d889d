"""Routed teachers: each row's target is what its own teacher gives for that row alone; mixed target forms are
converted to top-k; bad routes are refused with what to do."""

from __future__ import annotations

import pytest
import torch

from hf_distill.batch import ROUTES, DistillationBatch, TargetKind, TeacherTarget
from hf_distill.losses.topk import topk_teacher
from hf_distill.teachers.routed import RouteColumnCollator, RoutedTeacher, check_routes, merge_targets
from hf_distill.teachers.sources import LiveTeacher
from tests.helpers.tiny_models import tiny_gpt2

VOCAB = 60


def live(seed: int) -> LiveTeacher:
    model = tiny_gpt2(seed=seed, vocab_size=VOCAB).eval()
    return LiveTeacher(model, model, VOCAB, as_hidden=False)


def batch_of(routes: list[str], length: int = 7) -> DistillationBatch:
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, VOCAB, (len(routes), length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # right padding on one row
    labels = ids.masked_fill(mask == 0, -100)
    return DistillationBatch.from_inputs(
        {"input_ids": ids, "attention_mask": mask, "labels": labels, ROUTES: routes}
    )


class TopkOf:
    """A top-k source (as a cache or a served teacher gives) made from a live model at ``k``."""

    def __init__(self, teacher: LiveTeacher, k: int, temperature: float = 2.0):
        self.teacher, self.k, self.temperature = teacher, k, temperature

    def __call__(self, batch, output_kwargs):
        logits = self.teacher(batch, {}).logits
        return TeacherTarget(
            TargetKind.SERVED_TOPK, topk=topk_teacher(logits, self.k, temperature=self.temperature)
        )


def alone(source, batch: DistillationBatch, row: int) -> TeacherTarget:
    return source(batch.subset([row]), {})


def test_each_row_gets_its_own_teachers_logits_for_that_row_alone():
    teachers = {"code": live(1), "chat": live(2)}
    assert not torch.allclose(
        teachers["code"](batch_of(["x", "x"]), {}).logits, teachers["chat"](batch_of(["x", "x"]), {}).logits
    )
    routes = ["chat", "code", "code", "chat", "code"]
    batch = batch_of(routes)
    target = RoutedTeacher(teachers, temperature=2.0)(batch, {})
    assert target.kind is TargetKind.ROUTED and target.topk is None
    assert target.logits.shape == (5, 7, VOCAB)
    attended = batch.attention_mask.bool()
    for row, name in enumerate(routes):
        own = alone(teachers[name], batch, row).logits[0]
        other = alone(teachers["code" if name == "chat" else "chat"], batch, row).logits[0]
        keep = attended[row]
        torch.testing.assert_close(target.logits[row][keep], own[keep], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(target.logits[row][keep], other[keep])


def test_a_full_logits_teacher_beside_a_topk_teacher_is_converted_to_topk_at_its_k():
    code, chat = live(1), live(2)
    teachers = {"code": code, "chat": TopkOf(chat, k=4)}
    routes = ["code", "chat", "code"]
    batch = batch_of(routes)
    target = RoutedTeacher(teachers, temperature=2.0)(batch, {})
    values, ids, tail = target.topk
    assert target.logits is None and values.shape == (3, 7, 4) and tail.shape == (3, 7)
    for row, name in enumerate(routes):
        expected = topk_teacher(
            alone(live(1) if name == "code" else chat, batch, row).logits, 4, temperature=2.0
        )
        for got, want in zip((values, ids, tail), expected):
            torch.testing.assert_close(got[row], want[0], rtol=1e-5, atol=1e-5)
    # The converted tail is the exact mass of the other tokens: the k + 1 buckets sum to 1.
    full = torch.softmax(alone(code, batch, 0).logits[0] / 2.0, dim=-1)
    buckets = torch.softmax(torch.cat([values[0] / 2.0, tail[0, :, None]], dim=-1), dim=-1)
    torch.testing.assert_close(buckets[:, -1], 1 - full.gather(-1, ids[0]).sum(-1), rtol=1e-5, atol=1e-6)


def test_topk_teachers_of_different_k_in_one_batch_are_refused():
    teachers = {"a": TopkOf(live(1), k=4), "b": TopkOf(live(2), k=5)}
    with pytest.raises(ValueError, match=r"different k \[4, 5\].*same k"):
        RoutedTeacher(teachers, temperature=2.0)(batch_of(["a", "b"]), {})


def test_one_route_per_batch_passes_its_teachers_form_through():
    teachers = {"a": TopkOf(live(1), k=4), "b": live(2)}
    target = RoutedTeacher(teachers, temperature=2.0)(batch_of(["a", "a"]), {})
    assert target.logits is None and target.topk[0].shape == (2, 7, 4)


def test_bad_routes_are_refused_with_the_known_teachers():
    with pytest.raises(ValueError, match=r"names teachers \['math'\].*\['chat', 'code'\].*key of `teachers`"):
        check_routes(["code", "math"], ["code", "chat"], "train_dataset column 'teacher'")
    with pytest.raises(ValueError, match=r"2 rows .* have no route \(rows \[1, 2\]\)"):
        check_routes(["code", None, " "], ["code"], "train_dataset column 'teacher'")
    batch = batch_of(["code", "math"])
    with pytest.raises(ValueError, match="not among the trainer's teachers"):
        RoutedTeacher({"code": live(1)}, temperature=1.0)(batch, {})
    no_routes = DistillationBatch.from_inputs({"input_ids": batch.model_inputs["input_ids"]})
    with pytest.raises(ValueError, match="carries no teacher routes.*teacher_route_column"):
        RoutedTeacher({"code": live(1)}, temperature=1.0)(no_routes, {})


def test_merging_refuses_a_hidden_state_target():
    hidden = TeacherTarget(TargetKind.LIVE, hidden=torch.zeros(1, 3, 4), head_weight=torch.zeros(5, 4))
    with pytest.raises(ValueError, match="neither logits nor top-k"):
        merge_targets([([0], hidden)], 1, 1.0)


def test_the_route_column_travels_through_the_collator_as_strings():
    seen = []

    def inner(features):
        seen.extend(features)
        return {"input_ids": torch.tensor([f["input_ids"] for f in features])}

    collator = RouteColumnCollator(inner, "teacher")
    batch = collator([{"input_ids": [1, 2], "teacher": "code"}, {"input_ids": [3, 4], "teacher": "chat"}])
    assert batch[ROUTES] == ["code", "chat"] and all("teacher" not in f for f in seen)
    assert DistillationBatch.from_inputs(batch).routes == ["code", "chat"]
    assert ROUTES not in DistillationBatch.from_inputs(batch).model_inputs
    with pytest.raises(ValueError, match="without the route column 'teacher'"):
        collator([{"input_ids": [1, 2]}])
