"""Hidden-state matching between mapped student and teacher layers (DistilBERT, TinyBERT, MiniLM style).

Indices follow ``output_hidden_states``: index 0 is the embedding output and index ``i`` the output of
layer ``i``, so a model with ``L`` layers has indices ``0..L``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def uniform_layer_map(num_student_layers: int, num_teacher_layers: int) -> list[tuple[int, int]]:
    """Student layer ``k`` (1..L_s) matches teacher layer ``round(k * L_t / L_s)``; the last layers always meet.

    The embedding output (index 0) is left out: with a student initialised from the teacher's embeddings it
    matches already, and with a fresh student the embedding spaces need not agree.
    """
    return [(k, round(k * num_teacher_layers / num_student_layers)) for k in range(1, num_student_layers + 1)]


def check_layer_map(
    pairs: list[tuple[int, int]], num_student_layers: int, num_teacher_layers: int
) -> list[tuple[int, int]]:
    for student_index, teacher_index in pairs:
        if student_index > num_student_layers:
            raise ValueError(
                f"hidden_layer_map names student layer {student_index}, but the student has "
                f"{num_student_layers} layers (hidden-state indices 0..{num_student_layers}, 0 = embeddings). "
                "Fix the map or use 'uniform'."
            )
        if teacher_index > num_teacher_layers:
            raise ValueError(
                f"hidden_layer_map names teacher layer {teacher_index}, but the teacher has "
                f"{num_teacher_layers} layers (hidden-state indices 0..{num_teacher_layers}, 0 = embeddings). "
                "Fix the map or use 'uniform'."
            )
    return pairs


def per_token_hidden_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    """``(B, T, D)`` x2 -> ``(B, T)``: mean squared error over the width, or ``1 - cosine similarity``."""
    if kind == "mse":
        return (student.float() - teacher.float()).pow(2).mean(-1)
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)
    raise ValueError(f"Unknown hidden-state loss {kind!r}; use 'mse' or 'cosine'.")


class HiddenStateMatcher(nn.Module):
    """Learned projections (student width -> teacher width) and the matching loss over a layer map.

    A projection exists only for mapped layers whose widths differ. It trains with the student (the trainer
    adds its parameters to the optimizer and its state to checkpoints) but is not part of the student, so a
    saved student loads with plain ``from_pretrained``.
    """

    def __init__(
        self, pairs: list[tuple[int, int]], student_width: int, teacher_width: int, loss: str = "mse"
    ):
        super().__init__()
        self.pairs = list(pairs)
        self.loss = loss
        self.projections = nn.ModuleDict()
        if student_width != teacher_width:
            for student_index, _ in self.pairs:
                self.projections[str(student_index)] = nn.Linear(student_width, teacher_width)

    def forward(
        self,
        student_hidden: tuple[torch.Tensor, ...],
        teacher_hidden: tuple[torch.Tensor, ...],
        token_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Sum over mapped layers of the per-token loss, summed over unmasked tokens; ``token_mask`` is ``(B, T)``.

        The caller divides by the token count, so the normalisation can span gradient accumulation.
        """
        total = student_hidden[0].new_zeros((), dtype=torch.float32)
        for student_index, teacher_index in self.pairs:
            student_state = student_hidden[student_index]
            key = str(student_index)
            if key in self.projections:
                student_state = self.projections[key](student_state)
            per_token = per_token_hidden_loss(
                student_state, teacher_hidden[teacher_index].detach(), self.loss
            )
            if token_mask is not None:
                per_token = torch.where(token_mask.bool(), per_token, torch.zeros_like(per_token))
            total = total + per_token.sum()
        return total
