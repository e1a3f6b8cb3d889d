"""Distillation from a teacher with another tokenizer: its teacher source.

``DistillationTrainingArguments(cross_tokenizer_loss="aligned" | "uld")`` with ``processing_class`` = the
student's tokenizer and ``teacher_processing_class`` = the teacher's. Each batch carries the raw text
(``distill_text``) and the student tokens' character offsets (``distill_offsets``), as
:func:`hf_distill.token_alignment.prepare_cross_tokenizer_dataset` makes them; the trainer keeps those columns
and batches them with :class:`hf_distill.cache.collator.TeacherColumnsCollator`.

- :class:`CrossTokenizerTeacher` (a :class:`~hf_distill.teachers.sources.TeacherSource`): the teacher tokenizes the text itself and runs on it
  (live), or its cross-tokenizer cache is read from the batch (the teacher is then never loaded); either way
  its distribution at each teacher position (all ``V_t`` tokens live, the top-k and tail mass cached) is
  moved to the student's positions (:func:`hf_distill.token_alignment.align_positions`) and its token ids
  mapped to the student's vocabulary (:func:`hf_distill.token_alignment.vocabulary_map`).
- :class:`hf_distill.terms.cross_tokenizer.CrossTokenizerLogitTerms` (the logit term): ``alpha * kd + (1 - alpha) * task``, where ``kd`` is
  :func:`hf_distill.losses.cross_vocabulary.per_position_aligned` or ``per_position_uld`` on the student's
  positions (shifted like every causal LM loss: position ``t`` predicts token ``t + 1``), masked by the
  student's labels (prompt masking with -100 carries over, since the loss lives on the student's positions)
  and normalised by ``num_items_in_batch`` like the other terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.cache.build import (
    XTOK_ENDS,
    XTOK_FINGERPRINT,
    XTOK_SPECIAL,
    XTOK_TAIL_LOGIT,
    XTOK_TEMPERATURE,
    XTOK_TEXT_HASH,
    XTOK_TOKENIZER,
    XTOK_TOPK_INDICES,
    XTOK_TOPK_LOGITS,
    check_cached_temperature,
    text_hash,
)
from hf_distill.losses.cross_vocabulary import teacher_log_probs
from hf_distill.losses.fused.teacher_chunks import check_teacher_finite
from hf_distill.model_kind import logits_of, output_vocab_size
from hf_distill.token_alignment import (
    OFFSETS_COLUMN,
    TEXT_COLUMN,
    align_positions,
    byte_ends,
    encode_for_alignment,
    is_byte_level,
    map_ids,
    tokenizer_fingerprint,
    vocabulary_map,
)
from hf_distill.training.padding import pad_rows


@dataclass
class AlignedTeacher:
    """The teacher's distributions at its own positions, and which of them each student position takes.

    The teacher stays one row per teacher position (``P = B * T_t``, flattened): the student's positions point
    into it (``rows``) instead of receiving copies, so a row several student positions share is stored, and
    sorted by the ULD terms, once.

    ``teacher_log_p (P, k)``: log-probabilities at the training temperature of ``k`` teacher tokens (``k = V_t``
    live); ``teacher_log_rest (P,)``: log-mass of the others; ``teacher_student_ids``: the student id of each
    of the ``k`` tokens or -1, ``(k,)`` (one map for every row) or ``(P, k)``; ``rows (B, T_s)``: the teacher row
    of each student position (0 where ``valid`` is False), unshifted like the student's logits;
    ``matched (B, T_s)``: the prefixes end at the same offset; ``valid (B, T_s)``: a teacher position was paired
    at all.
    """

    teacher_log_p: torch.Tensor
    teacher_log_rest: torch.Tensor
    teacher_student_ids: torch.Tensor
    rows: torch.Tensor
    matched: torch.Tensor
    valid: torch.Tensor

    @property
    def log_p(self) -> torch.Tensor:
        """``(B, T_s, k)``: the teacher's log-probabilities at each student position (a copy)."""
        return self.teacher_log_p[self.rows]

    @property
    def log_rest(self) -> torch.Tensor:
        """``(B, T_s)``: the log-mass of the unlisted teacher tokens at each student position."""
        return self.teacher_log_rest[self.rows]

    @property
    def student_ids(self) -> torch.Tensor:
        """``(k,)`` or ``(B, T_s, k)``: the student id of each listed teacher token at each student position."""
        ids = self.teacher_student_ids
        return ids if ids.dim() == 1 else ids[self.rows]


@dataclass
class CrossTokenizerTarget(TeacherTarget):
    """A :class:`~hf_distill.batch.TeacherTarget` of kind ``CROSS_TOKENIZER``, its form ``aligned``."""

    aligned: AlignedTeacher | None = None


