"""Distillation losses: pure functions of tensors.

Every loss takes student and teacher logits of the same shape, ``(N, C)`` for sequence classification or
``(B, T, V)`` for token-level tasks, and compares the distributions along the last dimension. Each is
computed per position first (``per_position_*`` returns shape ``logits.shape[:-1]``) and then reduced by
:func:`reduce_positions`, which applies the mask and the normalisation. Keeping the two steps apart lets the
chunked large-vocabulary losses reuse the per-position formulas exactly.

Temperature convention (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"): both
distributions are softened as ``p = softmax(z / T)``, and losses of the KL family (forward and reverse KL,
JSD, skew KL, soft cross-entropy) are multiplied by ``T**2`` so that the size of their gradients stays
comparable to the task loss when ``T`` changes. TVD and MSE on logits are not rescaled (see their docstrings).

Masking convention: a position takes part when ``mask`` is true, or, when ``labels`` are given instead,
when ``labels != -100``. ``reduction="mean"`` divides by ``num_items_in_batch`` when given (the number of
unmasked positions over all gradient-accumulation micro-batches, as ``transformers.Trainer`` counts them),
otherwise by the number of unmasked positions here, ``clamp_min(1)`` so a fully masked batch gives 0.
:func:`distillation_loss` zeroes the logits of masked positions before any softmax, so whatever they hold
(inf or NaN padding) reaches neither the value nor the gradient.

Non-finite logits: an entry at ``-inf`` (a padded vocabulary, a constrained head) has probability 0 and,
with the convention ``0 * log 0 = 0``, contributes exactly 0 to every divergence, with a zero gradient.
``KL(p || q)`` is ``inf`` only where ``q`` gives probability 0 to an entry ``p`` weighs, a true infinity
(see :func:`per_position_mse` for logit matching). NaN and ``+inf`` at unmasked positions propagate.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
REDUCTIONS = ("mean", "sum", "none")


def upcast(logits: torch.Tensor) -> torch.Tensor:
    # At least float32: in bf16/fp16 the log-probabilities of a 50k vocabulary lose the tail the KD signal
    # lives in. float64 inputs stay float64.
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def soften(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``upcast(logits) / temperature``, without the division (a full copy of the logits) at ``T = 1``.

    Args:
        logits (Tensor): any shape.
        temperature (float): the softmax temperature.

    Returns:
        Tensor: the logits at ``temperature``, at least float32; ``logits`` itself when already float32 or
        float64 at ``T = 1``.
    """
    return upcast(logits) if temperature == 1 else upcast(logits) / temperature


def _log_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.log_softmax(upcast(logits) / temperature, dim=-1)


