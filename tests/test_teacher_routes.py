"""DistillationTrainer(teachers={...}, teacher_route_column=...): refused set-ups, and a routed run that trains
and logs the teacher diagnostics beside the loss parts."""

from __future__ import annotations

import math

import pytest

from hf_distill import DistillationTrainer
from tests.helpers.tiny_models import tiny_gpt2
from tests.helpers.training import lm_dataset, make_args


def routed_data(routes: list):
    data = lm_dataset(n=len(routes), length=8)
    return data.add_column("teacher", routes)


def trainer(tmp_path, routes, teachers=None, **kw):
    args = make_args(tmp_path, teacher_route_column=kw.pop("column", "teacher"), **kw)
    teachers = teachers if teachers is not None else {"code": tiny_gpt2(seed=1), "chat": tiny_gpt2(seed=2)}
    return DistillationTrainer(
        tiny_gpt2(seed=0), args=args, teachers=teachers, train_dataset=routed_data(routes)
    )


@pytest.mark.parametrize(
    ("routes", "match"),
    [
        (["code", "math", "chat", "code"], r"names teachers \['math'\].*\['chat', 'code'\]"),
        (
            ["code", None, "chat", "code"],
            r"1 rows of the train_dataset column 'teacher' have no route \(rows \[1\]\)",
        ),
        (["code", "", "chat", "code"], r"have no route"),
    ],
)
def test_bad_routes_are_refused_before_training(tmp_path, routes, match):
    with pytest.raises(ValueError, match=match):
        trainer(tmp_path, routes)


def test_set_ups_that_cannot_route_are_refused(tmp_path):
    routes = ["code", "chat"] * 2
    with pytest.raises(ValueError, match="train_dataset has no column 'source'.*add_column"):
        trainer(tmp_path, routes, column="source")
    with pytest.raises(ValueError, match="no `teachers` were given"):
        DistillationTrainer(
            tiny_gpt2(),
            teacher_model=tiny_gpt2(seed=1),
            args=make_args(tmp_path, teacher_route_column="teacher"),
        )
    with pytest.raises(ValueError, match="teacher_route_column is unset"):
        DistillationTrainer(tiny_gpt2(), args=make_args(tmp_path), teachers={"a": tiny_gpt2(seed=1)})
    with pytest.raises(ValueError, match="Both teacher_model and `teachers`"):
        DistillationTrainer(
            tiny_gpt2(), teacher_model=tiny_gpt2(seed=1), args=make_args(tmp_path, teacher_route_column="t"),
            teachers={"a": tiny_gpt2(seed=2)},
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"\['hidden_state_weight'\] need one teacher's insides"):
        trainer(tmp_path, routes, hidden_state_weight=1.0)
    with pytest.raises(TypeError, match=r"teachers\['code'\] is a int"):
        trainer(tmp_path, routes, teachers={"code": 3, "chat": tiny_gpt2(seed=2)})
    with pytest.raises(ValueError, match="teacher_route_column is empty"):
        make_args(tmp_path, teacher_route_column=" ")
    with pytest.raises(ValueError, match="teacher_diagnostics_top_k must be an integer >= 1"):
        make_args(tmp_path, teacher_diagnostics_top_k=0)


def test_a_routed_run_trains_and_logs_the_diagnostics(tmp_path):
    routes = ["code", "chat", "chat", "code", "code", "chat", "code", "chat"]
    run = trainer(tmp_path, routes, max_steps=2, per_device_train_batch_size=4, teacher_diagnostics_top_k=5)
    run.train()
    steps = [entry for entry in run.state.log_history if "loss_kd" in entry]
    assert len(steps) == 2
    for entry in steps:
        assert 0.0 < entry["teacher_tail_mass"] < 1.0 and 0.0 <= entry["topk_overlap"] <= 1.0
        assert math.isfinite(entry["loss"]) and "matched_share" not in entry
    # The teachers' weights are guarded against the push, each one.
    assert len([t for t, _ in run.guarded_teachers() if t is not None]) == 2


def test_diagnostics_switch_off(tmp_path):
    run = trainer(
        tmp_path, ["code", "chat"] * 2, max_steps=1, per_device_train_batch_size=4, teacher_diagnostics=False
    )
    run.train()
    (entry,) = [e for e in run.state.log_history if "loss_kd" in e]
    assert "teacher_tail_mass" not in entry and "topk_overlap" not in entry
