"""Students built from teachers: fewer layers or a smaller config (``build``), and a student moved to another
tokenizer with embeddings taken from the teacher's (``vocab_transfer``)."""

from hf_distill.students.build import (
    count_parameters,
    gpt2_student_for,
    model_size_on_disk,
    select_layers,
    student_from_config,
    student_from_teacher,
)
from hf_distill.students.vocab_transfer import transfer_vocabulary

__all__ = [
    "count_parameters",
    "gpt2_student_for",
    "model_size_on_disk",
    "select_layers",
    "student_from_config",
    "student_from_teacher",
    "transfer_vocabulary",
]
