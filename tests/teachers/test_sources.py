"""One teacher vocabulary: every source answers ``source(batch, output_kwargs)`` with a target whose ``kind`` is a
:class:`~hf_distill.batch.TargetKind`; the terms read the target's form, so a new source (a served teacher's top-k)
needs no change in them. A batch's transfer positions are computed once and carried on the batch; a broken
teacher is reported at the batch's step."""

from __future__ import annotations

import sys

import pytest
import torch

import hf_distill
from hf_distill import (
    DistillationTrainer,
    DistillationTrainingArguments,
    MultiTeacherDistillationTrainer,
    MultiTeacherTrainingArguments,
    MutualLearningTrainer,
)
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.cache.build import (
    TAIL_LOGIT,
    TEACHER_LOGITS,
    TEMPERATURE,
    TOPK_INDICES,
    TOPK_LOGITS,
)
from hf_distill.losses.topk import topk_teacher
from hf_distill.teachers.sources import CachedOrLiveTeacher, CachedTeacher, LiveTeacher, TeacherSignal
from hf_distill.terms.cross_tokenizer import CrossTokenizerLogitTerms
from hf_distill.terms.logits import ChunkedLogitTerms, PlainLogitTerms, StudentView
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2


def make_args(tmp_path, cls=DistillationTrainingArguments, **kw):
    defaults = dict(
        output_dir=str(tmp_path / "run"), report_to="none", save_strategy="no", use_cpu=True, seed=0
    )
    defaults.update(kw)
    return cls(**defaults)


def token_batch(rows: int = 2, length: int = 8, vocab: int = 60, **extra) -> DistillationBatch:
    ids = torch.randint(0, vocab, (rows, length), generator=torch.Generator().manual_seed(0))
    return DistillationBatch.from_inputs({"input_ids": ids, "attention_mask": torch.ones_like(ids), **extra})


# ---- the kind ---------------------------------------------------------------------------------------------


def test_a_target_kind_must_be_a_target_kind():
    with pytest.raises(TypeError, match=r"kind must be a TargetKind, got 'live'.*TargetKind\.LIVE"):
        TeacherTarget("live", logits=torch.zeros(1, 2))
    target = TeacherTarget(TargetKind.CACHED_TOPK)
    assert target.source == "cached top-k teacher logits" == target.kind.value


def test_the_cross_tokenizer_terms_name_the_source_they_were_given(tmp_path):
    terms = CrossTokenizerLogitTerms(make_args(tmp_path, cross_tokenizer_loss="uld"))
    target = TeacherTarget(TargetKind.LIVE, logits=torch.zeros(1, 3, 5))
    with pytest.raises(TypeError, match="got one from the live teacher: the teacher source must be"):
        terms(StudentView(None, logits=torch.zeros(1, 3, 5)), target, token_batch(1, 3, 5))


# ---- one call shape ---------------------------------------------------------------------------------------


def test_every_source_takes_the_batch_and_names_its_kind(tmp_path):
    teacher = tiny_gpt2(seed=1)
    batch = token_batch()
    with torch.no_grad():
        expected = teacher(**batch.model_inputs).logits
    live = LiveTeacher(teacher, teacher, None, as_hidden=False)(batch, {})
    assert live.kind is TargetKind.LIVE
    torch.testing.assert_close(live.logits, expected)
    as_hidden = LiveTeacher(teacher, teacher, None, as_hidden=True)(batch, {})
    assert as_hidden.kind is TargetKind.LIVE and as_hidden.logits is None
    torch.testing.assert_close(as_hidden.hidden @ as_hidden.head_weight.T, expected, rtol=1e-5, atol=1e-5)

    topk = topk_teacher(expected, 4, temperature=2.0)
    columns = dict(zip((TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT), topk))
    cached_batch = token_batch(**columns, **{TEMPERATURE: torch.tensor([2.0, 2.0])})
    cached = CachedTeacher(2.0, None)(cached_batch, {})
    assert cached.kind is TargetKind.CACHED_TOPK and all(a is b for a, b in zip(cached.topk, topk))
    logits_batch = DistillationBatch.from_inputs({"input_ids": torch.ones(2, 3, dtype=torch.long),
                                                  TEACHER_LOGITS: torch.randn(2, 3)})  # fmt: skip
    assert CachedTeacher(2.0, None)(logits_batch, {}).kind is TargetKind.CACHED_LOGITS

    # The trainer's default source: the cache a batch carries, else the live teacher.
    either = CachedOrLiveTeacher(
        LiveTeacher(teacher, teacher, None, as_hidden=False), CachedTeacher(2.0, None)
    )
    assert (
        either(batch, {}).kind is TargetKind.LIVE and either(cached_batch, {}).kind is TargetKind.CACHED_TOPK
    )
    with pytest.raises(
        ValueError, match="carries no cached teacher outputs and the trainer has no teacher_model"
    ):
        CachedOrLiveTeacher(None, CachedTeacher(2.0, None))(batch, {})


