"""Distillation from a teacher's top-k logits: the loss maths for cached (and truncated) teacher outputs.

The top-k loss. At temperature ``T`` the teacher's distribution ``p = softmax(z / T)`` is coarsened into
``k + 1`` outcomes: each of its top-k tokens ``K``, and "any other token" with mass ``sum_{j not in K} p_j``.
The cache stores that tail as the logit ``tail = logsumexp_{j not in K}(z_j / T)``, so the teacher's coarse
distribution is ``softmax([z_K / T, tail])`` exactly. The student is coarsened over the same outcomes
(its log-probabilities at ``K`` and the log-sum-exp of the rest), and the loss is the chosen divergence
between the two ``(k + 1)``-outcome distributions (times ``T^2`` for the KL family).

Bound: every loss here except ``mse`` is an f-divergence or a cross-entropy, and merging outcomes never
increases an f-divergence (data-processing inequality), so ``0 <= full - topk``. For the forward KL the
chain rule gives the gap exactly: ``full - topk = T^2 * p_tail * KL(p_teacher(.|tail) || p_student(.|tail))``,
which vanishes with the teacher's tail mass; with ``k = V`` (no tail) the top-k loss is the full loss.
``mse`` compares raw logits over the whole vocabulary and has no top-k form.
"""

from __future__ import annotations

import torch

from hf_distill.losses.divergences import (
    PER_POSITION_LOSSES,
    check_loss_name,
    loss_kwargs,
    neutralise_masked,
    reduce_positions,
    resolve_mask,
    upcast,
)

# Losses without the T^2 factor (see hf_distill.losses.divergences): TVD is not a KL, MSE ignores the temperature.
NOT_T2_SCALED = ("tvd", "mse")


def very_negative(dtype: torch.dtype) -> float:
    # A finite stand-in for log 0: -inf would turn 0 * log 0 and logsumexp's backward into NaN.
    return torch.finfo(dtype).min / 4


