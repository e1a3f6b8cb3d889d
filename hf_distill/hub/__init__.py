"""A saved student and what travels with it: the model card (``card``, filled by ``trainer_card`` and
``card_measures``), the teacher's origin and license (``teacher_origin``), the guard that keeps a teacher's
weights off the Hub (``push_guard``, reading ONNX graphs through ``onnx_graphs``), and the push itself
(``push``)."""

from hf_distill.hub.card import render_model_card, write_model_card
from hf_distill.hub.push import check_student_folder, push_student, teacher_weight_files

__all__ = [
    "check_student_folder",
    "push_student",
    "render_model_card",
    "teacher_weight_files",
    "write_model_card",
]
