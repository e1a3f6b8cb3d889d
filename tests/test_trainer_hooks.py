"""Modes plug into ``DistillationTrainer`` through its hooks (``shared_vocab_size``, ``build_logit_terms``,
``build_teacher_source``), called once during set-up, instead of replacing its parts after it is built."""

from __future__ import annotations

import pytest
import torch

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.modes.multi_teacher import (
    MixtureTeacher,
    MultiTeacherDistillationTrainer,
    MultiTeacherTrainingArguments,
)
from hf_distill.terms.logits import PlainLogitTerms
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier, tiny_gpt2


def _args(tmp_path, cls=DistillationTrainingArguments, **kw):
    return cls(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kw)


def test_a_teacher_source_built_by_the_hook_is_the_one_each_batch_asks(tmp_path, wordpiece_tokenizer):
    asked = []

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, batch, output_kwargs):
            asked.append(batch.global_step)
            return self.inner(batch, output_kwargs)

    class CountingTrainer(DistillationTrainer):
        def build_teacher_source(self, *args):
            return Counting(super().build_teacher_source(*args))

    teacher = tiny_bert_classifier(seed=1, num_labels=2)
    trainer = CountingTrainer(
        model=tiny_bert_classifier(seed=2, num_labels=2), teacher_model=teacher, args=_args(tmp_path)
    )
    # Declared by the constructor, not created on first use.
    assert trainer.hub_repo_allowed is False and trainer.held_back_pushes is None
    assert trainer.eval_wants_logits is True and trainer.feature_map_matcher is None
    encoded = wordpiece_tokenizer(make_sentences(4), padding=True, return_tensors="pt")
    loss = trainer.compute_loss(trainer.model, {**encoded, "labels": torch.tensor([0, 1, 0, 1])})
    assert asked == [0] and torch.isfinite(loss)


def test_multi_teacher_builds_its_mixture_and_plain_terms_through_the_hooks(tmp_path):
    teachers = [tiny_gpt2(seed=1), tiny_gpt2(seed=2)]
    trainer = MultiTeacherDistillationTrainer(
        model=tiny_gpt2(seed=0, hidden=16),
        teacher_models=teachers,
        args=_args(tmp_path, MultiTeacherTrainingArguments, kd_loss_implementation="auto"),
    )
    # The rows shared by all teachers are known before the terms and the mixture are built: all agree.
    assert isinstance(trainer.logit_terms, PlainLogitTerms)
    assert trainer.logit_terms.vocab_size == trainer.vocab_size
    assert (
        isinstance(trainer.teacher_source.live, MixtureTeacher)
        and trainer.mixture is trainer.teacher_source.live
    )
    assert trainer.mixture.vocab_size == trainer.teacher_source.cached.vocab_size == trainer.vocab_size
    assert trainer.teachers == trainer.mixture.teachers and len(trainer.teachers) == 2
    assert trainer.teachers[0] is trainer.teacher


def test_a_hook_that_refuses_stops_the_set_up(tmp_path):
    class Refusing(DistillationTrainer):
        def shared_vocab_size(self, *args):
            raise ValueError("this mode needs a causal LM")

    with pytest.raises(ValueError, match="needs a causal LM"):
        Refusing(
            model=tiny_bert_classifier(seed=2, num_labels=2),
            teacher_model=tiny_bert_classifier(seed=1, num_labels=2),
            args=_args(tmp_path),
        )
