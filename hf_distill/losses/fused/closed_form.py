"""Closed-form values and logit gradients of the default KD objective, for one chunk of positions.

The fused large-vocabulary loss (:mod:`hf_distill.losses.fused.chunked`) needs, per chunk of ``n`` positions, the loss and
its gradient with respect to the student's logits ``z`` ``(n, V)``. Autograd through the generic per-position
losses builds and walks a graph of several ``(n, V)`` tensors; for the default objective the gradient has a
closed form, computed here in a few in-place passes:

- forward KL at temperature ``T`` (Hinton et al., 2015), ``T^2 * KL(p_t || p_s)`` with ``p = softmax(z / T)``:
  ``d/dz_s = T * (p_s - p_t)``; the value is ``T^2 * (sum_c xlogy(p_t, p_t) - sum_c p_t * z_s / T + lse_s)``
  with ``lse_s = logsumexp(z_s / T)``, so teacher entries of probability 0 (``-inf`` logits) count exactly 0;
- cross-entropy with hard labels ``y``: ``lse(z) - z_y`` and ``d/dz = softmax(z) - onehot(y)``.

Values equal :func:`hf_distill.losses.divergences.per_position_forward_kl` and ``F.cross_entropy`` up to float rounding
(tests/losses/fused/test_chunked.py compares them in float64, gradients included).
"""

from __future__ import annotations

import torch

from hf_distill.losses.divergences import upcast


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


def _buffer(scratch: list[torch.Tensor] | None, index: int, like: torch.Tensor) -> torch.Tensor:
    if scratch is None:
        return torch.empty_like(like)
    if len(scratch) <= index:
        scratch.append(torch.empty_like(like))
    elif len(scratch[index]) < len(like) or scratch[index].dtype != like.dtype:
        scratch[index] = torch.empty_like(like)
    return scratch[index][: len(like)]


def forward_kl_and_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    kd_weight: float,
    task_weight: float,
    scratch: list[torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward KL and cross-entropy of one chunk together: ``(kd (n,), ce (n,), grad (n, V), teacher_lse (n,))``.

    ``grad`` is the gradient of ``kd_weight * sum(kd) + task_weight * sum(ce)`` with respect to the student's
    logits; the values equal :func:`forward_kl_value_and_grad` and :func:`cross_entropy_value_and_grad` (``ce``
    is zeros when ``labels`` is None or ``task_weight`` is 0). Both inputs are CONSUMED: they must be fresh
    tensors of the caller's (the chunk's logits), since their memory is reused in place. ``scratch``: a list
    the caller keeps across chunks (empty at first, largest chunk first); the two ``(n, V)`` exponentials are
    written into its buffers instead of fresh tensors (a fresh 25 MB tensor costs its page faults, about as
    much as the pass itself), and ``grad`` is a view of one of them, valid until the next call.

    The same arithmetic in fewer passes over the ``(n, V)`` logits: one ``exp`` per side (the log-sum-exps
    reuse the exponentials the gradient needs; at ``T = 1`` or ``2`` the cross-entropy's softmax is the
    tempered one's ``exp`` raised to ``T``), the KL's sum as one row sum, and ``sum_c p_t log p_t = sum_c p_t a_t - log sum_c exp(a_t)`` with ``a_t = (z_t - max z_t) / T``.
    """
    inv_t = 1.0 / temperature
    # Teacher: a_t = (z_t - max) / T, exp_t = exp(a_t), p_t = exp_t / S_t (the division is left to the uses).
    # A row with NaN or +inf (or all -inf) gives a NaN max or sum: teacher_lse is finite exactly when the
    # row is a distribution.
    teacher = upcast(teacher_logits)
    teacher_max = teacher.amax(-1, keepdim=True)
    shifted_t = torch.add(teacher_max * -inv_t, teacher, alpha=inv_t, out=teacher)
    exp_t = torch.exp(shifted_t, out=_buffer(scratch, 0, shifted_t))
    teacher_sum = exp_t.sum(-1, keepdim=True)
    log_teacher_sum = teacher_sum.log()
    teacher_lse = teacher_max * inv_t + log_teacher_sum
    # -inf teacher entries (probability 0) would give 0 * -inf in the dot product below; the most negative
    # float gives 0 there, as xlogy does.
    shifted_t.clamp_(min=torch.finfo(teacher.dtype).min)
    # Student: a_s = (z_s - max) / T, in place of the logits once the label logits are read.
    student = upcast(student_logits)
    student_max = student.amax(-1, keepdim=True)
    with_labels = labels is not None and task_weight != 0
    label_logits = student.gather(-1, labels.unsqueeze(-1)) if with_labels else None
    shifted_s = torch.add(student_max * -inv_t, student, alpha=inv_t, out=student)
    shifted_s.clamp_(min=torch.finfo(student.dtype).min)
    exp_s = torch.exp(shifted_s, out=_buffer(scratch, 1, shifted_s))
    student_sum = exp_s.sum(-1, keepdim=True)
    # T^2 * KL = T^2 * (sum p_t (a_t - a_s) - log S_t + log S_s): the maxima cancel. Both shifted logits are
    # <= 0 and >= the most negative float, so their difference is finite.
    kd = shifted_t.sub_(shifted_s).mul_(exp_t).sum(-1).div_(teacher_sum.squeeze(-1))
    kd = kd.add_((student_sum.log() - log_teacher_sum).squeeze(-1)).mul_(temperature**2)
    kd_scale = kd_weight * temperature
    ce = torch.zeros_like(kd)
    if with_labels:
        if temperature == 1:
            exp_z = exp_s
        elif temperature == 2:
            exp_z = torch.mul(exp_s, exp_s, out=shifted_s)  # a_s is not needed any more
        else:
            exp_z = shifted_s.mul_(temperature).exp_()
        z_sum = exp_z.sum(-1, keepdim=True)
        ce = (student_max + z_sum.log() - label_logits).squeeze(-1)
        if exp_z is exp_s:
            grad = exp_s.mul_((kd_scale + task_weight) / student_sum)
        else:
            grad = exp_s.mul_(kd_scale / student_sum).addcmul_(exp_z, task_weight / z_sum)
        grad.scatter_add_(-1, labels.unsqueeze(-1), grad.new_full((len(labels), 1), -task_weight))
    else:
        grad = exp_s.mul_(kd_scale / student_sum)
    # grad = kd_weight * T * (p_s - p_t) + task_weight * (softmax(z_s) - onehot(y))
    grad.addcmul_(exp_t, teacher_sum.reciprocal(), value=-kd_scale)
    return kd, ce, grad, teacher_lse.squeeze(-1)
