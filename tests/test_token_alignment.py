"""Aligning two tokenizations of one text, the vocabulary map, and GPT-2's offline tokenizer."""

from __future__ import annotations

import pytest

from hf_distill.token_alignment import (
    align_positions,
    byte_ends,
    encode_for_alignment,
    position_keys,
    require_offsets,
    token_bytes,
    vocabulary_map,
)
from tests.helpers.xtok import TEXTS, byte_level_tokenizer, metaspace_tokenizer


@pytest.fixture(scope="module")
def teacher_tokenizer():
    return byte_level_tokenizer()


@pytest.fixture(scope="module")
def student_tokenizer():
    return metaspace_tokenizer()


def test_position_keys_by_hand():
    # <s> "ab" "c" "€"(2 byte tokens) </s> over the text "abc€".
    ends = [0, 2, 3, 4, 4, 0]
    special = [True, False, False, False, False, True]
    assert position_keys(ends, special) == [
        (0, True, 0),
        (2, False, 0),
        (3, False, 0),
        (4, False, 1),  # the first half of the character: not a full prefix
        (4, False, 0),
        (4, True, 0),  # EOS takes the end of the text before it
    ]


def test_bos_in_one_tokenizer_only_matches_nothing_but_text_positions_still_match():
    # Teacher: <s> "ab" "cd"; student: "a" "b" "cd" (no BOS).
    index, matched = align_positions([1, 2, 4], [False] * 3, [0, 2, 4], [True, False, False])
    assert index.tolist() == [0, 1, 2] and matched.tolist() == [False, True, True]
    # Student BOS the teacher lacks: no teacher position ends at or before offset 0, so it pairs with none.
    index, matched = align_positions([0, 2, 4], [True, False, False], [2, 4], [False, False])
    assert index.tolist() == [-1, 0, 1] and matched.tolist() == [False, True, True]


def test_pieces_of_one_character_end_at_their_own_bytes():
    # "a€" ("€" is 3 bytes): student pieces of 2 + 1 bytes, teacher pieces of 1 + 2 bytes, all with the
    # character's span (1, 2). Only the pieces that end at the same byte are matched: the last ones.
    text = "a€"
    student = byte_ends(text, [1, 2, 2], ["a", "âĤ", "¬"], [False] * 3, byte_level=True)
    teacher = byte_ends(text, [1, 2, 2], ["a", "â", "Ĥ¬"], [False] * 3, byte_level=True)
    # SentencePiece byte-fallback pieces count one byte each.
    assert byte_ends(text, [1, 2, 2, 2], ["a", "<0xE2>", "<0x82>", "<0xAC>"], [False] * 4, False) == [
        1,
        2,
        3,
        4,
    ]
    assert student == [1, 3, 4] and teacher == [1, 2, 4]
    index, matched = align_positions(student, [False] * 3, teacher, [False] * 3)
    assert matched.tolist() == [True, False, True]
    assert index.tolist() == [0, 1, 2]  # the unmatched piece pairs with the teacher's last earlier prefix


def _encode(tokenizer, text):
    encoded = encode_for_alignment(tokenizer, [text])
    return encoded["input_ids"][0], encoded["ends"][0], [bool(s) for s in encoded["special"][0]]


def _spelled(tokenizer, ids, byte_level):
    special = set(tokenizer.all_special_ids)
    return b"".join(
        token_bytes(t, byte_level)[0]
        for i, t in zip(ids, tokenizer.convert_ids_to_tokens(ids))
        if i not in special
    )


@pytest.mark.parametrize("text", TEXTS[:3] + ["x", " ab  cd\n\n€€ ü"])
def test_matched_positions_see_the_same_text(text, teacher_tokenizer, student_tokenizer):
    s_ids, s_ends, s_special = _encode(student_tokenizer, text)
    t_ids, t_ends, t_special = _encode(teacher_tokenizer, text)
    assert t_special[0] and not s_special[0]  # BOS in the teacher's tokenization only
    index, matched = align_positions(s_ends, s_special, t_ends, t_special)
    student_keys, teacher_keys = position_keys(s_ends, s_special), position_keys(t_ends, t_special)
    assert matched.any()
    for t, (j, same) in enumerate(zip(index, matched)):
        if same:
            assert student_keys[t] == teacher_keys[j]
            # The two prefixes spell the same bytes of the text (the teacher's without its BOS).
            s_prefix = _spelled(student_tokenizer, s_ids[: t + 1], byte_level=False)
            t_prefix = _spelled(teacher_tokenizer, t_ids[: j + 1], byte_level=True)
            assert s_prefix == t_prefix == text.encode()[: student_keys[t][0]]
        else:
            assert j == -1 or teacher_keys[j][0] <= student_keys[t][0]
    # The last text token ends at the end of the text on both sides, so it always matches.
    last = max(i for i, s in enumerate(s_special) if not s)
    assert matched[last]


def test_vocabulary_map_joins_metaspace_and_byte_level_spellings(teacher_tokenizer, student_tokenizer):
    mapping = vocabulary_map(teacher_tokenizer, student_tokenizer)
    assert mapping.shape == (len(teacher_tokenizer),)
    teacher_vocab, student_vocab = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    pairs = [(t, s) for t, s in enumerate(mapping.tolist()) if s >= 0]
    assert len({s for _, s in pairs}) == len(pairs)  # one-to-one
    # "Ġthe" (byte-level) and "▁the" (SentencePiece) spell the same bytes " the".
    assert "Ġthe" in teacher_vocab and "▁the" in student_vocab
    assert mapping[teacher_vocab["Ġthe"]] == student_vocab["▁the"]
    # Every pair spells the same bytes; eos maps to eos.
    t_tokens = {i: t for t, i in teacher_vocab.items()}
    s_tokens = {i: t for t, i in student_vocab.items()}
    specials = {teacher_tokenizer.eos_token_id}
    for t, s in pairs:
        if t in specials:
            assert s == student_tokenizer.eos_token_id
            continue
        assert token_bytes(t_tokens[t], True)[0] == token_bytes(s_tokens[s], False)[0]
    # A lone space: the student's "▁" piece when it has one, else its byte-fallback piece <0x20>.
    assert mapping[teacher_vocab["Ġ"]] == student_vocab.get("▁", student_vocab["<0x20>"])


def test_vocabulary_map_of_one_tokenizer_is_the_identity(teacher_tokenizer):
    mapping = vocabulary_map(teacher_tokenizer, teacher_tokenizer)
    assert mapping.tolist() == list(range(len(teacher_tokenizer)))


def test_a_slow_tokenizer_is_refused_with_the_fix():
    class Slow:
        is_fast = False

    with pytest.raises(ValueError, match="not a fast tokenizer.*offsets.*use_fast=True"):
        require_offsets(Slow(), "student")
