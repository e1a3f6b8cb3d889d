"""Two tokenizations of one text, side by side: which positions match and which tokens both vocabularies share.

Positions. A causal LM's position ``t`` predicts the next token from the prefix that ends where token ``t``
ends. So a student position and a teacher position see the same text exactly when their tokens end at the
same place in it. Fast tokenizers give character offsets (``offset_mapping``) into the same Python string, so
leading spaces and ``Ġ`` / ``▁`` spellings do not matter, only where each prefix ends; a character cut into
several byte tokens gives them all its span, so :func:`byte_ends` turns the ends into UTF-8 byte offsets,
each piece ending as many bytes short of the character's end as the pieces after it hold. Each position gets
a key ``(end, special, k)``:

- ``end``: the token's byte end; a special token (BOS, EOS, added with offsets ``(0, 0)``) takes the end of
  the text before it (0 at the start), so a BOS present in one tokenizer only matches nothing, and the first
  text tokens still match;
- ``special``: whether it is a special token (a BOS prefix and a text prefix are different contexts);
- ``k``: how many later tokens share that end and kind (0 but for empty tokens), so repeated keys pair in
  order.

:func:`align_positions` pairs each student position with the teacher position of the same key (matched),
else with the last teacher position whose prefix ends at or before the student's (for the ULD term), else
with none (-1: a student BOS the teacher lacks, padding).

Vocabularies. :func:`vocabulary_map` gives each teacher id the student id whose token spells the same bytes
(byte-level BPE ``Ġ``/``Ċ`` alphabets and SentencePiece ``▁`` / ``<0xNN>`` pieces are both turned into
bytes first), or -1. Special tokens match by role (eos with eos, bos with bos) or by equal content. The map is
built once per pair of tokenizers (keyed by their fingerprints) and kept.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

TEXT_COLUMN, OFFSETS_COLUMN = "distill_text", "distill_offsets"
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def require_offsets(tokenizer: Any, who: str) -> None:
    """Refuses a tokenizer that cannot give character offsets (Python "slow" tokenizers)."""
    if tokenizer is None:
        return
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"The {who} tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer, so it gives no character "
            "offsets (return_offsets_mapping), and cross-tokenizer distillation aligns the two tokenizations by "
            "offsets. Load it with AutoTokenizer.from_pretrained(..., use_fast=True), or convert it with "
            "transformers' convert_slow_tokenizer."
        )


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A 16-hex-digit hash of the tokenizer's whole definition (vocabulary, merges, normaliser, special tokens),
    so a cache made with one tokenizer is told apart from any other."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    specials = json.dumps(sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", [])))
    return hashlib.blake2b((body + specials).encode(), digest_size=8).hexdigest()


# ---- vocabularies ----------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    return '"ByteLevel"' in json.dumps(json.loads(backend.to_str()).get("decoder"))


def token_bytes(token: str, byte_level: bool) -> tuple[bytes, bool]:
    """The bytes a vocabulary entry spells and whether it is a byte-fallback piece (``<0xNN>``)."""
    if byte_level:
        decoder = _byte_decoder()
        if all(c in decoder for c in token):
            return bytes(decoder[c] for c in token), False
        return token.encode("utf-8"), False
    match = _BYTE_PIECE.match(token)
    if match:
        return bytes([int(match.group(1), 16)]), True
    return token.replace("▁", " ").encode("utf-8"), False


def _keys_by_id(tokenizer: Any, size: int) -> dict[Any, int]:
    """``key -> id`` for ids below ``size``: text tokens keyed by their bytes (a normal piece wins over a
    byte-fallback piece of the same bytes, then the lower id), special tokens by role or content."""
    byte_level = is_byte_level(tokenizer)
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    # eos first: a tokenizer that pads with its eos token keeps that token's eos role. Padding is never
    # predicted, so "pad" is not a role that maps.
    roles: dict[Any, str] = {}
    for role in ("eos", "bos", "unk"):
        roles.setdefault(getattr(tokenizer, f"{role}_token_id", None), role)
    chosen: dict[Any, tuple[tuple[int, int], int]] = {}
    for token, index in tokenizer.get_vocab().items():
        if index >= size:
            continue
        if index in special_ids:
            key, rank = ("special", roles.get(index) or token), (0, index)
        else:
            spelled, fallback = token_bytes(token, byte_level)
            key, rank = spelled, (int(fallback), index)
        if key not in chosen or rank < chosen[key][0]:
            chosen[key] = (rank, index)
    return {key: index for key, (_, index) in chosen.items()}


# Built once per pair of tokenizers and output sizes and kept for the process: building walks both whole
# vocabularies in Python (its cost: benchmarks/README.md), and every trainer of a run asks for the same map.
_MAPS: dict[tuple[str, str, int, int], np.ndarray] = {}


def _build_map(teacher: Any, student: Any, sizes: tuple[int, int]) -> np.ndarray:
    teacher_keys, student_keys = _keys_by_id(teacher, sizes[0]), _keys_by_id(student, sizes[1])
    mapping = np.full(sizes[0], -1, dtype=np.int64)
    for key, teacher_id in teacher_keys.items():
        student_id = student_keys.get(key)
        if student_id is not None:
            mapping[teacher_id] = student_id
    return mapping


def vocabulary_map(
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    teacher_size: int | None = None,
    student_size: int | None = None,
) -> torch.Tensor:
    """For each teacher id the student id of the same string, or -1 (see module docstring).

    Text tokens match by the bytes they spell (so ``Ġ`` / ``▁`` spellings compare equal), special tokens by
    role (eos with eos). The map is one-to-one: no two teacher ids map to the same student id. It is built
    once per pair of tokenizers and sizes and kept for the process.

    Args:
        teacher_tokenizer (PreTrainedTokenizerBase): the teacher's tokenizer.
        student_tokenizer (PreTrainedTokenizerBase): the student's tokenizer.
        teacher_size (int | None): the teacher model's output rows ``V_t``; None means
            ``len(teacher_tokenizer)``. Ids at or beyond it are left out.
        student_size (int | None): the student model's output rows; None means ``len(student_tokenizer)``.
            Ids at or beyond it are never mapped to.

    Returns:
        Tensor: ``(V_t,)`` int64, a student id or -1 for each teacher id (a copy: safe to modify).
    """
    sizes = (teacher_size or len(teacher_tokenizer), student_size or len(student_tokenizer))
    key = (tokenizer_fingerprint(teacher_tokenizer), tokenizer_fingerprint(student_tokenizer), *sizes)
    if key not in _MAPS:
        _MAPS[key] = _build_map(teacher_tokenizer, student_tokenizer, sizes)
    return torch.from_numpy(_MAPS[key].copy())


def map_ids(mapping: torch.Tensor, teacher_ids: torch.Tensor) -> torch.Tensor:
    """Student ids of ``teacher_ids`` (any shape); ids beyond the map (a teacher's padding rows) give -1."""
    inside = teacher_ids < mapping.shape[0]
    found = mapping.to(teacher_ids.device)[teacher_ids.long().clamp(0, mapping.shape[0] - 1)]
    return torch.where(inside & (teacher_ids >= 0), found, -1)


# ---- positions -------------------------------------------------------------------------------------------


def position_keys(ends: Sequence[int], special: Sequence[bool]) -> list[tuple[int, bool, int]]:
    """The key ``(end, special, k)`` of each position of one row (see the module docstring).

    ``ends``: each token's end character offset; ``special``: whether each token is a special token.
    """
    resolved, last_end = [], 0
    for end, is_special in zip(ends, special):
        if not is_special:
            last_end = max(last_end, int(end))
        resolved.append((last_end if is_special else int(end), bool(is_special)))
    keys, later = [], {}
    for key in reversed(resolved):
        rank = later.get(key, 0)
        later[key] = rank + 1
        keys.append((*key, rank))
    return keys[::-1]


def byte_ends(
    text: str, char_ends: Sequence[int], tokens: Sequence[str], special: Sequence[bool], byte_level: bool
) -> list[int]:
    """The UTF-8 byte offset where each token's prefix ends in ``text`` (see the module docstring).

    ``char_ends``: the tokens' character end offsets into ``text``; ``tokens``: their vocabulary strings (for
    the byte lengths of pieces of one character); ``special``: special-token flags (their ends are not used).
    """
    byte_at = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text], dtype=np.int64)])
    ends = [int(byte_at[min(int(e), len(text))]) for e in char_ends]
    for i in range(len(ends) - 2, -1, -1):
        if not special[i] and not special[i + 1] and int(char_ends[i]) == int(char_ends[i + 1]):
            ends[i] = ends[i + 1] - len(token_bytes(tokens[i + 1], byte_level)[0])
    return ends