def test_the_mixture_of_teachers_is_a_source_like_the_others(tmp_path):
    teachers = [tiny_gpt2(seed=1), tiny_gpt2(seed=2)]
    trainer = MultiTeacherDistillationTrainer(
        model=tiny_gpt2(seed=0),
        teacher_models=teachers,
        args=make_args(tmp_path, MultiTeacherTrainingArguments),
    )
    batch = token_batch()
    target = trainer.teacher_source(batch, {})
    assert target.kind is TargetKind.MIXTURE
    with torch.no_grad():
        probs = [torch.softmax(t(**batch.model_inputs).logits / 2.0, -1) for t in teachers]
    torch.testing.assert_close(torch.softmax(target.logits / 2.0, -1), (probs[0] + probs[1]) / 2)


def test_the_old_names_are_the_same_objects(tmp_path):
    assert hf_distill.TeacherCacheCollator is hf_distill.TeacherColumnsCollator
    assert "TeacherCacheCollator" in hf_distill.__all__ and "TeacherColumnsCollator" in hf_distill.__all__
    assert TeacherSignal is CachedOrLiveTeacher
    trainer = DistillationTrainer(
        model=tiny_bert_classifier(seed=0),
        teacher_model=tiny_bert_classifier(seed=1),
        args=make_args(tmp_path),
    )
    with pytest.warns(DeprecationWarning, match="DistillationTrainer.task is deprecated.*trainer.head_kind"):
        old_name = trainer.task
    assert trainer.head_kind == "sequence_classification" == old_name
    assert trainer.teacher_signal is trainer.teacher_source


# ---- a served teacher: one more source, no change in the terms ------------------------------------------


class ServedTopkTeacher:
    """A stand-in for a teacher behind a server answering the top-k log-probabilities of each position at the
    training temperature (as a vLLM server does): the source the protocol's docstring describes."""

    def __init__(self, answer, temperature: float):
        self.answer, self.temperature = answer, temperature

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        logprobs, ids = self.answer(batch.model_inputs["input_ids"])
        tail = torch.log1p(-logprobs.exp().sum(-1))
        return TeacherTarget(TargetKind.LIVE, topk=(self.temperature * logprobs, ids, tail))


def coarse_forward_kl(
    student: torch.Tensor, teacher: torch.Tensor, ids: torch.Tensor, t: float
) -> torch.Tensor:
    """KL between the two distributions coarsened to the top-k ids and "the rest", times T^2, per position:
    written from the definition, not with the package's top-k loss."""
    p_t, p_s = torch.softmax(teacher / t, -1), torch.softmax(student / t, -1)
    top_t, top_s = p_t.gather(-1, ids), p_s.gather(-1, ids)
    coarse_t = torch.cat([top_t, 1 - top_t.sum(-1, keepdim=True)], -1)
    coarse_s = torch.cat([top_s, 1 - top_s.sum(-1, keepdim=True)], -1)
    return (coarse_t * (coarse_t.log() - coarse_s.log())).sum(-1) * t**2