def tail_logsumexp(scaled_logits: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over the tokens not in ``indices``: ``(..., V)``, ``(..., k)`` -> ``(...)``."""
    rest = scaled_logits.scatter(-1, indices, very_negative(scaled_logits.dtype))
    return torch.logsumexp(rest, dim=-1)


def topk_teacher(
    teacher_logits: torch.Tensor, k: int, *, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cached form of teacher logits ``(..., V)``: top-k raw logits ``(..., k)``, their indices
    ``(..., k)`` and the tail logit ``(...)`` at ``temperature``."""
    k = min(k, teacher_logits.shape[-1])
    values, indices = upcast(teacher_logits).topk(k, dim=-1)
    if torch.is_grad_enabled() and teacher_logits.requires_grad:
        tail = tail_logsumexp(upcast(teacher_logits) / temperature, indices)
    else:
        tail = _tail_logsumexp_in_blocks(teacher_logits, values, indices, temperature)
    return values, indices, tail


def _tail_logsumexp_in_blocks(
    logits: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, temperature: float, rows: int = 64
) -> torch.Tensor:
    """:func:`tail_logsumexp` of ``logits / temperature`` without autograd, a block of ``rows`` positions at a
    time in one reused buffer: a cache of a large vocabulary otherwise makes three fresh (positions, V) copies
    (the scaled logits, the scattered copy, the exponentials), whose first writes cost as much as the arithmetic.

    The shift is the k-th largest logit (``values[..., -1]``, sorted descending), which bounds every tail
    logit from above, so the exponentials cannot overflow and no pass looks for the maximum: per block one
    subtraction into the buffer, ``exp_``, the top-k entries zeroed, a row sum. Rows where that sum is too
    small to trust (the tail far below the k-th logit, underflowing) or the shift is not finite take
    :func:`tail_logsumexp`'s arithmetic instead."""
    vocab = logits.shape[-1]
    flat, flat_indices = logits.reshape(-1, vocab), indices.reshape(-1, indices.shape[-1])
    dtype = upcast(flat[:0]).dtype
    shift = values.reshape(-1, values.shape[-1])[:, -1:].to(dtype)
    sums = torch.empty(flat.shape[0], dtype=dtype, device=logits.device)
    buffer = torch.empty((min(rows, flat.shape[0]), vocab), dtype=dtype, device=logits.device)
    for start in range(0, flat.shape[0], rows):
        end = min(start + rows, flat.shape[0])
        block = buffer[: end - start]
        torch.sub(flat[start:end], shift[start:end], out=block)
        if temperature != 1.0:
            block.mul_(1.0 / temperature)
        block.exp_()
        block.scatter_(-1, flat_indices[start:end], 0.0)
        torch.sum(block, dim=-1, out=sums[start:end])
    # A sum of exponentials of at most 1 each: below 1e-20 its largest term is below 1e-20, and terms that
    # underflowed (below ~1e-38) could add up to a visible share; those rows are recomputed with their own max.
    redo = ~(torch.isfinite(shift[:, 0]) & (sums > 1e-20))
    out = sums.log_().add_(shift[:, 0] / temperature)
    if redo.any():
        rest = upcast(flat[redo]) / temperature
        out[redo] = tail_logsumexp(rest, flat_indices[redo])
    return out.reshape(logits.shape[:-1])


def per_position_topk(
    student_logits: torch.Tensor,
    topk_logits: torch.Tensor,
    topk_indices: torch.Tensor,
    tail_logit: torch.Tensor,
    *,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew_lambda: float = 0.1,
) -> torch.Tensor:
    """The divergence between teacher and student over the teacher's top-k tokens plus one tail bucket.

    Shapes: student ``(..., V)``, top-k logits / indices ``(..., k)``, tail ``(...)`` -> ``(...)``.
    Teacher buckets: ``softmax([z_K / T, tail])``; student buckets: ``[log p_s(K), log(1 - sum p_s(K))]`` with
    ``p_s = softmax(z_s / T)``. See the module docstring for the bound against the full-vocabulary loss.
    """
    check_loss_name(loss)
    if loss == "mse":
        raise ValueError(
            "distillation_loss='mse' compares raw logits over the whole vocabulary, but a top-k teacher cache "
            "holds only k of them. Cache full logits (classification / NER) or choose a divergence such as "
            "forward_kl."
        )
    floor = very_negative(torch.float32)
    log_s = torch.log_softmax(upcast(student_logits) / temperature, dim=-1)
    indices = topk_indices.long()
    student_buckets = torch.cat(
        [log_s.gather(-1, indices), tail_logsumexp(log_s, indices).clamp_min(floor).unsqueeze(-1)], dim=-1
    )
    teacher_buckets = torch.cat(
        [upcast(topk_logits) / temperature, upcast(tail_logit).clamp_min(floor).unsqueeze(-1)], dim=-1
    )
    extra = loss_kwargs(loss, beta=beta, skew_lambda=skew_lambda)
    # The buckets are log-probabilities already softened at T, so the loss runs at temperature 1 and the
    # T^2 factor of the KL family is put back here.
    value = PER_POSITION_LOSSES[loss](student_buckets, teacher_buckets.detach(), temperature=1.0, **extra)
    return value if loss in NOT_T2_SCALED else value * temperature**2


def topk_distillation_loss(
    student_logits: torch.Tensor,
    topk_logits: torch.Tensor,
    topk_indices: torch.Tensor,
    tail_logit: torch.Tensor,
    *,
    loss: str = "forward_kl",
    temperature: float = 1.0,
    mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    beta: float = 0.5,
    skew_lambda: float = 0.1,
) -> torch.Tensor:
    """:func:`per_position_topk`, masked and reduced like
    :func:`hf_distill.losses.divergences.distillation_loss`.

    The teacher is known only through its top-k logits and one tail bucket (a top-k cache), so the divergence
    runs over ``k + 1`` outcomes; it is never above the full-vocabulary loss (see the module docstring).

    Args:
        student_logits (Tensor): ``(..., V)``, e.g. ``(B, T, V)`` shifted for a causal LM.
        topk_logits (Tensor): ``(..., k)`` the teacher's raw top-k logits (no gradient flows into them).
        topk_indices (Tensor): ``(..., k)`` their vocabulary ids.
        tail_logit (Tensor): ``(...)`` ``logsumexp`` of the other tokens' logits divided by ``temperature``,
            as the cache stores it.
        loss (str): a key of :data:`hf_distill.losses.divergences.PER_POSITION_LOSSES` except ``"mse"``.
            Default ``"forward_kl"``.
        temperature (float): softening temperature ``T > 0``, the one the tail was computed at (KL-family
            losses are multiplied by ``T**2``). Default 1.0.
        mask (Tensor | None): boolean ``(...)``, True where the loss counts.
        labels (Tensor | None): ``(...)`` with -100 at ignored positions, instead of ``mask``.
        reduction (str): ``"mean"`` (over unmasked positions, or divided by ``num_items_in_batch``),
            ``"sum"`` or ``"none"``. Default ``"mean"``.
        num_items_in_batch (int | Tensor | None): divisor for ``"mean"`` across gradient accumulation.
        beta (float): JSD interpolation weight (``jsd`` only). Default 0.5.
        skew_lambda (float): mixing weight (``skew_*`` losses only). Default 0.1.

    Returns:
        Tensor: a scalar, or the per-position losses ``(...)`` for ``reduction="none"``.

    Raises:
        ValueError: ``temperature <= 0``, an unknown loss or ``"mse"``, both ``mask`` and ``labels``, a mask
            of the wrong shape, or an unknown reduction.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to soften distributions, got {temperature}.")
    resolved = resolve_mask(student_logits.shape[:-1], mask=mask, labels=labels, device=student_logits.device)
    if resolved is not None:
        # Masked positions must not reach the gradient (see hf_distill.losses.divergences.neutralise_masked).
        student_logits, topk_logits = neutralise_masked(student_logits, topk_logits, resolved)
        tail_logit = torch.where(resolved, tail_logit, 0.0)
    per_position = per_position_topk(
        student_logits,
        topk_logits,
        topk_indices,
        tail_logit,
        loss=loss,
        temperature=temperature,
        beta=beta,
        skew_lambda=skew_lambda,
    )
    return reduce_positions(
        per_position, resolved, reduction=reduction, num_items_in_batch=num_items_in_batch
    )


def topk_chunks(
    topk_logits: torch.Tensor,
    topk_indices: torch.Tensor,
    tail_logit: torch.Tensor,
    *,
    loss: str,
    temperature: float,
    beta: float = 0.5,
    skew_lambda: float = 0.1,
):
    """The top-k loss as a per-chunk function for :func:`hf_distill.losses.fused.chunked.fused_linear_distillation_loss`
    (positions flattened: ``(N, k)``, ``(N, k)``, ``(N,)``)."""
    values = topk_logits.reshape(-1, topk_logits.shape[-1])
    indices = topk_indices.reshape(-1, topk_indices.shape[-1])
    tail = tail_logit.reshape(-1)

    def chunk_fn(student_logits: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return per_position_topk(
            student_logits,
            values[rows],
            indices[rows],
            tail[rows],
            loss=loss,
            temperature=temperature,
            beta=beta,
            skew_lambda=skew_lambda,
        )

    return chunk_fn
