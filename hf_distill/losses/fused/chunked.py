"""Large-vocabulary distillation losses that never hold the full ``(N, V)`` student logits.

A causal LM's logits are ``z = h @ W^T (+ b)`` with ``h`` the last hidden states ``(N, H)`` and ``W`` the
LM head ``(V, H)``. At ``V = 50257`` the plain loss keeps several ``(N, V)`` float32 tensors alive for the
backward pass (logits, both log-softmaxes, probabilities, their gradients); here the positions are walked in
chunks of ``chunk_size`` rows, so the loss's memory is ``O(chunk_size * V)`` instead of ``O(N * V)``.

Two implementations, both exact (same value and gradients as :func:`hf_distill.losses.divergences.distillation_loss` plus
:func:`hf_distill.losses.divergences.task_cross_entropy`, up to float rounding):

- ``"fused"``: a ``torch.autograd.Function`` that, chunk by chunk in the forward pass, computes the logits,
  the per-position losses and the gradient with respect to those logits — in closed form for the default
  forward KL + cross-entropy (:mod:`hf_distill.losses.fused.closed_form`), through autograd on the SAME functions of
  :data:`hf_distill.losses.divergences.PER_POSITION_LOSSES` for the other losses — and from it ``dL/dh = G @ W`` and ``dL/dW += G^T @ h`` (``G = dL/dz``, one
  chunk). The backward pass only scales the stored gradients by the incoming gradient. One matmul forward
  and two backward per chunk: the same arithmetic as the plain loss.
- ``"chunked"``: ``torch.utils.checkpoint`` per chunk; the backward recomputes each chunk's logits, so it
  costs one more ``h @ W^T`` than ``"fused"`` but leaves autograd in charge of everything.

The task cross-entropy is fused into the same pass, since it also needs the full logits. The teacher comes as
one ``teacher`` argument whose type says its form (:mod:`hf_distill.losses.fused.teacher_forms`): full teacher
logits, the teacher's hidden states with its LM head (so the teacher's logits are never materialised either),
top-k logits, or any per-chunk KD function; each form makes the per-chunk callable the loops read
(:class:`hf_distill.losses.fused.teacher_chunks.TeacherChunks`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from hf_distill.losses.divergences import IGNORE_INDEX, check_loss_name, upcast
from hf_distill.losses.fused.teacher_chunks import KDChunkFn, RowsOf, linear_into, raise_teacher_not_finite
from hf_distill.losses.fused.teacher_forms import TeacherForm, teacher_from_keywords

# 128 rows x 50257 float32 is 26 MB per tensor: small against the plain loss's (B, T, V) logits, large enough
# for the matmuls to run at speed (benchmarks/bench_causal_lm.py measures the peak per chunk size).
DEFAULT_CHUNK_SIZE = 128


class KDLossParts(NamedTuple):
    """The fused loss's result: ``loss = kd_weight * loss_kd + task_weight * loss_task``.

    Only ``loss`` carries the gradient; the parts are detached, for logging each term without a second pass.

    Args:
        loss (Tensor): scalar, the weighted total to call ``backward()`` on.
        loss_kd (Tensor): scalar, the distillation term (detached), reduced like ``loss``.
        loss_task (Tensor): scalar, the hard-label cross-entropy term (detached), reduced like ``loss``.
    """

    loss: torch.Tensor
    loss_kd: torch.Tensor
    loss_task: torch.Tensor


# ---- the autograd functions ---------------------------------------------------------------------------------


def _chunk_objective(
    logits: torch.Tensor,
    rows: torch.Tensor,
    labels: torch.Tensor | None,
    kd_chunk_fn: KDChunkFn,
    kd_weight: float,
    task_weight: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sum over one chunk's positions of ``kd_weight * kd + task_weight * ce``, and the two sums."""
    kd = kd_chunk_fn(logits, rows).sum() if kd_weight != 0 else logits.new_zeros((), dtype=torch.float32)
    if task_weight != 0 and labels is not None:
        ce = F.cross_entropy(upcast(logits), labels[rows], reduction="sum")
    else:
        ce = torch.zeros_like(kd)
    return kd_weight * kd + task_weight * ce, kd.detach(), ce.detach()