class CrossTokenizerTeacher:
    """The teacher source of cross-tokenizer distillation (see the module docstring).

    Args:
        teacher: the placed teacher model, or None when every batch carries a cross-tokenizer cache.
        teacher_tokenizer, student_tokenizer: fast tokenizers.
        temperature: the training temperature.
        teacher_rows, student_rows: the models' output sizes (the vocabulary map's range); default the
            tokenizers' lengths.
        check_finite: raise on NaN / inf teacher logits.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        teacher_tokenizer: Any,
        student_tokenizer: Any,
        *,
        temperature: float,
        teacher_rows: int | None = None,
        student_rows: int | None = None,
        check_finite: bool = True,
    ):
        self.teacher, self.teacher_tokenizer, self.temperature = teacher, teacher_tokenizer, temperature
        self.check_finite = check_finite
        self.vocab_map = vocabulary_map(teacher_tokenizer, student_tokenizer, teacher_rows, student_rows)
        self.fingerprint = tokenizer_fingerprint(teacher_tokenizer)
        self.student_tokenizer, self.student_byte_level = student_tokenizer, is_byte_level(student_tokenizer)
        self.student_special = set(getattr(student_tokenizer, "all_special_ids", []))

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> CrossTokenizerTarget:
        texts, offsets = self._text_and_offsets(batch)
        device = batch.model_inputs["input_ids"].device
        if XTOK_TOPK_LOGITS in batch.cache:
            log_p, log_rest, student_ids, ends, special = self._from_cache(batch, texts)
        elif self.teacher is not None:
            log_p, log_rest, student_ids, ends, special = self._from_teacher(batch, texts)
        else:
            raise ValueError(
                "This batch carries no cross-tokenizer teacher cache (xtok_teacher_* columns) and the trainer has "
                "no teacher_model: cache every dataset with cache_teacher_outputs(..., teacher_tokenizer=...), "
                "or pass teacher_model."
            )
        index, matched = self._align(batch, texts, offsets, ends, special)
        index, matched = index.to(device), matched.to(device)
        # Teacher positions flattened to rows; each student position points at its row (row 0 when unpaired).
        teacher_length = log_p.shape[1]
        offset = torch.arange(index.shape[0], device=device).unsqueeze(-1) * teacher_length
        aligned = AlignedTeacher(
            teacher_log_p=log_p.to(device).reshape(-1, log_p.shape[-1]),
            teacher_log_rest=log_rest.to(device).reshape(-1),
            teacher_student_ids=student_ids.to(device)
            if student_ids.dim() == 1
            else student_ids.to(device).reshape(-1, student_ids.shape[-1]),
            rows=torch.where(index >= 0, index + offset, 0),
            matched=matched,
            valid=index >= 0,
        )
        return CrossTokenizerTarget(TargetKind.CROSS_TOKENIZER, aligned=aligned)

    # ---- the two sources ------------------------------------------------------------------------------

    def _from_teacher(self, batch: DistillationBatch, texts: list[str]):
        encoded = encode_for_alignment(self.teacher_tokenizer, texts)
        device = batch.model_inputs["input_ids"].device
        inputs = {
            "input_ids": pad_rows(encoded["input_ids"], 0).to(device),
            "attention_mask": pad_rows(encoded["attention_mask"], 0).to(device),
        }
        with torch.no_grad():
            logits = logits_of(self.teacher(**inputs))
        if self.check_finite:
            check_teacher_finite(logits, batch.global_step)
        log_p, log_rest = teacher_log_probs(logits, None, self.temperature)
        ends, special = pad_rows(encoded["ends"], -1), pad_rows(encoded["special"], 0)
        ids = self.vocab_map
        if ids.shape[0] < log_p.shape[-1]:  # the teacher's head has padding rows beyond its tokenizer
            ids = torch.cat([ids, ids.new_full((log_p.shape[-1] - ids.shape[0],), -1)])
        return log_p, log_rest, ids[: log_p.shape[-1]], ends, special

    def _from_cache(self, batch: DistillationBatch, texts: list[str]):
        cache = batch.cache
        wrong = sorted({f for f in cache[XTOK_FINGERPRINT] if f != self.fingerprint})
        if wrong:
            raise ValueError(
                f"The cross-tokenizer cache was made with the teacher tokenizer {cache[XTOK_TOKENIZER][0]!r} "
                f"(fingerprint {wrong[0]}), but teacher_processing_class has fingerprint {self.fingerprint}: the "
                "cached token ids would be read with another vocabulary. Pass the tokenizer the cache was made "
                "with, or re-run cache_teacher_outputs with this one."
            )
        found = [text_hash(t) for t in texts]
        expected = [int(h) for h in torch.as_tensor(cache[XTOK_TEXT_HASH]).reshape(-1).tolist()]
        if found != expected:
            bad = sum(e != f for e, f in zip(expected, found))
            raise ValueError(
                f"{bad} of {len(found)} rows of this batch carry a text (distill_text) other than the one the "
                "cross-tokenizer teacher cache was computed on (xtok_text_hash); the cached teacher outputs "
                "belong to other data. Re-run cache_teacher_outputs(..., teacher_tokenizer=...) on exactly these "
                "texts, then tokenize them for the student."
            )
        check_cached_temperature(cache[XTOK_TEMPERATURE], self.temperature, "cross-tokenizer cache")
        # Rows come back from `datasets` as Python floats (float64): computed in float32 like a live teacher.
        values, tail = cache[XTOK_TOPK_LOGITS].float(), cache[XTOK_TAIL_LOGIT].float()
        log_p, log_rest = teacher_log_probs(values, tail, self.temperature)
        student_ids = map_ids(self.vocab_map, cache[XTOK_TOPK_INDICES])
        return log_p, log_rest, student_ids, cache[XTOK_ENDS], cache[XTOK_SPECIAL]

    # ---- alignment ------------------------------------------------------------------------------------

    def _text_and_offsets(self, batch: DistillationBatch) -> tuple[list[str], torch.Tensor]:
        missing = [c for c in (TEXT_COLUMN, OFFSETS_COLUMN) if c not in batch.cache]
        if missing:
            raise ValueError(
                f"cross_tokenizer_loss needs each batch to carry the raw text and the student tokens' offsets, "
                f"but the batch has no {missing}; build the dataset with "
                "hf_distill.token_alignment.prepare_cross_tokenizer_dataset(dataset, student_tokenizer) (or add "
                f"{TEXT_COLUMN!r} and {OFFSETS_COLUMN!r} columns yourself)."
            )
        return list(batch.cache[TEXT_COLUMN]), batch.cache[OFFSETS_COLUMN]

    def _align(
        self,
        batch: DistillationBatch,
        texts: list[str],
        offsets: torch.Tensor,
        ends: torch.Tensor,
        special: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(index (B, T_s), matched (B, T_s))``: the teacher position of each student position, -1 for none."""
        input_ids = batch.model_inputs["input_ids"].cpu()
        attention = batch.attention_mask
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention is None else attention.cpu().bool()
        if offsets.shape[:2] != input_ids.shape:
            raise ValueError(
                f"distill_offsets has shape {tuple(offsets.shape)} but input_ids {tuple(input_ids.shape)}: the "
                "offsets must come from the same tokenization as input_ids, one (start, end) pair per token."
            )
        ends_s, ends_t, special_t = offsets[..., 1].cpu(), ends.cpu(), special.cpu().bool()
        index = torch.full(input_ids.shape, -1, dtype=torch.long)
        matched = torch.zeros(input_ids.shape, dtype=torch.bool)
        for row in range(input_ids.shape[0]):
            keep, keep_t = valid[row], ends_t[row] >= 0
            ids = input_ids[row][keep].tolist()
            special_s = [i in self.student_special for i in ids]
            tokens = self.student_tokenizer.convert_ids_to_tokens(ids)
            student_ends = byte_ends(
                texts[row], ends_s[row][keep].tolist(), tokens, special_s, self.student_byte_level
            )
            found, same = align_positions(
                student_ends, special_s, ends_t[row][keep_t].tolist(), special_t[row][keep_t].tolist()
            )
            index[row, keep] = torch.from_numpy(found)
            matched[row, keep] = torch.from_numpy(same)
        return index, matched


def cross_tokenizer_source(
    args: DistillationTrainingArguments,
    teacher: nn.Module | None,
    unwrapped_teacher: nn.Module | None,
    student: nn.Module,
    tokenizer: Any,
    teacher_tokenizer: Any,
) -> CrossTokenizerTeacher:
    """The trainer's teacher source for ``cross_tokenizer_loss``: ``teacher`` as placed for the backend runs, the
    vocabulary map is sized to the output rows of ``unwrapped_teacher`` and ``student``."""
    return CrossTokenizerTeacher(
        teacher,
        teacher_tokenizer,
        tokenizer,
        temperature=args.temperature,
        teacher_rows=output_vocab_size(unwrapped_teacher) if unwrapped_teacher is not None else None,
        student_rows=output_vocab_size(student),
        check_finite=args.check_teacher_finite,
    )
