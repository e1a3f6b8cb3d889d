"""Where a batch's teacher target comes from: a live model, cached outputs (full or top-k), a mixture of
teachers (``sources``), or a teacher with another tokenizer whose positions are aligned to the student's
(``cross_tokenizer``, over :mod:`hf_distill.token_alignment`)."""

from hf_distill.batch import TeacherTarget
from hf_distill.teachers.sources import CachedTeacher, LiveTeacher, TeacherSignal

__all__ = [
    "CachedTeacher",
    "LiveTeacher",
    "TeacherSignal",
    "TeacherTarget",
]
