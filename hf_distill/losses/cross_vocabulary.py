"""Distillation losses between models whose vocabularies differ: pure per-position functions.

The teacher arrives in one form for both losses, the form a top-k cache holds (see
:mod:`hf_distill.losses.topk`): at temperature ``T``, the log-probabilities ``log p_t`` of ``k`` of its tokens
(all ``V_t`` of them for a live teacher) and the log-mass of all its other tokens (``-inf`` / very negative
when ``k = V_t``). Each of those ``k`` tokens carries the student id with the same string, or ``-1`` when
the student's vocabulary has no such token (:mod:`hf_distill.token_alignment` builds the map).

- :func:`per_position_uld`: Universal Logit Distillation (Boizard et al., 2024). Both probability vectors
  sorted in decreasing order and zero-padded to one length, then the L1 distance
  ``sum_i |sort(p_s)_i - sort(p_t)_i|`` (the Wasserstein-1 distance between the two sorted vectors). No token
  identity is used, so any two vocabularies compare. Softened at ``T`` but, like ``tvd``, not scaled by ``T^2``.
- :func:`per_position_aligned`: on positions whose prefixes match in both tokenizations, the tokens both
  vocabularies share are compared token by token: ``T^2 * KL`` between the ``(M + 1)``-outcome distributions
  "each shared token of the teacher's k, or anything else", plus the ULD term of the "anything else" mass
  (the sorted probabilities of the tokens not in those buckets). Unmatched positions take the ULD term of
  the whole distributions. With identical tokenizers every token is shared and every position matched, the
  "anything else" mass is 0 on both sides, and the loss is exactly ``T^2 * KL(p_t || p_s)``, the
  same-vocabulary forward KL.

Truncated teachers (``k < V_t``): the ULD term compares the ``k`` sorted entries and the remaining masses as
one entry each, a lower bound of the full distance (``|sum a - sum b| <= sum |a - b|``); with ``k >= V_t`` it
is exact. Shapes: positions flattened or not, ``(..., V_s)`` student logits, ``(..., k)`` teacher entries.

Cost. With a live teacher (``k = V_t``) both losses sort whole vocabularies at every position. The exact
losses (``top_k=None``) are kept cheap by: NumPy's vectorised sort on CPU (:mod:`hf_distill.losses.sorting`),
the student's probabilities and their order from one sort of packed int64 keys instead of an argsort and a
gather, the teacher's log-probabilities sorted and then exponentiated in place;
``teacher_rows``, which gives the teacher once per teacher position so a row several student positions use is
sorted once; ``aligned`` with one vocabulary map for all positions sorting only the unshared columns; and the
sorted L1's gradient written out (:func:`sorted_l1_to_probs`).

Top-k form (``top_k=K``, ``cross_tokenizer_top_k``): every sorted comparison (the whole distributions in
``uld``, the "anything else" mass in ``aligned``) keeps each side's ``K`` largest entries (``torch.topk``, a
partial selection, no full sort) and compares the rest as one bucket each:
``T_K = sum_{i<K} |a_i - b_i| + |alpha - beta|``, where ``a``, ``b`` are the two sides sorted decreasingly
and zero-padded, and ``alpha = sum_{i>=K} a_i``, ``beta = sum_{i>=K} b_i`` their tails. Against the exact
``E = sum_i |a_i - b_i|``, since ``|x - y| = x + y - 2 min(x, y)`` for ``x, y >= 0``:

    E - T_K = sum_{i>=K} |a_i - b_i| - |alpha - beta| = 2 * (min(alpha, beta) - sum_{i>=K} min(a_i, b_i))

so ``0 <= E - T_K <= 2 * min(alpha, beta)``: the top-k loss is a lower bound of the exact one, short of it by at
most twice the smaller tail mass, and exact when either side has at most ``K`` entries (``K >= min(V_s, V_t)``
for ``uld``) or no mass beyond them. The ``aligned`` KL over the shared-token buckets stays exact.
"""

