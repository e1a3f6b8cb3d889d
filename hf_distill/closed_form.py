"""Closed-form values and logit gradients of the default KD objective, for one chunk of positions.

The fused large-vocabulary loss (:mod:`hf_distill.chunked`) needs, per chunk of ``n`` positions, the loss and
its gradient with respect to the student's logits ``z`` ``(n, V)``. Autograd through the generic per-position
losses builds and walks a graph of several ``(n, V)`` tensors; for the default objective the gradient has a
closed form, computed here in a few in-place passes:

- forward KL at temperature ``T`` (Hinton et al., 2015), ``T^2 * KL(p_t || p_s)`` with ``p = softmax(z / T)``:
  ``d/dz_s = T * (p_s - p_t)``; the value is ``T^2 * (sum_c xlogy(p_t, p_t) - sum_c p_t * z_s / T + lse_s)``
  with ``lse_s = logsumexp(z_s / T)``, so teacher entries of probability 0 (``-inf`` logits) count exactly 0;
- cross-entropy with hard labels ``y``: ``lse(z) - z_y`` and ``d/dz = softmax(z) - onehot(y)``.

Values equal :func:`hf_distill.losses.per_position_forward_kl` and ``F.cross_entropy`` up to float rounding
(tests/test_chunked.py compares them in float64, gradients included).
"""

from __future__ import annotations

import torch

from .losses import upcast


def forward_kl_value_and_grad(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(values (n,), grad (n, V), teacher_lse (n,))`` of ``T^2 * KL(p_t || p_s)`` per position.

    ``grad`` is the gradient of the sum of the values with respect to ``student_logits`` (float32 or wider).
    ``teacher_lse`` is finite exactly when a teacher row holds no NaN / +inf (and not only -inf): the caller
    checks it instead of a separate pass over the teacher's logits.
    """
    scaled = upcast(student_logits) / temperature  # (n, V), ours: changed in place below
    # A -inf student logit where the teacher has probability 0 would give 0 * -inf; the most negative float
    # gives 0 there, and where the teacher has mass the divergence is as large as a float can say.
    scaled.clamp_(min=torch.finfo(scaled.dtype).min)
    student_lse = torch.logsumexp(scaled, dim=-1, keepdim=True)
    teacher = upcast(teacher_logits) / temperature
    teacher_lse = torch.logsumexp(teacher, dim=-1, keepdim=True)
    p_teacher = teacher.sub_(teacher_lse).exp_()
    neg_entropy = torch.xlogy(p_teacher, p_teacher).sum(-1)
    cross = (p_teacher * scaled).sum(-1)
    values = (neg_entropy - cross + student_lse.squeeze(-1)) * temperature**2
    grad = scaled.sub_(student_lse).exp_().sub_(p_teacher).mul_(temperature)
    return values, grad, teacher_lse.squeeze(-1)


def cross_entropy_value_and_grad(
    logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(values (n,), grad (n, V))`` of the hard-label cross-entropy per position (no ignored labels)."""
    logits = upcast(logits)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)
    rows = torch.arange(len(labels), device=logits.device)
    values = lse.squeeze(-1) - logits[rows, labels]
    grad = (logits - lse).exp_()
    grad[rows, labels] -= 1.0
    return values, grad