def _kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_{c: p_c > 0} p_c (log p_c - log q_c) over the last dim.

    Entries with ``p_c = 0`` (``log p_c = -inf``, or a probability that underflows) contribute exactly 0,
    whatever ``log q_c`` is, ``-inf`` included (0 * log 0 = 0), and pass a zero gradient to both sides.
    An entry with ``p_c > 0`` and ``log q_c = -inf`` is a true infinite divergence and gives ``inf``.
    Shapes: ``(..., C)``, ``(..., C)`` -> ``(...)``.
    """
    p = log_p.exp()
    # Zeroing the difference, not the product: the product's backward multiplies by the difference, and
    # -inf - finite or -inf - (-inf) would turn a zero gradient into NaN. In place: one pass, no new tensor.
    diff = (log_p - log_q).masked_fill_(p == 0, 0.0)
    return (p * diff).sum(-1)


def _log_mixture(log_a: torch.Tensor, log_b: torch.Tensor, weight_a: float) -> torch.Tensor:
    """``log(weight_a * a + (1 - weight_a) * b)`` from log-probabilities, ``0 < weight_a < 1``.

    An entry at ``-inf`` on both sides gives the most negative finite float instead of ``-inf``:
    logsumexp's backward is ``exp(x - logsumexp(x))``, NaN for ``-inf - (-inf)``. The divergences built on
    the mixture weigh such an entry by a probability 0, so the value is unchanged.
    Shapes: ``(..., C)``, ``(..., C)`` -> ``(..., C)``.
    """
    stacked = torch.stack([log_a + math.log(weight_a), log_b + math.log(1.0 - weight_a)])
    return torch.logsumexp(stacked.clamp_min(torch.finfo(stacked.dtype).min), dim=0)


def per_position_forward_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """KL(p_teacher || p_student) * T^2 per position (Hinton et al., 2015). Mass-covering.

    Shapes: ``(..., C)`` -> ``(...)``.
    """
    return (
        _kl(_log_probs(teacher_logits, temperature), _log_probs(student_logits, temperature)) * temperature**2
    )


def per_position_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """KL(p_student || p_teacher) * T^2 per position (MiniLLM, Gu et al., 2024). Mode-seeking.

    Shapes: ``(..., C)`` -> ``(...)``.
    """
    return (
        _kl(_log_probs(student_logits, temperature), _log_probs(teacher_logits, temperature)) * temperature**2
    )


def per_position_jsd(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
) -> torch.Tensor:
    """Generalised Jensen-Shannon divergence * T^2 per position (GKD, Agarwal et al., 2024).

    ``m = beta * p_t + (1 - beta) * p_s`` and ``JSD_beta = beta * KL(p_t || m) + (1 - beta) * KL(p_s || m)``.
    The expression itself vanishes at both ends, so, as in TRL's GKD, the end points are defined by their
    limits up to the factor beta: ``beta = 0`` gives the forward KL(p_t || p_s) and ``beta = 1`` the reverse
    KL(p_s || p_t). ``beta = 0.5`` is the symmetric JSD, bounded by ``log 2 * T^2``.

    Shapes: ``(..., C)`` -> ``(...)``.
    """
    if beta == 0.0:
        return per_position_forward_kl(student_logits, teacher_logits, temperature=temperature)
    if beta == 1.0:
        return per_position_reverse_kl(student_logits, teacher_logits, temperature=temperature)
    log_s = _log_probs(student_logits, temperature)
    log_t = _log_probs(teacher_logits, temperature)
    log_m = _log_mixture(log_t, log_s, beta)
    return (beta * _kl(log_t, log_m) + (1.0 - beta) * _kl(log_s, log_m)) * temperature**2


def per_position_skew_forward_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    skew_lambda: float = 0.1,
) -> torch.Tensor:
    """Skew KL: KL(p_t || lambda * p_t + (1 - lambda) * p_s) * T^2 (DistiLLM, Ko et al., 2024).

    Mixing a little of the teacher into the student's side keeps the divergence finite and its gradient
    stable where the student puts almost no mass. ``lambda = 0`` is the forward KL.
    Shapes: ``(..., C)`` -> ``(...)``.
    """
    log_s = _log_probs(student_logits, temperature)
    log_t = _log_probs(teacher_logits, temperature)
    if skew_lambda == 0.0:
        return _kl(log_t, log_s) * temperature**2
    return _kl(log_t, _log_mixture(log_t, log_s, skew_lambda)) * temperature**2


def per_position_skew_reverse_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    skew_lambda: float = 0.1,
) -> torch.Tensor:
    """Skew reverse KL: KL(p_s || lambda * p_s + (1 - lambda) * p_t) * T^2 (DistiLLM). ``lambda = 0`` is the
    reverse KL. Shapes: ``(..., C)`` -> ``(...)``."""
    log_s = _log_probs(student_logits, temperature)
    log_t = _log_probs(teacher_logits, temperature)
    if skew_lambda == 0.0:
        return _kl(log_s, log_t) * temperature**2
    return _kl(log_s, _log_mixture(log_s, log_t, skew_lambda)) * temperature**2


def per_position_tvd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Total variation distance 0.5 * sum_c |p_t - p_s| per position, in [0, 1].

    Not rescaled by T^2: TVD is not a KL and its gradient does not shrink as 1/T^2.
    Shapes: ``(..., C)`` -> ``(...)``.
    """
    p_s = _log_probs(student_logits, temperature).exp()
    p_t = _log_probs(teacher_logits, temperature).exp()
    return 0.5 * (p_t - p_s).abs().sum(-1)