def _closed_form_chunk(
    logits: torch.Tensor,
    rows: torch.Tensor,
    labels: torch.Tensor | None,
    kd_chunk_fn: RowsOf,
    kd_weight: float,
    task_weight: float,
    scratch: list[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`_chunk_objective` and its gradient with respect to the chunk's logits (which it consumes), in
    closed form (:mod:`hf_distill.losses.fused.closed_form`), plus whether the teacher's rows were finite."""
    chunk_labels = labels[rows] if labels is not None and task_weight != 0 else None
    kd_values, ce_values, grad, teacher_finite = kd_chunk_fn.kl_and_cross_entropy(
        logits, rows, chunk_labels, kd_weight, task_weight, scratch
    )
    kd, ce = kd_values.sum(), ce_values.sum()
    return kd_weight * kd + task_weight * ce, kd, ce, grad, teacher_finite


class _FusedLinearKD(torch.autograd.Function):
    """Sums of the chunked objective over selected positions, gradients computed during the forward pass.

    Inputs: ``hidden`` ``(N, H)`` (only the positions that count), ``weight`` ``(V, H)``, ``bias`` ``(V,)`` or
    None. Outputs: the weighted objective (differentiable) and the KD and task sums (not differentiable).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, kd_chunk_fn, kd_weight, task_weight, chunk_size):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        # float32 accumulators: summing hundreds of chunk gradients in bf16 would lose the small ones.
        grad_hidden = torch.zeros_like(hidden) if need_h else None
        grad_weight = None  # the first chunk's product, then accumulated into (no zero-filled (V, H) pass)
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        # Three tensors, not one aliased zero: the sums are marked non-differentiable below, the total is not.
        total, kd_sum, ce_sum = (hidden.new_zeros((), dtype=torch.float32) for _ in range(3))
        any_grad = need_h or need_w or need_b
        # The default objective (forward KL + cross-entropy) has a closed-form gradient: no autograd graph.
        closed = any_grad and kd_weight != 0 and getattr(kd_chunk_fn, "closed_form", False)
        teacher_finite = torch.ones((), dtype=torch.bool, device=hidden.device)
        # The closed form's (chunk, V) buffers, allocated by the first (largest) chunk and reused by the others.
        scratch: list[torch.Tensor] = []
        logits_buffer = None
        for start in range(0, hidden.shape[0], chunk_size):
            rows = torch.arange(start, min(start + chunk_size, hidden.shape[0]), device=hidden.device)
            h = hidden[start : start + chunk_size]
            grad_logits = None
            if closed:
                out = None if logits_buffer is None else logits_buffer[: len(h)]
                logits = linear_into(h, weight, bias, out)
                logits_buffer = logits if logits_buffer is None else logits_buffer
                objective, kd, ce, grad_logits, finite = _closed_form_chunk(
                    logits, rows, labels, kd_chunk_fn, kd_weight, task_weight, scratch
                )
                teacher_finite &= finite
            else:
                logits = F.linear(h, weight, bias)
                with torch.enable_grad():
                    logits = logits.detach().requires_grad_(any_grad)
                    objective, kd, ce = _chunk_objective(
                        logits, rows, labels, kd_chunk_fn, kd_weight, task_weight
                    )
                if any_grad and objective.requires_grad:
                    (grad_logits,) = torch.autograd.grad(objective, logits)
            if grad_logits is not None:
                grad_logits = grad_logits.to(h.dtype)
                if need_h:
                    grad_hidden[start : start + chunk_size] = grad_logits @ weight
                if need_w and grad_weight is None:
                    grad_weight = grad_logits.t().float() @ h.float()
                elif need_w:
                    grad_weight.addmm_(grad_logits.t().float(), h.float())
                if need_b:
                    grad_bias += grad_logits.float().sum(0)
            total, kd_sum, ce_sum = total + objective.detach(), kd_sum + kd, ce_sum + ce
        if closed and kd_chunk_fn.check_finite and not bool(teacher_finite):
            # Checked once per call, from the log-sum-exp the loss computed anyway (no pass over the logits).
            raise_teacher_not_finite((hidden.shape[0], weight.shape[0]))
        if need_w and grad_weight is None:  # no position counted
            grad_weight = torch.zeros_like(weight, dtype=torch.float32)
        # Kept on ctx rather than saved: backward scales them in place and hands them over, so autograd can
        # take them as the parameters' .grad without copying the (V, H) head gradient.
        ctx.grads = (
            grad_hidden,
            None if grad_weight is None else grad_weight.to(weight.dtype),
            None if grad_bias is None else grad_bias.to(bias.dtype),
        )
        ctx.mark_non_differentiable(kd_sum, ce_sum)
        return total, kd_sum, ce_sum

    @staticmethod
    def backward(ctx, grad_total, _grad_kd, _grad_ce):
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError(
                "The fused distillation loss was backpropagated a second time: its gradients were computed in "
                "the forward pass and handed over by the first backward. Compute the loss again for another "
                "backward, or use kd_loss_implementation='chunked' to keep a graph that retain_graph can reuse."
            )
        scale = grad_total.to(torch.float32)
        out = [None if g is None else g.mul_(scale.to(g.dtype)) for g in grads]
        return (*out, None, None, None, None, None)


def _checkpointed_sums(hidden, weight, bias, labels, kd_chunk_fn, kd_weight, task_weight, chunk_size):
    """Same sums as :class:`_FusedLinearKD`, with each chunk recomputed in the backward pass."""

    def chunk(h, w, b, rows):
        return _chunk_objective(F.linear(h, w, b), rows, labels, kd_chunk_fn, kd_weight, task_weight)

    # Start from 0 * sum(h) so a batch with no kept position still gives a loss that can be backpropagated.
    total = (hidden.sum() + weight.sum()).float() * 0.0
    kd_sum = ce_sum = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_size):
        rows = torch.arange(start, min(start + chunk_size, hidden.shape[0]), device=hidden.device)
        h = hidden[start : start + chunk_size]
        if torch.is_grad_enabled():
            objective, kd, ce = checkpoint(chunk, h, weight, bias, rows, use_reentrant=False)
        else:
            objective, kd, ce = chunk(h, weight, bias, rows)
        total, kd_sum, ce_sum = total + objective, kd_sum + kd, ce_sum + ce
    return total, kd_sum, ce_sum


def check_fused_arguments(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    *,
    teacher: TeacherForm | None,
    labels: torch.Tensor | None,
    mask: torch.Tensor | None,
    loss: str,
    temperature: float,
    kd_weight: float,
    task_weight: float,
    reduction: str,
    chunk_size: int,
    implementation: str,
) -> None:
    """Refuses arguments :func:`fused_linear_distillation_loss` cannot serve, before any chunk runs."""
    check_loss_name(loss)
    if implementation not in ("fused", "chunked"):
        raise ValueError(
            f"implementation={implementation!r} is not a chunked loss; use 'fused' or 'chunked' (for the plain "
            "loss call hf_distill.losses.divergences.distillation_loss on full logits)."
        )
    if reduction not in ("mean", "sum"):
        raise ValueError(
            f"reduction={reduction!r} is not supported by the chunked loss: it never holds all positions' "
            "losses at once. Use 'mean' or 'sum', or the plain distillation_loss for per-position values."
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1 positions, got {chunk_size}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to soften distributions, got {temperature}.")
    if teacher is None and kd_weight != 0:
        raise ValueError(
            f"Give exactly one teacher source to the chunked loss (kd_weight={kd_weight} needs one), got none: "
            "teacher= a logits tensor, TeacherHead(hidden, weight, bias), TeacherTopk(values, indices, tail) "
            "or a per-chunk KD function."
        )
    if task_weight != 0 and labels is None:
        raise ValueError(f"task_weight={task_weight} needs labels (with -100 at ignored positions).")
    if mask is not None and labels is not None:
        raise ValueError(
            "Both `mask` and `labels` were given to a distillation loss; pass one of them: `labels` masks "
            "positions equal to -100, `mask` is an explicit boolean mask."
        )
    leading = student_hidden.shape[:-1]
    if teacher is not None:
        teacher.check_matches(tuple(leading), student_weight.shape[0])
    for name, tensor in (("labels", labels), ("mask", mask)):
        if tensor is not None and tensor.shape != leading:
            raise ValueError(
                f"The loss {name} have shape {tuple(tensor.shape)} but the hidden states have leading shape "
                f"{tuple(leading)}; shift labels and hidden states alike (hidden[:, :-1], labels[:, 1:])."
            )


def _reduced_sums(
    student_hidden, student_weight, student_bias, kd_chunk_fn, labels, mask, kd_weight, task_weight,
    reduction, num_items_in_batch, chunk_size, implementation,
) -> KDLossParts:  # fmt: skip
    """Runs the chosen implementation over the positions that count and reduces the sums."""
    flat_hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
    keep = labels.reshape(-1) != IGNORE_INDEX if labels is not None else None
    if mask is not None:
        keep = mask.reshape(-1).to(device=flat_hidden.device, dtype=torch.bool)
    # Only the positions that count go through the chunks: padding costs no logits at all. `rows` maps
    # the kept positions back to the flattened ones, where the teacher source indexes its own tensors.
    if keep is not None:
        rows = keep.nonzero().squeeze(1)
        kept_hidden = flat_hidden[rows]
    else:
        rows = torch.arange(len(flat_hidden), device=flat_hidden.device)
        kept_hidden = flat_hidden
    kept_labels = labels.reshape(-1)[rows].long() if labels is not None else None
    kd_on_kept = None if kd_chunk_fn is None else RowsOf(kd_chunk_fn, rows)

    if implementation == "fused":
        total, kd_sum, ce_sum = _FusedLinearKD.apply(
            kept_hidden,
            student_weight,
            student_bias,
            kept_labels,
            kd_on_kept,
            kd_weight,
            task_weight,
            chunk_size,
        )
    else:
        total, kd_sum, ce_sum = _checkpointed_sums(
            kept_hidden,
            student_weight,
            student_bias,
            kept_labels,
            kd_on_kept,
            kd_weight,
            task_weight,
            chunk_size,
        )
    if reduction == "sum":
        return KDLossParts(total, kd_sum, ce_sum)
    if num_items_in_batch is not None:
        denominator = torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype)
    else:
        denominator = torch.tensor(float(len(rows)), device=total.device)
    denominator = denominator.clamp_min(1)
    return KDLossParts(total / denominator, kd_sum / denominator, ce_sum / denominator)


# ---- the public loss ----------------------------------------------------------------------------------------


def fused_linear_distillation_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    student_bias: torch.Tensor | None = None,
    *,
    teacher: TeacherForm | torch.Tensor | KDChunkFn | None = None,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew_lambda: float = 0.1,
    kd_weight: float = 1.0,
    task_weight: float = 0.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    implementation: str = "fused",
    **deprecated: Any,
) -> KDLossParts:
    """Distillation (+ task) loss from the student's last hidden states and LM head, chunk by chunk.

    Equals ``kd_weight * distillation_loss(z_s, z_t, ...) + task_weight * task_cross_entropy(z_s, labels)``
    with ``z_s = student_hidden @ student_weight^T (+ student_bias)``, without building ``z_s``.

    Args:
        student_hidden (Tensor): ``(..., H)``, e.g. ``(B, T, H)`` already shifted for next-token prediction.
        student_weight (Tensor): the LM head ``(V, H)``; student_bias ``(V,)`` or None.
        teacher: one form (:mod:`hf_distill.losses.fused.teacher_forms`): the teacher's logits ``(..., V)`` with
            the same leading shape (a tensor, or ``TeacherLogits(logits, check_finite=True)``),
            ``TeacherHead(hidden (..., H_t), weight (V, H_t), bias, check_finite=...)``,
            ``TeacherTopk(values, indices, tail)``, or a per-chunk KD function. None only when ``kd_weight == 0``.
        labels (Tensor | None): ``(...)`` with -100 at ignored positions (needed for the task term); or
            ``mask`` ``(...)``.
        loss, temperature, beta, skew_lambda: as in :func:`hf_distill.losses.divergences.distillation_loss`.
        kd_weight, task_weight (float): weights of the two terms (``alpha`` and ``1 - alpha`` in the trainer).
        reduction (str): ``"mean"`` (divide both sums by ``num_items_in_batch``, else by the unmasked count, at
            least 1) or ``"sum"``.
        chunk_size (int): positions per chunk; memory is ``O(chunk_size * V)``.
        implementation (str): ``"fused"`` (gradients in the forward pass) or ``"chunked"`` (checkpoint per chunk).
        **deprecated: the older keyword forms ``teacher_logits=``, ``teacher_hidden=`` with ``teacher_weight=``
            (and ``teacher_bias=``), ``kd_chunk_fn=`` and ``check_teacher_finite=``: still taken, with a
            ``DeprecationWarning`` naming ``teacher=``.

    Returns:
        :class:`KDLossParts` ``(loss, loss_kd, loss_task)``, each reduced the same way.
    """
    teacher = teacher_from_keywords(teacher, deprecated, "fused_linear_distillation_loss")
    check_fused_arguments(
        student_hidden,
        student_weight,
        teacher=teacher,
        labels=labels,
        mask=mask,
        loss=loss,
        temperature=temperature,
        kd_weight=kd_weight,
        task_weight=task_weight,
        reduction=reduction,
        chunk_size=chunk_size,
        implementation=implementation,
    )
    kd_chunk_fn = None  # kd_weight == 0: no teacher needed
    if teacher is not None:
        kd_chunk_fn = teacher.chunks(loss=loss, temperature=temperature, beta=beta, skew_lambda=skew_lambda)
    return _reduced_sums(
        student_hidden, student_weight, student_bias, kd_chunk_fn, labels, mask, kd_weight, task_weight,
        reduction, num_items_in_batch, chunk_size, implementation,
    )  # fmt: skip