from __future__ import annotations

import torch

from hf_distill.losses.divergences import soften, upcast
from hf_distill.losses.sorting import descending, descending_with_order
from hf_distill.losses.topk import very_negative


def sorted_l1(a: torch.Tensor, a_total: torch.Tensor, b: torch.Tensor, b_total: torch.Tensor) -> torch.Tensor:
    """``sum_i |a_i - b_i|`` over the first ``L = min(La, Lb)`` entries of two decreasingly sorted vectors,
    plus ``|(a_total - sum a_:L) - (b_total - sum b_:L)|`` for the mass beyond them.

    ``a (..., La)``, ``b (..., Lb)`` sorted decreasingly; ``a_total``, ``b_total`` ``(...)`` the vectors' full
    masses (which may exceed the listed entries). When one vector is listed whole, the second term is exactly
    the other's entries beyond ``L`` against zero padding.
    """
    length = min(a.shape[-1], b.shape[-1])
    a_head, b_head = a[..., :length], b[..., :length]
    beyond = (a_total - a_head.sum(-1)) - (b_total - b_head.sum(-1))
    return (a_head - b_head).abs().sum(-1) + beyond.abs()


def teacher_log_probs(
    values: torch.Tensor, tail: torch.Tensor | None, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher log-probabilities of its listed entries and the log-mass of the rest, at ``temperature``.

    ``values (..., k)``: raw logits; ``tail (...)``: the log-sum-exp of the other tokens' logits already
    divided by ``T`` (the top-k cache's ``teacher_tail_logit``), or None when all tokens are listed.
    Returns ``(log_p (..., k), log_rest (...))``, normalised together.
    """
    scaled = soften(values, temperature)
    floor = very_negative(scaled.dtype)
    if tail is None:
        # A live teacher lists every token: one log-softmax, with no tail column to append (a copy of the
        # whole distribution) that would add exactly 0 to the normaliser.
        return torch.log_softmax(scaled, dim=-1), torch.full_like(scaled[..., 0], floor)
    tail = upcast(tail).to(scaled.dtype).clamp_min(floor)
    log_z = torch.logsumexp(torch.cat([scaled, tail.unsqueeze(-1)], dim=-1), dim=-1)
    return scaled - log_z.unsqueeze(-1), tail - log_z


def check_top_k(top_k: int | None) -> None:
    """Raises ValueError unless ``top_k`` is None (the exact losses) or an integer >= 1."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(
            f"top_k must be None (the exact sorted comparison) or an integer >= 1, got {top_k!r}: it is how many "
            "of each side's largest probabilities ULD compares one by one before the rest as one bucket."
        )


def largest_log_probs_as_probs(log_p: torch.Tensor, top_k: int | None) -> torch.Tensor:
    """The probabilities of ``log_p (..., L)`` sorted decreasingly, only the ``top_k`` largest when ``top_k`` is
    shorter than ``L``, without gradient.

    Args:
        log_p (Tensor): ``(..., L)`` log-probabilities (or log-masses).
        top_k (int | None): how many to keep; None or ``>= L``: all of them (a full sort).

    Returns:
        Tensor: ``(..., min(top_k, L))`` decreasing along the last dimension.
    """
    log_p = log_p.detach()
    if top_k is None or top_k >= log_p.shape[-1]:
        # exp is increasing: sort the log-probabilities, then exponentiate the sorted copy in place (the same
        # values as sorting the probabilities, one (..., L) tensor fewer).
        return descending(log_p).exp_()
    if top_k * 64 > log_p.shape[-1]:
        # NumPy's whole sort beats topk's selection here: (512, 12,191) float32 rows, 0.016 s against 0.028 s
        # for K = 256; (512, 49,152), 0.070 s against 0.116 s for K = 1,024 (and 0.044 s for K = 256).
        return descending(log_p)[..., :top_k].exp()
    # exp is increasing: select among the log-probabilities, then exponentiate only the K kept.
    return log_p.topk(top_k, dim=-1).values.exp()


def sorted_teacher_probs(
    teacher_log_p: torch.Tensor, teacher_rows: torch.Tensor | None = None, top_k: int | None = None
) -> torch.Tensor:
    """The teacher's probabilities sorted decreasingly, each distinct teacher row sorted once.

    Args:
        teacher_log_p (Tensor): ``(..., k)`` log-probabilities; ``(P, k)`` teacher rows when ``teacher_rows``
            is given.
        teacher_rows (Tensor | None): ``(N,)`` the teacher row of each student position; rows used by several
            positions are sorted once. None: ``teacher_log_p`` is already one row per position.
        top_k (int | None): keep only each row's ``top_k`` largest (a partial selection); None: all.

    Returns:
        Tensor: ``(..., K)`` (``(N, K)`` with ``teacher_rows``), ``K = min(top_k, k)``, decreasing along the
        last dimension, no gradient.
    """
    if teacher_rows is None:
        return largest_log_probs_as_probs(teacher_log_p, top_k)
    unique, inverse = torch.unique(teacher_rows, return_inverse=True)
    return largest_log_probs_as_probs(teacher_log_p[unique], top_k)[inverse]


def _largest_with_order(probs: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    # A short head: topk's selection beats a full sort ((512, 13,296) float32 rows, K = 1,024: 0.037 s
    # against 0.046 s; (512, 50,257), K = 1,024: 0.11 s against 0.21 s). The values come without gradient
    # from the sort, with it from topk.
    if count * 8 <= probs.shape[-1]:
        return probs.topk(count, dim=-1)
    values, order = descending_with_order(probs)
    return values[..., :count], order[..., :count]


def largest_first(probs: torch.Tensor, count: int) -> torch.Tensor:
    """The ``min(count, L)`` largest entries of ``probs (..., L)``, decreasing, with their gradient (what
    ``probs.topk(count).values`` gives, without ``topk``'s cost when ``count`` is near ``L``)."""
    values, order = _largest_with_order(probs, min(count, probs.shape[-1]))
    return probs.gather(-1, order) if probs.requires_grad and not values.requires_grad else values


class _SortedL1ToProbs(torch.autograd.Function):
    """:func:`sorted_l1` against the student's sorted probabilities, its gradient written out: at the ``i``-th
    largest entry ``sign(b_i - a_i) + sign(beyond)`` (the derivative of ``|a_i - b_i| + |beyond|``), 0 past the
    compared head; to ``b_total``, ``-sign(beyond)``. Autograd through ``gather``, ``sub``, ``abs`` and ``sum``
    would keep three ``(N, L)`` float tensors and run six passes over them; this keeps the order and int8
    signs and scatters once."""

    @staticmethod
    def forward(ctx, a, a_total, probs, b_total):
        length = min(a.shape[-1], probs.shape[-1])
        b, order = _largest_with_order(probs, length)
        a_head = a[..., :length]
        beyond = (a_total - a_head.sum(-1)) - (b_total - b.sum(-1))
        # b is this function's own (N, L) tensor (gathered or selected): the differences and their absolute
        # values overwrite it instead of two more (N, L) tensors.
        diff = b.sub_(a_head)
        ctx.save_for_backward(order, diff.sign().to(torch.int8), beyond.sign())
        ctx.probs_shape = probs.shape
        return diff.abs_().sum(-1) + beyond.abs()

    @staticmethod
    def backward(ctx, grad):
        order, sign_head, sign_beyond = ctx.saved_tensors
        grad_probs = grad_b_total = None
        if ctx.needs_input_grad[2]:
            coefficient = sign_head.to(grad.dtype)
            coefficient.add_(sign_beyond.unsqueeze(-1).to(grad.dtype)).mul_(grad.unsqueeze(-1))
            # When the order is a whole permutation of each row, the scatter writes every entry: no zero fill.
            whole = order.shape[-1] == ctx.probs_shape[-1]
            grad_probs = (
                coefficient.new_empty(ctx.probs_shape) if whole else coefficient.new_zeros(ctx.probs_shape)
            )
            grad_probs.scatter_(-1, order, coefficient)
        if ctx.needs_input_grad[3]:
            grad_b_total = -sign_beyond * grad
        return None, None, grad_probs, grad_b_total


def sorted_l1_to_probs(
    a: torch.Tensor, a_total: torch.Tensor, probs: torch.Tensor, b_total: torch.Tensor
) -> torch.Tensor:
    """``sorted_l1(a, a_total, largest_first(probs, La), b_total)``: the same value and gradient, at a fraction
    of autograd's memory and passes when ``probs`` is a whole vocabulary.

    Args:
        a (Tensor): ``(N, La)`` decreasing, without gradient (the teacher's side).
        a_total (Tensor): ``(N,)`` the mass ``a`` is part of, without gradient.
        probs (Tensor): ``(N, L)`` unsorted probabilities (the student's side), with gradient.
        b_total (Tensor): ``(N,)`` the mass ``probs`` is part of, with or without gradient.

    Returns:
        Tensor: ``(N,)``.
    """
    if a.requires_grad or a_total.requires_grad:  # a gradient to the sorted side too: autograd's own path
        return sorted_l1(a, a_total, largest_first(probs, a.shape[-1]), b_total)
    return _SortedL1ToProbs.apply(a, a_total, probs, b_total)


def per_position_uld(
    student_logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    teacher_log_rest: torch.Tensor,
    *,
    temperature: float,
    teacher_rows: torch.Tensor | None = None,
    top_k: int | None = None,
) -> torch.Tensor:
    """ULD distance per position: ``(..., V_s)``, ``(..., k)``, ``(...)`` -> ``(...)``.

    ``p_s = softmax(z_s / T)``; the teacher's ``k`` probabilities (mass ``1 - exp(log_rest)``) sorted
    decreasingly against the student's ``min(k, V_s)`` largest, see :func:`sorted_l1`. With ``teacher_rows``
    (``(N,)``), the student's positions are ``(N, V_s)`` and the teacher is given once per teacher position,
    ``(P, k)`` and ``(P,)``: position ``i`` is compared with teacher row ``teacher_rows[i]``, and each row is
    sorted once however many positions use it. With ``top_k``, each side's ``top_k`` largest and one tail
    bucket each (the module docstring's top-k form: at most ``2 * min(tails)`` below the exact value).
    """
    check_top_k(top_k)
    p_s = torch.softmax(soften(student_logits, temperature), dim=-1)
    a = sorted_teacher_probs(teacher_log_p, teacher_rows, top_k)
    ones = torch.ones(a.shape[:-1], dtype=a.dtype, device=a.device)
    return sorted_l1_to_probs(a, ones, p_s, ones.to(p_s.dtype))


def _masked_xlogy_diff(p: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    # p * (log p - log q) with exact zeros (value and gradient) where p == 0, like hf_distill.losses.divergences.
    diff = (log_p - log_q).masked_fill(p == 0, 0.0)
    return p * diff


def _matched_by_entries(
    student_logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    teacher_log_rest: torch.Tensor,
    student_ids: torch.Tensor,
    temperature: float,
    top_k: int | None,
) -> torch.Tensor:
    """The matched-position loss when each position lists its own teacher tokens (a top-k cache): ``(N, V_s)``,
    ``(N, k)``, ``(N,)``, ``(N, k)`` -> ``(N,)``."""
    log_s = torch.log_softmax(soften(student_logits, temperature), dim=-1)
    floor = very_negative(log_s.dtype)
    shared = student_ids >= 0
    ids = student_ids.clamp_min(0).long()
    p_t = teacher_log_p.exp()
    # Teacher buckets: each shared listed token, and the rest (unshared listed tokens + the unlisted tail).
    log_rest_t = torch.logsumexp(
        torch.cat([teacher_log_p.masked_fill(shared, floor), teacher_log_rest.unsqueeze(-1)], dim=-1), dim=-1
    )
    # Student buckets: the same student ids, and everything else. scatter_add counts each id once however
    # many unshared entries point at the clamped id 0.
    covered = torch.zeros_like(log_s).scatter_add(-1, ids, shared.to(log_s.dtype)) > 0
    log_rest_s = torch.logsumexp(log_s.masked_fill(covered, floor), dim=-1).clamp_min(floor)
    log_s_shared = log_s.gather(-1, ids)
    kl = _masked_xlogy_diff(torch.where(shared, p_t, 0.0), teacher_log_p, log_s_shared).sum(-1)
    rest_t = log_rest_t.exp()
    kl = kl + _masked_xlogy_diff(rest_t, log_rest_t, log_rest_s)
    # ULD of the rest: its listed teacher entries against the student's uncovered probabilities.
    a = descending(torch.where(shared, 0.0, p_t))[..., :top_k]  # [..., :None] keeps all
    b = largest_first(log_s.exp().masked_fill(covered, 0.0), a.shape[-1])
    uld_rest = sorted_l1(a, rest_t, b, log_rest_s.exp())
    return kl * temperature**2 + uld_rest


def _matched_by_columns(
    student_logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    teacher_log_rest: torch.Tensor,
    student_ids: torch.Tensor,
    teacher_rows: torch.Tensor | None,
    temperature: float,
    top_k: int | None,
) -> torch.Tensor:
    """The matched-position loss when one vocabulary map ``student_ids (k,)`` serves every position (a live
    teacher): the shared tokens, and so the rest, are the same columns at every position, so each side's
    rest is taken out as those columns and only they are sorted (12,191 of SmolLM2's 49,152 tokens against
    13,296 of GPT-2's, instead of both whole vocabularies). The same value as :func:`_matched_by_entries`,
    term for term: ``(N, V_s)``, ``(P, k)``, ``(P,)``, ``(k,)``, ``(N,)`` or None -> ``(N,)``."""
    log_s = torch.log_softmax(soften(student_logits, temperature), dim=-1)
    floor = very_negative(log_s.dtype)
    shared = student_ids >= 0
    teacher_shared, teacher_rest = shared.nonzero()[:, 0], (~shared).nonzero()[:, 0]
    twins = student_ids[teacher_shared].long()
    covered = torch.zeros(log_s.shape[-1], dtype=torch.bool, device=log_s.device).index_fill(0, twins, True)
    student_rest = (~covered).nonzero()[:, 0]
    # The teacher's side, once per teacher row in use (no gradient), then moved to the positions.
    # Each side's columns are taken in one gather, shared first, then split: on the student's side its gradient
    # is then one scatter into one zero-filled (N, V_s) tensor instead of two.
    inverse, teacher_columns = None, torch.cat([teacher_shared, teacher_rest])
    if teacher_rows is not None:
        unique, inverse = torch.unique(teacher_rows, return_inverse=True)
        teacher_log_p, teacher_log_rest = (
            teacher_log_p[unique.unsqueeze(-1), teacher_columns],
            teacher_log_rest[unique],
        )
    else:
        teacher_log_p = teacher_log_p[:, teacher_columns]
    log_p_shared, log_p_rest = teacher_log_p.split([teacher_shared.numel(), teacher_rest.numel()], dim=-1)
    log_rest_t = torch.logsumexp(torch.cat([log_p_rest, teacher_log_rest.unsqueeze(-1)], dim=-1), dim=-1)
    a = largest_log_probs_as_probs(log_p_rest, top_k)
    if inverse is not None:
        a, log_rest_t, log_p_shared = a[inverse], log_rest_t[inverse], log_p_shared[inverse]
    rest_t = log_rest_t.exp()
    # The student's side: its twins of the shared tokens, and everything else.
    # gather with the columns broadcast to every row, not log_s[:, columns]: its backward is a row-wise
    # scatter_add instead of index_put with accumulation ((512, 50,257) float32, forward and backward: 0.25 s
    # against 0.46 s of CPU).
    columns = torch.cat([twins, student_rest])
    log_s_twins, log_s_rest = log_s.gather(-1, columns.expand(log_s.shape[0], -1)).split(
        [twins.numel(), student_rest.numel()], dim=-1
    )
    log_rest_s = torch.logsumexp(log_s_rest, dim=-1).clamp_min(floor)
    kl = _masked_xlogy_diff(log_p_shared.exp(), log_p_shared, log_s_twins).sum(-1)
    kl = kl + _masked_xlogy_diff(rest_t, log_rest_t, log_rest_s)
    uld_rest = sorted_l1_to_probs(a, rest_t, log_s_rest.exp(), log_rest_s.exp())
    return kl * temperature**2 + uld_rest


def per_position_aligned(
    student_logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    teacher_log_rest: torch.Tensor,
    student_ids: torch.Tensor,
    matched: torch.Tensor,
    *,
    temperature: float,
    teacher_rows: torch.Tensor | None = None,
    top_k: int | None = None,
) -> torch.Tensor:
    """The hybrid loss per position: ``(..., V_s)``, ``(..., k)``, ``(...)``, ``(..., k)``, ``(...)`` -> ``(...)``.

    ``student_ids``: the student id of each listed teacher token, ``-1`` where the student has none
    (``(k,)`` for one map at every position, or ``teacher_log_p``'s shape); ``matched``: bool, the position's
    prefix ends at the same text offset in both tokenizations. Matched: ``T^2 * KL(buckets) + ULD(rest)``;
    unmatched: ULD of the whole distributions (see the module docstring). With ``teacher_rows`` (``(N,)``),
    the positions are ``(N, V_s)`` and ``(N,)``, and the teacher (``student_ids`` too, unless ``(k,)``) is
    given once per teacher position, ``(P, ...)``, as in :func:`per_position_uld`. With ``top_k``, the ULD
    terms (of the rest, and of unmatched positions) take the top-k form of :func:`per_position_uld`; the KL
    over the shared buckets stays exact.
    """
    check_top_k(top_k)
    shape = student_logits.shape[:-1]
    logits = student_logits.reshape(-1, student_logits.shape[-1])
    matched = matched.expand(shape).reshape(-1)
    ids = student_ids
    if ids.dim() > 1:  # each teacher row lists its own tokens
        ids = ids.expand_as(teacher_log_p).reshape(-1, teacher_log_p.shape[-1])
    if teacher_rows is None:  # one teacher row per position
        teacher_log_p = teacher_log_p.reshape(-1, teacher_log_p.shape[-1])
        teacher_log_rest = teacher_log_rest.reshape(-1)
    if ids.dim() == 1:
        matched_loss = _matched_by_columns(
            logits, teacher_log_p, teacher_log_rest, ids, teacher_rows, temperature, top_k
        )
    else:
        if teacher_rows is not None:
            teacher_log_p, teacher_log_rest, ids = (
                teacher_log_p[teacher_rows],
                teacher_log_rest[teacher_rows],
                ids[teacher_rows],
            )
            teacher_rows = None
        matched_loss = _matched_by_entries(logits, teacher_log_p, teacher_log_rest, ids, temperature, top_k)
    if bool(matched.all()):
        return matched_loss.reshape(shape)
    # The whole-distribution ULD only where it is used: its sorts are the step's most expensive part.
    unmatched = ~matched
    rows = torch.arange(logits.shape[0], device=logits.device) if teacher_rows is None else teacher_rows
    whole = per_position_uld(
        logits[unmatched],
        teacher_log_p,
        teacher_log_rest,
        temperature=temperature,
        teacher_rows=rows[unmatched],
        top_k=top_k,
    )
    return matched_loss.masked_scatter(unmatched, whole).reshape(shape)