@pytest.mark.parametrize("implementation", ["plain", "fused", "chunked"])
def test_a_served_top_k_teacher_feeds_the_terms_unchanged(tmp_path, implementation):
    g = torch.Generator().manual_seed(3)
    rows, length, vocab, width, k, temperature = 2, 6, 20, 8, 5, 2.0
    hidden, head = torch.randn(rows, length, width, generator=g), torch.randn(vocab, width, generator=g)
    teacher_logits = 2 * torch.randn(rows, length, vocab, generator=g)

    def answer(input_ids):  # the server: log-probabilities at the temperature, its k best
        logprobs = torch.log_softmax(teacher_logits / temperature, -1)
        return logprobs.topk(k, -1)

    ids = torch.randint(0, vocab, (rows, length), generator=g)
    batch = DistillationBatch.from_inputs({"input_ids": ids, "labels": ids.clone()})
    served = ServedTopkTeacher(answer, temperature)(batch, {})
    cached_columns = dict(
        zip((TOPK_LOGITS, TOPK_INDICES, TAIL_LOGIT), topk_teacher(teacher_logits, k, temperature=2.0))
    )
    cached_batch = DistillationBatch.from_inputs({"input_ids": ids, "labels": ids.clone(), **cached_columns,
                                                  TEMPERATURE: torch.tensor([2.0, 2.0])})  # fmt: skip
    cached = CachedTeacher(temperature, None)(cached_batch, {})
    args = make_args(tmp_path, alpha=1.0, temperature=temperature)
    if implementation == "plain":
        terms = PlainLogitTerms("causal_lm", args, None)
        student = StudentView(None, logits=hidden @ head.T)
    else:
        terms = ChunkedLogitTerms(args, None, implementation, lambda m: m)
        student = StudentView(None, hidden=hidden, head_weight=head)
    from_server, _ = terms(student, served, batch)
    from_cache, _ = terms(student, cached, cached_batch)
    # Position t predicts token t + 1: the last position has no target.
    reference = coarse_forward_kl(
        (hidden @ head.T)[:, :-1], teacher_logits[:, :-1], served.topk[1][:, :-1], 2.0
    )
    assert from_server.item() == pytest.approx(reference.mean().item(), rel=1e-4)
    assert from_server.item() == pytest.approx(from_cache.item(), rel=1e-5)


# ---- transfer positions once per batch; the step from the batch -----------------------------------------


def count_transfer_positions(monkeypatch) -> list[int]:
    """Counts every call of ``transfer_positions``, wherever in the package a module holds the function."""
    original, calls = hf_distill.batch.transfer_positions, []

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    holders = [m for n, m in list(sys.modules.items()) if n.startswith("hf_distill") and m is not None
               and vars(m).get("transfer_positions") is original]  # fmt: skip
    assert hf_distill.batch in holders
    for module in holders:
        monkeypatch.setattr(module, "transfer_positions", counted)
    return calls


@pytest.mark.parametrize("case", ["classification", "chunked", "mutual"])
def test_transfer_positions_are_computed_once_per_compute_loss(tmp_path, monkeypatch, case):
    if case == "classification":
        trainer = DistillationTrainer(
            model=tiny_bert_classifier(seed=0),
            teacher_model=tiny_bert_classifier(seed=1),
            args=make_args(tmp_path),
        )
        inputs = {"input_ids": torch.randint(5, 80, (4, 7)), "labels": torch.tensor([0, -100, 2, -100])}
    else:
        ids = torch.randint(0, 60, (3, 8))
        labels = ids.clone()
        labels[1] = -100  # a transfer row
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
        if case == "chunked":
            args = make_args(tmp_path, kd_loss_implementation="chunked")
            trainer = DistillationTrainer(model=tiny_gpt2(seed=0), teacher_model=tiny_gpt2(seed=1), args=args)
            assert isinstance(trainer.logit_terms, ChunkedLogitTerms)
        else:  # two logit terms on one batch: each student learns from the other
            trainer = MutualLearningTrainer(
                model=tiny_gpt2(seed=0), peer_model=tiny_gpt2(seed=1), args=make_args(tmp_path)
            )
    calls = count_transfer_positions(monkeypatch)
    loss = trainer.compute_loss(trainer.model, inputs, num_items_in_batch=torch.tensor(10))
    assert torch.isfinite(loss)
    assert len(calls) == 1


def test_the_batch_keeps_its_transfer_positions():
    labels = torch.tensor([[1, 2, 3], [-100, -100, -100]])
    batch = DistillationBatch(
        model_inputs={"attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}, labels=labels
    )
    shifted = batch.transfer_positions(shifted=True)
    assert shifted.tolist() == [[False, False], [True, False]]
    assert batch.transfer_positions(shifted=True) is shifted
    assert batch.transfer_positions(shifted=False).tolist() == [[False] * 3, [True, True, False]]
    assert DistillationBatch(model_inputs={}).transfer_positions(shifted=False) is None


def test_a_broken_teacher_is_reported_at_the_batchs_step(tmp_path):
    teacher = tiny_gpt2(seed=1)
    with torch.no_grad():
        teacher.lm_head.weight[3, 0] = float("nan")
    trainer = DistillationTrainer(
        model=tiny_gpt2(), teacher_model=teacher, args=make_args(tmp_path, alpha=1.0)
    )
    trainer.state.global_step = 7
    with pytest.raises(FloatingPointError, match="teacher's logits hold NaN or inf at global step 7"):
        trainer.compute_loss(trainer.model, {"input_ids": torch.randint(0, 60, (2, 8))})
