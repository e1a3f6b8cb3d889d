"""The fused large-vocabulary KD loss: student and teacher logits computed chunk by chunk from the last hidden
states and the LM heads, never held whole (``chunked``), with the closed-form backward (``closed_form``), the
teacher forms it takes (``teacher_forms``), the teacher's chunks (``teacher_chunks``) and the heads it reads
(``lm_head``)."""

from hf_distill.losses.fused.chunked import DEFAULT_CHUNK_SIZE, KDLossParts, fused_linear_distillation_loss
from hf_distill.losses.fused.lm_head import KD_LOSS_IMPLEMENTATIONS, lm_head_of
from hf_distill.losses.fused.teacher_forms import (
    TeacherChunkFn,
    TeacherForm,
    TeacherHead,
    TeacherLogits,
    TeacherTopk,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "KDLossParts",
    "KD_LOSS_IMPLEMENTATIONS",
    "TeacherChunkFn",
    "TeacherForm",
    "TeacherHead",
    "TeacherLogits",
    "TeacherTopk",
    "fused_linear_distillation_loss",
    "lm_head_of",
]