def align_positions(
    student_ends: Sequence[int],
    student_special: Sequence[bool],
    teacher_ends: Sequence[int],
    teacher_special: Sequence[bool],
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs the positions of one row: ``(teacher_index (T_s,), matched (T_s,))``.

    ``teacher_index[t]``: the teacher position of the same key (``matched[t]`` True), else the last teacher
    position whose key end is at or before the student's, else -1.
    """
    student_keys = position_keys(student_ends, student_special)
    teacher_keys = position_keys(teacher_ends, teacher_special)
    by_key = {key: j for j, key in enumerate(teacher_keys)}
    teacher_key_ends = np.asarray([k[0] for k in teacher_keys], dtype=np.int64)
    # Key ends never decrease along a row, so the last one at or before an offset is a binary search.
    index = np.full(len(student_keys), -1, dtype=np.int64)
    matched = np.zeros(len(student_keys), dtype=bool)
    for t, key in enumerate(student_keys):
        j = by_key.get(key)
        if j is not None:
            index[t], matched[t] = j, True
        else:
            index[t] = int(np.searchsorted(teacher_key_ends, key[0], side="right")) - 1
    return index, matched


def encode_for_alignment(tokenizer: Any, texts: Sequence[str]) -> dict[str, list[list[int]]]:
    """Each text tokenized with the tokenizer's own special tokens: ``input_ids``, ``attention_mask``, the
    tokens' byte ends (:func:`byte_ends`) as ``ends`` and their special flags as ``special``."""
    encoded = tokenizer(list(texts), return_offsets_mapping=True, return_special_tokens_mask=True)
    byte_level = is_byte_level(tokenizer)
    ends = []
    for text, ids, offsets, special in zip(
        texts, encoded["input_ids"], encoded["offset_mapping"], encoded["special_tokens_mask"]
    ):
        tokens = tokenizer.convert_ids_to_tokens(ids)
        ends.append(byte_ends(text, [e for _, e in offsets], tokens, [bool(x) for x in special], byte_level))
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "ends": ends,
        "special": [[int(x) for x in row] for row in encoded["special_tokens_mask"]],
    }


