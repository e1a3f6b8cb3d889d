"""Where a batch's teacher target comes from. Every source has one call shape, ``TeacherSource``:
``source(batch, output_kwargs) -> TeacherTarget`` (``sources``): a live model, cached outputs (full or top-k),
the cache a batch carries else the live model, a teacher with another tokenizer whose positions are aligned to
the student's (``cross_tokenizer``, over :mod:`hf_distill.token_alignment`), each row's own named teacher
(``routed``: teacher routes); the modes add their own (a mixture of teachers). A target's ``kind``
(``TargetKind``) names its source."""

from hf_distill.batch import TargetKind, TeacherTarget
from hf_distill.teachers.cross_tokenizer import CrossTokenizerTeacher
from hf_distill.teachers.routed import RouteColumnCollator, RoutedTeacher
from hf_distill.teachers.sources import (
    CachedOrLiveTeacher,
    CachedTeacher,
    LiveTeacher,
    TeacherSignal,
    TeacherSource,
)

__all__ = [
    "CachedOrLiveTeacher",
    "CachedTeacher",
    "CrossTokenizerTeacher",
    "LiveTeacher",
    "RouteColumnCollator",
    "RoutedTeacher",
    "TargetKind",
    "TeacherSignal",
    "TeacherSource",
    "TeacherTarget",
]
