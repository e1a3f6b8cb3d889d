"""Cached teacher outputs: the cache columns, and training from a cache (the top-k loss is in
``tests/losses/test_topk.py``)."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset, load_from_disk
from transformers import DataCollatorWithPadding

from hf_distill import DistillationTrainer
from hf_distill.cache.build import (
    INPUT_HASH,
    TAIL_LOGIT,
    TEACHER_LOGITS,
    TOPK_INDICES,
    TOPK_LOGITS,
    cache_teacher_outputs,
    input_hash,
)
from hf_distill.cache.collator import TeacherCacheCollator
from hf_distill.losses.topk import topk_teacher
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier, tiny_bert_tagger, tiny_gpt2
from tests.helpers.training import classification_rows, lm_dataset, make_args

# ---- the top-k loss -----------------------------------------------------------------------------------------


# ---- building the cache -------------------------------------------------------------------------------------


def test_classification_cache_holds_the_teachers_logits_and_round_trips(tmp_path, wordpiece_tokenizer):
    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    cached = cache_teacher_outputs(teacher, dataset, batch_size=5)
    assert {TEACHER_LOGITS, INPUT_HASH} <= set(cached.column_names)
    with torch.no_grad():
        for i in (0, 7):
            row = dataset[i]
            want = teacher(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(torch.tensor(cached[i][TEACHER_LOGITS]), want, rtol=1e-5, atol=1e-5)
    cached.save_to_disk(str(tmp_path / "cache"))
    assert load_from_disk(str(tmp_path / "cache"))[3][TEACHER_LOGITS] == cached[3][TEACHER_LOGITS]


def test_token_classification_cache_is_cut_to_each_rows_length():
    teacher = tiny_bert_tagger(seed=1)
    rows = [list(range(5, 5 + n)) for n in (4, 9, 6)]
    cached = cache_teacher_outputs(teacher, Dataset.from_dict({"input_ids": rows}), batch_size=3)
    assert [len(r) for r in cached[TEACHER_LOGITS]] == [4, 9, 6]
    with torch.no_grad():
        alone = teacher(input_ids=torch.tensor([rows[0]])).logits[0]
    torch.testing.assert_close(torch.tensor(cached[0][TEACHER_LOGITS]), alone, rtol=1e-5, atol=1e-5)


def test_causal_lm_cache_keeps_topk_and_tail():
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=6)
    cached = cache_teacher_outputs(teacher, dataset, top_k=4, temperature=2.0, batch_size=4)
    row = cached[1]
    assert len(row[TOPK_LOGITS]) == len(row[TAIL_LOGIT]) == 16 and len(row[TOPK_LOGITS][0]) == 4
    # Right padding does not change a causal LM's outputs at the attended positions.
    attended = sum(dataset[1]["attention_mask"])
    with torch.no_grad():
        logits = teacher(input_ids=torch.tensor([dataset[1]["input_ids"][:attended]])).logits[0]
    values, indices, tail = topk_teacher(logits, 4, temperature=2.0)
    torch.testing.assert_close(torch.tensor(row[TOPK_LOGITS][:attended]), values, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.tensor(row[TOPK_INDICES][:attended]).long(), indices)
    torch.testing.assert_close(torch.tensor(row[TAIL_LOGIT][:attended]), tail, rtol=1e-5, atol=1e-5)


def test_input_hash_ignores_padding():
    assert input_hash([5, 6, 7, 0, 0], [1, 1, 1, 0, 0]) == input_hash([5, 6, 7])
    assert input_hash([5, 6, 7]) != input_hash([5, 7, 6])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"top_k": None}, "top_k=None: a causal LM's full logits"),
        ({"top_k": 4, "task": "seq2seq"}, "task='seq2seq': the teacher cache supports"),
        ({"top_k": 4, "temperature": 0}, "temperature must be > 0"),
        ({"top_k": 4, "batch_size": 0}, "batch_size must be >= 1"),
    ],
)
def test_cache_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cache_teacher_outputs(tiny_gpt2(), lm_dataset(n=2), **kwargs)


def test_cache_errors_on_data(wordpiece_tokenizer):
    with pytest.raises(ValueError, match="has no `input_ids` column"):
        cache_teacher_outputs(tiny_gpt2(), Dataset.from_dict({"text": ["a"]}), top_k=2)
    with pytest.raises(ValueError, match="The dataset is empty"):
        cache_teacher_outputs(tiny_gpt2(), Dataset.from_dict({"input_ids": []}), top_k=2)
    with pytest.raises(ValueError, match="top_k=3 was given for a sequence_classification teacher"):
        cache_teacher_outputs(tiny_bert_classifier(), classification_rows(wordpiece_tokenizer), top_k=3)
    cached = cache_teacher_outputs(tiny_gpt2(), lm_dataset(n=2), top_k=2)
    with pytest.raises(ValueError, match="already has teacher cache columns"):
        cache_teacher_outputs(tiny_gpt2(), cached, top_k=2)


# ---- training from the cache --------------------------------------------------------------------------------


def _train(tmp_path, student, teacher, dataset, name, tokenizer=None, **kw):
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path / name, **{"max_steps": 3, "per_device_train_batch_size": 4, **kw}),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    return trainer, [log for log in trainer.state.log_history if "loss_kd" in log]


@pytest.mark.parametrize("keep_teacher", [True, False])
def test_cached_full_logits_train_exactly_like_the_live_teacher(tmp_path, wordpiece_tokenizer, keep_teacher):
    """keep_teacher=False: with every batch cached, no teacher is passed (or loaded) at all."""
    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    with torch.no_grad():  # a confident teacher, so the KD term is far above float rounding
        teacher.classifier.weight.mul_(50.0)
    cached = cache_teacher_outputs(teacher, dataset)
    live_student, cached_student = (
        tiny_bert_classifier(seed=2, hidden=16),
        tiny_bert_classifier(seed=2, hidden=16),
    )
    _, live_logs = _train(tmp_path, live_student, teacher, dataset, "live", wordpiece_tokenizer)
    cache_teacher = teacher if keep_teacher else None
    trainer, cached_logs = _train(
        tmp_path, cached_student, cache_teacher, cached, "cached", wordpiece_tokenizer
    )
    assert (trainer.teacher is None) == (not keep_teacher)
    assert cached_logs[0]["loss_kd"] > 0.01
    assert [x["loss_kd"] for x in cached_logs] == pytest.approx([x["loss_kd"] for x in live_logs], rel=1e-4)
    for a, b in zip(cached_student.parameters(), live_student.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    trainer.save_model(
        str(tmp_path / "saved")
    )  # with no teacher, the model card leaves its fields unmeasured
    assert (tmp_path / "saved" / "README.md").is_file()


def test_cached_teacher_is_not_run(tmp_path, wordpiece_tokenizer):
    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    cached = cache_teacher_outputs(teacher, dataset)
    calls = []
    teacher.register_forward_hook(lambda *_: calls.append(1))
    _train(tmp_path, tiny_bert_classifier(seed=2), teacher, cached, "run", wordpiece_tokenizer)
    assert calls == []


def test_token_classification_cache_is_padded_by_the_collator(tmp_path, wordpiece_tokenizer):
    from transformers import DataCollatorForTokenClassification

    texts = make_sentences(8, seed=5)
    encoded = wordpiece_tokenizer(texts, truncation=True, max_length=16)
    labels = [[i % 3 for i in range(len(ids))] for ids in encoded["input_ids"]]
    dataset = Dataset.from_dict({**encoded, "labels": labels})
    teacher = tiny_bert_tagger(seed=1)
    cached = cache_teacher_outputs(teacher, dataset)
    collator = DataCollatorForTokenClassification(wordpiece_tokenizer)
    live_student, cached_student = tiny_bert_tagger(seed=2), tiny_bert_tagger(seed=2)
    for student, data, name in ((live_student, dataset, "live"), (cached_student, cached, "cached")):
        DistillationTrainer(
            model=student, teacher_model=teacher, train_dataset=data, data_collator=collator,
            args=make_args(tmp_path / name, max_steps=2, per_device_train_batch_size=4),
        ).train()  # fmt: skip
    for a, b in zip(cached_student.parameters(), live_student.parameters()):
        # Batches are padded differently when the teacher ran: float rounding, which Adam's first steps amplify.
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("implementation", ["plain", "fused"])
@pytest.mark.parametrize("keep_teacher", [True, False])
def test_topk_cache_with_whole_vocabulary_trains_like_the_live_teacher(
    tmp_path, implementation, keep_teacher
):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=8)
    cached = cache_teacher_outputs(teacher, dataset, top_k=teacher.config.vocab_size, temperature=2.0)
    live, from_cache = tiny_gpt2(seed=2, hidden=16, layers=1), tiny_gpt2(seed=2, hidden=16, layers=1)
    kw = dict(temperature=2.0, kd_loss_implementation=implementation, kd_chunk_size=7)
    _, live_logs = _train(tmp_path, live, teacher, dataset, "live", **kw)
    # keep_teacher=False: the teacher is not even passed; the cache stands in for it.
    cache_teacher = teacher if keep_teacher else None
    _, cached_logs = _train(tmp_path, from_cache, cache_teacher, cached, "cached", **kw)
    assert [x["loss_kd"] for x in cached_logs] == pytest.approx([x["loss_kd"] for x in live_logs], rel=1e-4)


def test_small_topk_cache_gives_a_lower_bounded_kd_loss(tmp_path):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=8)
    cached = cache_teacher_outputs(teacher, dataset, top_k=5, temperature=2.0)
    kw = dict(temperature=2.0, max_steps=1, alpha=1.0)
    _, live_logs = _train(tmp_path, tiny_gpt2(seed=2, hidden=16, layers=1), teacher, dataset, "live", **kw)
    _, cached_logs = _train(tmp_path, tiny_gpt2(seed=2, hidden=16, layers=1), teacher, cached, "cached", **kw)
    assert 0 < cached_logs[0]["loss_kd"] <= live_logs[0]["loss_kd"]


def test_error_cache_from_other_data(tmp_path, wordpiece_tokenizer):
    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    cached = cache_teacher_outputs(teacher, dataset)
    other = classification_rows(wordpiece_tokenizer, n=12).map(lambda r: {"input_ids": r["input_ids"][::-1]})
    mixed = other.add_column(TEACHER_LOGITS, cached[TEACHER_LOGITS]).add_column(
        INPUT_HASH, cached[INPUT_HASH]
    )
    with pytest.raises(ValueError, match="differ from those the teacher cache was computed on"):
        _train(tmp_path, tiny_bert_classifier(seed=2), teacher, mixed, "run", wordpiece_tokenizer)


def test_error_cache_at_another_temperature(tmp_path):
    teacher, dataset = tiny_gpt2(seed=1), lm_dataset(n=8)
    cached = cache_teacher_outputs(teacher, dataset, top_k=5, temperature=2.0)
    with pytest.raises(ValueError, match="computed at temperature 2.0, but training uses temperature=1.0"):
        _train(tmp_path, tiny_gpt2(seed=2), teacher, cached, "run", temperature=1.0)


def test_error_cache_with_hidden_state_matching(tmp_path, wordpiece_tokenizer):
    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    cached = cache_teacher_outputs(teacher, dataset)
    with pytest.raises(ValueError, match="cached teacher outputs, which hold no teacher hidden states"):
        _train(
            tmp_path,
            tiny_bert_classifier(seed=2),
            teacher,
            cached,
            "run",
            wordpiece_tokenizer,
            hidden_state_weight=1.0,
        )


def test_errors_without_teacher_model(tmp_path, wordpiece_tokenizer):
    teacher, dataset = tiny_bert_classifier(seed=1), classification_rows(wordpiece_tokenizer)
    cached = cache_teacher_outputs(teacher, dataset)
    student = tiny_bert_classifier(seed=2)

    def build(**kwargs):
        args = make_args(tmp_path, **kwargs.pop("args", {}))
        return DistillationTrainer(model=student, teacher_model=None, args=args, **kwargs)

    with pytest.raises(ValueError, match="needs a `teacher_model`.*or a train_dataset that carries"):
        build(train_dataset=dataset)
    with pytest.raises(ValueError, match="the eval_dataset does not, so evaluation would have no teacher"):
        build(train_dataset=cached, eval_dataset=dataset)
    with pytest.raises(
        ValueError,
        match="cached teacher outputs, which hold no teacher hidden states, attention maps .*no teacher_model is given",
    ):
        build(train_dataset=cached, args={"attention_weight": 1.0})
    # A batch without cache columns reaching a teacherless trainer (e.g. evaluate(other_dataset)).
    trainer = build(train_dataset=cached)
    batch = DataCollatorWithPadding(wordpiece_tokenizer)([dataset[i] for i in range(2)])
    with pytest.raises(
        ValueError, match="carries no cached teacher outputs and the trainer has no teacher_model"
    ):
        trainer.compute_loss(student, batch)


def test_error_cache_of_another_label_set(tmp_path, wordpiece_tokenizer):
    dataset = classification_rows(wordpiece_tokenizer)
    cached = cache_teacher_outputs(tiny_bert_classifier(seed=1, num_labels=3), dataset)
    trainer = DistillationTrainer(
        model=tiny_bert_classifier(seed=2, num_labels=2),
        teacher_model=None,
        args=make_args(tmp_path),
        train_dataset=cached,
    )
    batch = TeacherCacheCollator(DataCollatorWithPadding(wordpiece_tokenizer))([cached[i] for i in range(2)])
    with pytest.raises(ValueError, match="cached teacher logits have 3 classes but the student has 2"):
        trainer.compute_loss(trainer.model, batch)
