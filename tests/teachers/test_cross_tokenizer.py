"""DistillationTrainer with a teacher of another tokenizer: live, from a cross-tokenizer cache, and the refusals."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import DataCollatorForLanguageModeling

from hf_distill import DistillationTrainer
from hf_distill.cache.build import XTOK_COLUMNS, cache_teacher_outputs
from hf_distill.token_alignment import OFFSETS_COLUMN, TEXT_COLUMN, prepare_cross_tokenizer_dataset
from tests.helpers.xtok import (
    TEXTS,
    byte_level_tokenizer,
    first_batch,
    make_args,
    metaspace_tokenizer,
    texts_dataset,
    tiny_gpt2,
    trainer_for,
)


@pytest.fixture(scope="module")
def teacher_tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def student_tokenizer():
    return metaspace_tokenizer()


@pytest.mark.parametrize("loss", ["aligned", "uld"])
def test_training_across_tokenizers_lowers_the_kd_loss(tmp_path, student_tokenizer, teacher_tokenizer, loss):
    train = prepare_cross_tokenizer_dataset(texts_dataset(4), student_tokenizer, text_column=TEXT_COLUMN)
    trainer = trainer_for(
        tmp_path, student_tokenizer, teacher_tokenizer, train, cross_tokenizer_loss=loss, max_steps=12
    )
    trainer.train()
    kd = [log["loss_kd"] for log in trainer.state.log_history if "loss_kd" in log]
    assert len(kd) == 12 and all(torch.isfinite(torch.tensor(kd)))
    assert kd[-1] < 0.8 * kd[0]


def test_aligned_with_one_tokenizer_on_both_sides_is_the_same_vocabulary_kd(tmp_path, teacher_tokenizer):
    tokenizer = teacher_tokenizer
    rows = prepare_cross_tokenizer_dataset(texts_dataset(8), tokenizer, text_column=TEXT_COLUMN)
    cross = trainer_for(tmp_path / "x", tokenizer, tokenizer, rows, alpha=0.7)
    plain_rows = rows.remove_columns([TEXT_COLUMN, OFFSETS_COLUMN])
    plain = trainer_for(
        tmp_path / "p", tokenizer, tokenizer, plain_rows, alpha=0.7, cross_tokenizer_loss=None
    )
    plain.model.load_state_dict(cross.model.state_dict())
    plain.teacher.load_state_dict(cross.teacher.state_dict())
    for rows_of_batch in ([0, 1, 2, 3], [4, 5, 6, 7]):
        want = plain.compute_loss(plain.model, first_batch(plain, rows_of_batch))
        got = cross.compute_loss(cross.model, first_batch(cross, rows_of_batch))
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("loss", ["aligned", "uld"])
def test_the_top_k_form_through_the_trainer_is_exact_when_k_covers_a_vocabulary_and_lower_otherwise(
    tmp_path, student_tokenizer, teacher_tokenizer, loss
):
    rows = prepare_cross_tokenizer_dataset(texts_dataset(4), student_tokenizer, text_column=TEXT_COLUMN)
    kd = {}
    for top_k in (None, len(student_tokenizer), 1):
        trainer = trainer_for(
            tmp_path / str(top_k), student_tokenizer, teacher_tokenizer, rows, cross_tokenizer_loss=loss,
            cross_tokenizer_top_k=top_k,
        )  # fmt: skip
        kd[top_k] = trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1, 2, 3]))
    torch.testing.assert_close(kd[len(student_tokenizer)], kd[None], atol=1e-6, rtol=1e-6)
    # A lower bound of the exact loss, and here a strict one (these tokenizers leave few tokens unshared, so the
    # `aligned` rest needs K = 1 to lose anything).
    assert kd[1] < kd[None] - 1e-4


def cached_rows(teacher, teacher_tokenizer, student_tokenizer, top_k, n=8):
    cache = cache_teacher_outputs(
        teacher,
        texts_dataset(n),
        teacher_tokenizer=teacher_tokenizer,
        top_k=top_k,
        temperature=2.0,
        batch_size=3,
    )
    return prepare_cross_tokenizer_dataset(cache, student_tokenizer, text_column=TEXT_COLUMN)


def test_cached_cross_tokenizer_run_equals_the_live_one_without_the_teacher(
    tmp_path, student_tokenizer, teacher_tokenizer
):
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    rows = cached_rows(teacher, teacher_tokenizer, student_tokenizer, top_k=len(teacher_tokenizer))
    live = trainer_for(
        tmp_path / "l",
        student_tokenizer,
        teacher_tokenizer,
        rows.remove_columns(list(XTOK_COLUMNS)),
        teacher=teacher,
        alpha=0.5,
    )
    cached = trainer_for(tmp_path / "c", student_tokenizer, teacher_tokenizer, rows, teacher=None, alpha=0.5)
    assert cached.teacher is None
    cached.model.load_state_dict(live.model.state_dict())
    for batch_rows in ([0, 1, 2, 3], [4, 5, 6, 7]):
        want = live.compute_loss(live.model, first_batch(live, batch_rows))
        got = cached.compute_loss(cached.model, first_batch(cached, batch_rows))
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # And whole runs: the same losses step by step.
    live.train()
    cached.train()
    losses = [[log["loss"] for log in t.state.log_history if "loss" in log] for t in (live, cached)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_a_cache_of_another_text_is_refused(tmp_path, student_tokenizer, teacher_tokenizer):
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    rows = cached_rows(teacher, teacher_tokenizer, student_tokenizer, top_k=8, n=4)
    edited = rows.map(lambda row: {TEXT_COLUMN: row[TEXT_COLUMN] + " edited"})
    trainer = trainer_for(tmp_path, student_tokenizer, teacher_tokenizer, edited, teacher=None)
    with pytest.raises(
        ValueError, match="other than the one the cross-tokenizer teacher cache was computed on"
    ):
        trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1]))


def test_a_cache_of_another_teacher_tokenizer_is_refused(tmp_path, student_tokenizer, teacher_tokenizer):
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    rows = cached_rows(teacher, teacher_tokenizer, student_tokenizer, top_k=8, n=4)
    other = byte_level_tokenizer(vocab_size=300)
    trainer = trainer_for(tmp_path, student_tokenizer, other, rows, teacher=None)
    with pytest.raises(ValueError, match="made with the teacher tokenizer.*fingerprint.*Pass the tokenizer"):
        trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1]))


def test_missing_teacher_tokenizer_is_refused_with_the_fix(tmp_path, student_tokenizer):
    train = prepare_cross_tokenizer_dataset(texts_dataset(4), student_tokenizer, text_column=TEXT_COLUMN)
    with pytest.raises(ValueError, match="needs the teacher's tokenizer as teacher_processing_class.*Pass"):
        trainer_for(tmp_path, student_tokenizer, None, train, teacher=tiny_gpt2(40))


def test_a_tokenizer_without_offsets_is_refused(tmp_path, student_tokenizer, teacher_tokenizer):
    class SlowTokenizer:
        is_fast = False

    train = prepare_cross_tokenizer_dataset(texts_dataset(4), student_tokenizer, text_column=TEXT_COLUMN)
    with pytest.raises(ValueError, match="teacher tokenizer .* not a fast tokenizer.*offsets"):
        trainer_for(tmp_path, student_tokenizer, SlowTokenizer(), train, teacher=tiny_gpt2(40))


def test_a_batch_without_the_text_is_refused(tmp_path, student_tokenizer, teacher_tokenizer):
    train = Dataset.from_dict(dict(student_tokenizer(TEXTS[:4])))
    trainer = trainer_for(tmp_path, student_tokenizer, teacher_tokenizer, train)
    with pytest.raises(ValueError, match="carry the raw text.*prepare_cross_tokenizer_dataset"):
        trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1]))


def test_different_vocabularies_without_a_cross_tokenizer_loss_name_the_option(
    tmp_path, student_tokenizer, teacher_tokenizer
):
    train = Dataset.from_dict(dict(student_tokenizer(TEXTS[:4])))
    with pytest.raises(ValueError, match="different vocabularies.*cross_tokenizer_loss='aligned'"):
        trainer_for(tmp_path, student_tokenizer, teacher_tokenizer, train, cross_tokenizer_loss=None)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"cross_tokenizer_loss": "wasserstein"}, "cross_tokenizer_loss 'wasserstein' is unknown"),
        ({"hidden_state_weight": 1.0}, "different positions; set them to 0"),
        ({"distillation_loss": "jsd"}, "Leave distillation_loss at 'forward_kl'"),
        ({"cross_tokenizer_top_k": 0}, "cross_tokenizer_top_k must be an integer >= 1"),
        ({"cross_tokenizer_top_k": 2.5}, "cross_tokenizer_top_k must be an integer >= 1"),
        (
            {"cross_tokenizer_loss": None, "cross_tokenizer_top_k": 64},
            "cross_tokenizer_top_k=64 is set but cross_tokenizer_loss is not",
        ),
    ],
)
def test_arguments_refuse_what_cross_tokenizer_distillation_cannot_do(tmp_path, changes, match):
    with pytest.raises(ValueError, match=match):
        make_args(tmp_path, **changes)


def test_prompt_masking_and_padding_side_carry_across_the_alignment(
    tmp_path, student_tokenizer, teacher_tokenizer
):
    train = prepare_cross_tokenizer_dataset(texts_dataset(4), student_tokenizer, text_column=TEXT_COLUMN)
    trainer = trainer_for(tmp_path, student_tokenizer, teacher_tokenizer, train)
    batch = first_batch(trainer, [0, 1, 2, 3])
    batch["labels"][:, :4] = -100  # a prompt of 4 tokens
    model = trainer.model
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def kd_loss(student_logits, inputs):
        from hf_distill.batch import DistillationBatch, TargetKind
        from hf_distill.terms.logits import StudentView

        distill = DistillationBatch.from_inputs(inputs)
        target = trainer.teacher_source(distill, {})
        assert target.kind is TargetKind.CROSS_TOKENIZER
        loss, _ = trainer.logit_terms(StudentView(None, logits=student_logits), target, distill)
        return loss, target

    base, target = kd_loss(logits, batch)
    # Position t predicts token t + 1: positions 0..2 predict masked labels, so changing them changes nothing.
    noisy = logits.clone()
    noisy[:, :3] += torch.randn_like(noisy[:, :3]) * 5
    assert kd_loss(noisy, batch)[0].item() == pytest.approx(base.item(), abs=1e-6)
    noisy = logits.clone()
    noisy[:, 5] += torch.randn_like(noisy[:, 5]) * 5
    assert abs(kd_loss(noisy, batch)[0].item() - base.item()) > 1e-4
    # Left padding: the teacher's rows land on the same tokens.
    student_tokenizer.padding_side = "left"
    try:
        left = DistillationTrainer(
            model=model,
            teacher_model=trainer.teacher,
            args=make_args(tmp_path),
            train_dataset=train,
            data_collator=DataCollatorForLanguageModeling(student_tokenizer, mlm=False),
            processing_class=student_tokenizer,
            teacher_processing_class=teacher_tokenizer,
        )
        left_batch = first_batch(left, [0, 1, 2, 3])
    finally:
        student_tokenizer.padding_side = "right"
    assert not torch.equal(left_batch["attention_mask"], batch["attention_mask"])
    from hf_distill.batch import DistillationBatch

    left_target = left.teacher_source(DistillationBatch.from_inputs(left_batch), {})
    for row in range(4):
        right_keep, left_keep = batch["attention_mask"][row].bool(), left_batch["attention_mask"][row].bool()
        torch.testing.assert_close(
            left_target.aligned.log_p[row][left_keep], target.aligned.log_p[row][right_keep]
        )
        assert torch.equal(
            left_target.aligned.matched[row][left_keep], target.aligned.matched[row][right_keep]
        )


def test_a_cache_at_another_temperature_or_cached_twice_is_refused(
    tmp_path, student_tokenizer, teacher_tokenizer
):
    teacher = tiny_gpt2(len(teacher_tokenizer), seed=1)
    rows = cached_rows(teacher, teacher_tokenizer, student_tokenizer, top_k=8, n=4)  # at temperature 2.0
    trainer = trainer_for(tmp_path, student_tokenizer, teacher_tokenizer, rows, teacher=None, temperature=3.0)
    with pytest.raises(
        ValueError,
        match="cross-tokenizer cache was computed at temperature 2.0, but training uses temperature=3.0",
    ):
        trainer.compute_loss(trainer.model, first_batch(trainer, [0, 1]))
    with pytest.raises(ValueError, match="already has cross-tokenizer cache columns"):
        cache_teacher_outputs(teacher, rows, teacher_tokenizer=teacher_tokenizer, top_k=8, temperature=2.0)
