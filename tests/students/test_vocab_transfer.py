"""A student cut from the teacher's layers, moved to another tokenizer: rows copied or averaged from pieces."""

from __future__ import annotations

import pytest
import torch

from hf_distill.students.build import gpt2_student_for, student_from_teacher
from hf_distill.token_alignment import token_bytes
from tests.helpers.xtok import byte_level_tokenizer, metaspace_tokenizer, tiny_gpt2


@pytest.fixture(scope="module")
def tokenizers():
    return byte_level_tokenizer(), metaspace_tokenizer()


def expected_row(old_rows, new_token, new_id, teacher_tokenizer, new_tokenizer):
    """Written out: the teacher row of the same bytes, else the mean of the teacher's pieces of the text."""
    if new_id == new_tokenizer.eos_token_id:
        return old_rows[teacher_tokenizer.eos_token_id]
    spelled, _ = token_bytes(new_token, byte_level=False)
    for token, index in teacher_tokenizer.get_vocab().items():
        if (
            index not in teacher_tokenizer.all_special_ids
            and token_bytes(token, byte_level=True)[0] == spelled
        ):
            return old_rows[index]
    try:
        ids = teacher_tokenizer(spelled.decode("utf-8"), add_special_tokens=False)["input_ids"]
    except UnicodeDecodeError:
        singles = {token_bytes(t, True)[0]: i for t, i in teacher_tokenizer.get_vocab().items()}
        ids = [singles[bytes([b])] for b in spelled]
    return old_rows[ids].mean(0)


@pytest.mark.parametrize("tied", [True, False])
def test_student_from_teacher_with_another_tokenizer_builds_rows_from_the_teachers(tokenizers, tied):
    teacher_tokenizer, new_tokenizer = tokenizers
    teacher = tiny_gpt2(len(teacher_tokenizer), layers=2, tied=tied)
    student = student_from_teacher(
        teacher, num_layers=1, tokenizer=new_tokenizer, teacher_tokenizer=teacher_tokenizer
    )
    assert student.config.vocab_size == len(new_tokenizer)
    assert student.get_input_embeddings().weight.shape == (len(new_tokenizer), 16)
    assert student.get_output_embeddings().weight.shape == (len(new_tokenizer), 16)
    assert (student.get_output_embeddings().weight is student.get_input_embeddings().weight) == tied
    assert student.config.eos_token_id == new_tokenizer.eos_token_id
    assert student.config.distillation["tokenizer"] == "tiny-spm"
    old_in = teacher.get_input_embeddings().weight.detach()
    old_out = teacher.get_output_embeddings().weight.detach()
    new_in = student.get_input_embeddings().weight.detach()
    new_out = student.get_output_embeddings().weight.detach()
    tokens = new_tokenizer.convert_ids_to_tokens(list(range(len(new_tokenizer))))
    for new_id in [0, 1, 33, 200, 260, 300, len(new_tokenizer) - 1]:
        want = expected_row(old_in, tokens[new_id], new_id, teacher_tokenizer, new_tokenizer)
        torch.testing.assert_close(new_in[new_id], want)
        want = expected_row(old_out, tokens[new_id], new_id, teacher_tokenizer, new_tokenizer)
        torch.testing.assert_close(new_out[new_id], want)
    # The kept blocks are the teacher's: same hidden states on the teacher's own ids is not comparable across
    # vocabularies, but the first block's weights are copied unchanged.
    torch.testing.assert_close(
        student.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[0].mlp.c_fc.weight
    )
    ids = torch.tensor([new_tokenizer("the plot was great")["input_ids"]])
    assert torch.isfinite(student(input_ids=ids).logits).all()


def test_gpt2_student_for_with_its_own_tokenizer(tokenizers):
    teacher_tokenizer, new_tokenizer = tokenizers
    teacher = tiny_gpt2(len(teacher_tokenizer), hidden=32)
    student = gpt2_student_for(teacher, n_layer=1, tokenizer=new_tokenizer)
    assert student.config.vocab_size == len(new_tokenizer) != teacher.config.vocab_size
    assert student.config.n_embd == 32  # sizes from the teacher
    assert student.config.eos_token_id == new_tokenizer.eos_token_id
    assert "tiny-spm" in student.config.distillation["shared"]


def test_each_tokenizer_is_read_once_not_once_per_token(tokenizers, monkeypatch):
    """``is_byte_level`` parses a tokenizer's whole serialised form; called per teacher token, moving a
    SmolLM2 cut to GPT-2's vocabulary (49,152 teacher tokens) took longer than ten minutes."""
    from hf_distill.students import vocab_transfer

    calls = []
    real = vocab_transfer.is_byte_level
    monkeypatch.setattr(vocab_transfer, "is_byte_level", lambda t: calls.append(t) or real(t))
    teacher_tokenizer, new_tokenizer = tokenizers
    pieces = vocab_transfer.piece_ids(new_tokenizer, teacher_tokenizer)
    assert len(pieces) == len(new_tokenizer) and len(teacher_tokenizer) > 2
    assert len(calls) == 2 and {id(t) for t in calls} == {id(teacher_tokenizer), id(new_tokenizer)}