def tokenize_with_offsets(
    texts: Sequence[str], tokenizer: Any, max_length: int | None = None
) -> dict[str, list[list[Any]]]:
    """``input_ids``, ``attention_mask`` and ``offset_mapping`` of each text (with the tokenizer's own special
    tokens), refusing a tokenizer without offsets."""
    require_offsets(tokenizer, "given")
    return tokenizer(
        list(texts),
        return_offsets_mapping=True,
        truncation=max_length is not None,
        max_length=max_length,
    )


def prepare_cross_tokenizer_dataset(
    dataset: Any, tokenizer: Any, *, text_column: str = "text", max_length: int | None = None
) -> Any:
    """A ``datasets.Dataset`` of texts tokenized for a student whose teacher has another tokenizer.

    The text is kept whole beside the student's tokens, so a student truncated to ``max_length`` tokens still
    matches the teacher's positions on its prefix. Batch the result with
    ``DataCollatorForLanguageModeling(tokenizer, mlm=False)``, or add ``labels`` (-100 on a prompt) and use
    ``DataCollatorForSeq2Seq``.

    Args:
        dataset (Dataset): rows with a text column; other columns are kept (a cross-tokenizer teacher cache
            among them).
        tokenizer (PreTrainedTokenizerFast): the student's tokenizer; it must be fast, to give character
            offsets. Its own special tokens are added.
        text_column (str): the column of texts. Default ``"text"``.
        max_length (int | None): truncate the student's tokens to this many; None does not truncate.

    Returns:
        Dataset: ``dataset`` plus ``input_ids``, ``attention_mask``, ``distill_offsets`` (``(T, 2)`` per row:
        the student tokens' character offsets) and ``distill_text`` (the text the teacher tokenizes).

    Raises:
        ValueError: the dataset has no ``text_column``, or the tokenizer is not fast.
    """
    if text_column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no {text_column!r} column (it has {dataset.column_names}); cross-tokenizer "
            "distillation tokenizes the raw text with both tokenizers. Pass text_column=<the text column>."
        )

    def run(batch: dict[str, list]) -> dict[str, list]:
        encoded = tokenize_with_offsets(batch[text_column], tokenizer, max_length)
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            OFFSETS_COLUMN: [[list(pair) for pair in row] for row in encoded["offset_mapping"]],
            TEXT_COLUMN: list(batch[text_column]),
        }

    return dataset.map(run, batched=True)
