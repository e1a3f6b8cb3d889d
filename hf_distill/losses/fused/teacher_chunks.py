"""The teacher side of the chunked KD loss, one chunk of positions at a time.

:class:`TeacherChunks` gives the teacher's logits for a chunk of (flattened) positions — sliced from full
logits, or computed from the teacher's last hidden state and LM head so its ``(N, V)`` logits never exist at
once — and the KD loss of a student chunk against them: through autograd for any loss of
:data:`hf_distill.losses.divergences.PER_POSITION_LOSSES`, or in closed form for the forward KL
(:mod:`hf_distill.losses.fused.closed_form`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from hf_distill.losses.divergences import PER_POSITION_LOSSES, loss_kwargs
from hf_distill.losses.fused.closed_form import forward_kl_and_cross_entropy

# (student_logits_chunk (n, V), rows (n,) indices into the flattened positions) -> per-position KD loss (n,)
KDChunkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def teacher_logits_broken(teacher_logits: torch.Tensor) -> bool:
    """Whether teacher logits ``(..., V)`` hold NaN or +inf, or a row that is all -inf (no distribution at all).
    Single -inf entries (a masked vocabulary) are a valid target: every loss gives them probability 0."""
    broken = torch.isnan(teacher_logits) | torch.isposinf(teacher_logits)
    return bool(broken.any()) or bool(torch.isneginf(teacher_logits).all(-1).any())


def check_finite_logits(teacher_logits: torch.Tensor) -> None:
    if teacher_logits_broken(teacher_logits):
        raise_teacher_not_finite(tuple(teacher_logits.shape))


def raise_teacher_not_finite(shape: tuple) -> None:
    raise FloatingPointError(
        f"The teacher's logits hold NaN or inf (a chunk of shape {shape}); the distillation target is broken. "
        "Check the teacher in float32 (teacher_dtype), its weights, and the batch's inputs."
    )


class TeacherChunks:
    """Per-chunk teacher logits and the KD loss against them (a :data:`KDChunkFn`).

    Args:
        logits_for_rows: ``(rows (n,), out)`` -> the teacher's logits ``(n, V)`` for those flattened positions,
            written into ``out`` when it is not None (the closed-form loss overwrites them).
        loss, temperature, beta, skew_lambda: as in :func:`hf_distill.losses.divergences.distillation_loss`.
        check_finite: refuse NaN / inf teacher logits (on the closed-form path the check reads the
            log-sum-exp the loss computes anyway, so ``-inf`` entries, e.g. masked vocabulary, pass).
    """

    def __init__(
        self,
        logits_for_rows: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        *,
        loss: str,
        temperature: float,
        beta: float = 0.5,
        skew_lambda: float = 0.1,
        check_finite: bool = False,
    ):
        self.logits_for_rows, self.temperature, self.check_finite = logits_for_rows, temperature, check_finite
        self.per_position = PER_POSITION_LOSSES[loss]
        self.extra = loss_kwargs(loss, beta=beta, skew_lambda=skew_lambda)
        self.closed_form = loss == "forward_kl"
        self.buffer: torch.Tensor | None = (
            None  # the closed-form path's teacher logits, reused chunk to chunk
        )

    def teacher_logits(self, rows: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.logits_for_rows(rows, None)

    def __call__(self, student_logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        logits = self.teacher_logits(rows)
        if self.check_finite:
            check_finite_logits(logits)
        return self.per_position(student_logits, logits, temperature=self.temperature, **self.extra)

    def kl_and_cross_entropy(
        self,
        student_logits: torch.Tensor,
        rows: torch.Tensor,
        labels: torch.Tensor | None,
        kd_weight: float,
        task_weight: float,
        scratch: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Forward KL only, with the task cross-entropy (:func:`hf_distill.losses.fused.closed_form.forward_kl_and_cross_entropy`,
        which consumes ``student_logits``): per-position KD and CE values ``(n,)``, the gradient of
        ``kd_weight * sum(kd) + task_weight * sum(ce)`` ``(n, V)``, and whether every teacher row was finite
        (a 0-dim bool tensor, checked once per step by the caller)."""
        with torch.no_grad():
            fits = self.buffer is not None and len(self.buffer) >= len(rows)
            teacher = self.logits_for_rows(rows, self.buffer[: len(rows)] if fits else None)
        if not fits:
            self.buffer = teacher
        kd, ce, grad, teacher_lse = forward_kl_and_cross_entropy(
            student_logits, teacher, labels, self.temperature, kd_weight, task_weight, scratch
        )
        return kd, ce, grad, torch.isfinite(teacher_lse).all()


def teacher_logits_chunks(teacher_logits: torch.Tensor, **kwargs) -> TeacherChunks:
    """Chunks of precomputed teacher logits ``(..., V)`` (positions flattened)."""
    flat = teacher_logits.detach().reshape(-1, teacher_logits.shape[-1])
    return TeacherChunks(lambda rows, out: torch.index_select(flat, 0, rows, out=out), **kwargs)


def teacher_hidden_chunks(
    teacher_hidden: torch.Tensor,
    teacher_weight: torch.Tensor,
    teacher_bias: torch.Tensor | None = None,
    **kwargs,
) -> TeacherChunks:
    """Chunks of the teacher's logits computed on the fly, ``z_t = h_t @ W_t^T (+ b_t)``: ``teacher_hidden``
    ``(..., H_t)``, ``teacher_weight`` ``(V, H_t)``."""
    flat = teacher_hidden.detach().reshape(-1, teacher_hidden.shape[-1])
    weight = teacher_weight.detach()
    bias = None if teacher_bias is None else teacher_bias.detach()
    return TeacherChunks(lambda rows, out: linear_into(flat[rows], weight, bias, out), **kwargs)


def linear_into(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor | None):
    """``F.linear(x, weight, bias)``, written into ``out`` when given (the same matmul, no fresh tensor)."""
    if out is None:
        return F.linear(x, weight, bias)
    if bias is None:
        return torch.mm(x, weight.t(), out=out)
    return torch.addmm(bias, x, weight.t(), out=out)


class RowsOf:
    """A teacher source read at other rows: kept position ``i`` is flattened position ``rows[i]``."""

    def __init__(self, source: KDChunkFn, rows: torch.Tensor):
        self.source, self.rows = source, rows
        self.closed_form = getattr(source, "closed_form", False)
        self.check_finite = getattr(source, "check_finite", False)

    def __call__(self, student_logits: torch.Tensor, kept_rows: torch.Tensor) -> torch.Tensor:
        return self.source(student_logits, self.rows[kept_rows])

    def kl_and_cross_entropy(self, student_logits: torch.Tensor, kept_rows: torch.Tensor, *args):
        return self.source.kl_and_cross_entropy(student_logits, self.rows[kept_rows], *args)


def check_teacher_finite(teacher_logits: torch.Tensor, global_step: int) -> None:
    """Refuses broken teacher logits (:func:`teacher_logits_broken`), naming the step."""
    if teacher_logits_broken(teacher_logits):
        raise FloatingPointError(
            f"The teacher's logits hold NaN or inf at global step {global_step} (batch shape "
            f"{tuple(teacher_logits.shape)}); the distillation target is broken. Check the teacher in float32 "
            "(teacher_dtype), its weights, and the batch's inputs."
        )