def per_position_mse(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Mean squared error between raw logits, averaged over the class dim (Ba & Caruana, 2014).

    Logit matching is the high-temperature limit of KD, so the temperature is ignored here.

    ``-inf`` logits (a vocabulary padded and masked out, a constrained head) mark classes a model cannot
    output. An entry at ``-inf`` on both sides agrees and contributes 0. An entry at ``-inf`` on one side
    only has no finite logit to match, so it is excluded: it contributes 0 and no gradient (the KL-family
    losses do penalise the student's probability there). The mean still divides by ``C``, which counts excluded entries as agreeing, so padding a vocabulary does not change the value. NaN and ``+inf`` are not excluded and propagate.
    Shapes: ``(..., C)`` -> ``(...)``.
    """
    student, teacher = upcast(student_logits), upcast(teacher_logits)
    # Excluded through the difference: (-inf) - (-inf) is NaN and pow's backward multiplies by it.
    diff = (student - teacher).masked_fill_(torch.minimum(student, teacher) == -math.inf, 0.0)
    return diff.pow(2).mean(-1)


def per_position_soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """Soft-target cross-entropy -sum_c p_t log p_s * T^2 per position (Hinton et al., 2015).

    Equals forward KL plus the teacher's entropy: same gradients, but it is not 0 when the student
    matches the teacher. Shapes: ``(..., C)`` -> ``(...)``.
    """
    log_s = _log_probs(student_logits, temperature)
    p_t = _log_probs(teacher_logits, temperature).exp()
    # Entries the teacher gives probability 0 contribute 0 even where log p_s = -inf (0 * log 0 = 0).
    return -(p_t * log_s.masked_fill(p_t == 0, 0.0)).sum(-1) * temperature**2


# Losses by name: the names accepted by ``DistillationTrainingArguments.distillation_loss``.
PER_POSITION_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "forward_kl": per_position_forward_kl,
    "reverse_kl": per_position_reverse_kl,
    "jsd": per_position_jsd,
    "skew_forward_kl": per_position_skew_forward_kl,
    "skew_reverse_kl": per_position_skew_reverse_kl,
    "tvd": per_position_tvd,
    "mse": per_position_mse,
    "soft_cross_entropy": per_position_soft_cross_entropy,
}


def resolve_mask(
    shape: torch.Size,
    *,
    mask: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor | None:
    """Boolean mask of shape ``shape`` (the logits' leading dims) from an explicit mask or from labels."""
    if mask is not None and labels is not None:
        raise ValueError(
            "Both `mask` and `labels` were given to a distillation loss; pass one of them: `labels` masks "
            "positions equal to -100, `mask` is an explicit boolean mask."
        )
    if labels is not None:
        mask = labels != IGNORE_INDEX
    if mask is None:
        return None
    if mask.shape != shape:
        raise ValueError(
            f"The loss mask has shape {tuple(mask.shape)} but the logits have leading shape {tuple(shape)}; "
            "the mask (or labels) must have one entry per position. For causal LMs, shift logits and labels "
            "first (logits[:, :-1], labels[:, 1:])."
        )
    return mask.to(device=device, dtype=torch.bool)


def neutralise_masked(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Both logit tensors with the rows of masked positions set to 0 when any of those rows holds inf/NaN;
    shapes ``(..., C)`` (the two last dims may differ), mask ``(...)``.

    Zeroing the loss of a masked position afterwards is not enough: its gradient is 0 times the
    derivative of the softmax or divergence there, and inf/NaN logits (padding, a teacher's unused rows)
    make that derivative NaN, and 0 * NaN = NaN. Zero rows give finite values, which the reduction drops.
    Finite masked rows already give a zero gradient, so the common case keeps the tensors as they are: only
    the masked rows are read (usually a few padding positions), and no new (N, C) tensor is made.
    """
    masked = ~mask
    rows_are_finite = bool(torch.isfinite(student_logits[masked]).all()) and bool(
        torch.isfinite(teacher_logits[masked]).all()
    )
    if rows_are_finite:
        return student_logits, teacher_logits
    keep = mask.unsqueeze(-1)
    return torch.where(keep, student_logits, 0.0), torch.where(keep, teacher_logits, 0.0)


def reduce_positions(
    per_position: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Masks and reduces per-position losses.

    ``"mean"``: sum over unmasked positions / ``num_items_in_batch`` (or the unmasked count, at least 1).
    ``"sum"``: sum over unmasked positions. ``"none"``: the per-position tensor with masked positions set to 0.
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"Unknown reduction {reduction!r}; choose one of {REDUCTIONS}.")
    if mask is not None:
        # `where` rather than multiply: a masked position's value may be inf/NaN, and 0 * inf is NaN. This
        # keeps the value finite only; the gradient needs the logits neutralised too (neutralise_masked).
        per_position = torch.where(mask, per_position, torch.zeros_like(per_position))
    if reduction == "none":
        return per_position
    total = per_position.sum()
    if reduction == "sum":
        return total
    if num_items_in_batch is not None:
        denominator = torch.as_tensor(num_items_in_batch, device=total.device, dtype=total.dtype)
    elif mask is not None:
        denominator = mask.sum().to(total.dtype)
    else:
        denominator = torch.tensor(float(per_position.numel()), device=total.device)
    return total / denominator.clamp_min(1)


def check_loss_name(name: str) -> None:
    if name not in PER_POSITION_LOSSES:
        raise ValueError(
            f"Unknown distillation loss {name!r}. Choose one of {sorted(PER_POSITION_LOSSES)} "
            "(forward_kl is the classic Hinton et al. loss)."
        )


def loss_kwargs(loss: str, *, beta: float = 0.5, skew_lambda: float = 0.1) -> dict[str, float]:
    """The extra keyword a per-position loss takes beyond temperature (``jsd``: beta, ``skew_*``: skew_lambda),
    range-checked.

    Shared by the plain, chunked and top-k losses so all three accept and refuse the same values.
    """
    if loss == "jsd":
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"JSD beta must be in [0, 1] (0 is forward KL, 1 reverse KL), got {beta}.")
        return {"beta": beta}
    if loss.startswith("skew_"):
        if not 0.0 <= skew_lambda < 1.0:
            raise ValueError(
                f"skew_lambda must be in [0, 1), got {skew_lambda}: at 1 the skewed distribution equals the "
                "first one and the loss is identically 0."
            )
        return {"skew_lambda": skew_lambda}
    return {}


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
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
    """The distillation loss ``loss`` between student and teacher logits, masked and reduced.

    Args:
        student_logits: ``(N, C)`` or ``(B, T, V)``.
        teacher_logits: same shape as ``student_logits`` (no gradient flows into it).
        loss: a key of :data:`PER_POSITION_LOSSES`.
        temperature: softening temperature ``T > 0`` (KL-family losses are multiplied by ``T**2``).
        mask: boolean ``(N,)`` / ``(B, T)``; or ``labels`` with ``-100`` at ignored positions.
        reduction: ``"mean"`` (batch-mean over unmasked positions), ``"sum"`` or ``"none"``.
        num_items_in_batch: divisor for ``"mean"`` across gradient accumulation (see module docstring).
        beta: JSD interpolation (``jsd`` only). skew_lambda: mixing weight (``skew_*`` only).

    Returns:
        A scalar, or the per-position losses for ``reduction="none"``.
    """
    check_loss_name(loss)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "differ in shape; distillation compares the two distributions position by position, so the "
            "teacher and student must share the label set / vocabulary."
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 to soften distributions, got {temperature}.")
    extra = loss_kwargs(loss, beta=beta, skew_lambda=skew_lambda)
    teacher_logits = teacher_logits.detach()
    resolved = resolve_mask(student_logits.shape[:-1], mask=mask, labels=labels, device=student_logits.device)
    if resolved is not None:
        student_logits, teacher_logits = neutralise_masked(student_logits, teacher_logits, resolved)
    per_position = PER_POSITION_LOSSES[loss](student_logits, teacher_logits, temperature=temperature, **extra)
    return reduce_positions(
        per_position, resolved, reduction=reduction, num_items_in_batch=num_items_in_batch
    )


def task_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Hard-label cross-entropy with the same masking and normalisation as :func:`distillation_loss`.

    Computing the task term here (rather than taking ``outputs.loss`` from the model) keeps both terms
    divided by the same count, which is what makes gradient accumulation exact.

    Args:
        logits (Tensor): ``(..., C)`` student logits, e.g. ``(N, C)`` or ``(B, T, V)`` (causal LMs: shifted
            already, ``logits[:, :-1]``). Computed in float32 at least.
        labels (Tensor): ``(...)``, the logits' leading shape: class ids, -100 at ignored positions.
        reduction (str): ``"mean"`` (sum over unmasked positions / ``num_items_in_batch`` or their count),
            ``"sum"``, or ``"none"`` (per-position losses ``(...)``, 0 where ignored). Default ``"mean"``.
        num_items_in_batch (int | Tensor | None): divisor for ``"mean"`` across gradient accumulation (the
            Trainer's count of labelled positions over the accumulated batches); None divides by this
            batch's count.

    Returns:
        Tensor: a scalar, or ``(...)`` for ``reduction="none"``.

    Raises:
        ValueError: an unknown ``reduction``.
    """
    per_position = F.cross_entropy(
        upcast(logits).reshape(-1, logits.shape[-1]),
        labels.reshape(-1).long(),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).reshape(labels.shape)
    return reduce_positions(
        per_position, labels != IGNORE_INDEX, reduction=reduction, num_items_in_batch=num_items_in_batch
    )
