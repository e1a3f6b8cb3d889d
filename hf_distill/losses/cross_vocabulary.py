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
"""

from __future__ import annotations

import torch

from hf_distill.losses.divergences import upcast
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
    scaled = upcast(values) / temperature
    floor = very_negative(scaled.dtype)
    tail = (
        torch.full(scaled.shape[:-1], floor, dtype=scaled.dtype, device=scaled.device)
        if tail is None
        else tail
    )
    tail = upcast(tail).to(scaled.dtype).clamp_min(floor)
    log_z = torch.logsumexp(torch.cat([scaled, tail.unsqueeze(-1)], dim=-1), dim=-1)
    return scaled - log_z.unsqueeze(-1), tail - log_z


def per_position_uld(
    student_logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    teacher_log_rest: torch.Tensor,
    *,
    temperature: float,
) -> torch.Tensor:
    """ULD distance per position: ``(..., V_s)``, ``(..., k)``, ``(...)`` -> ``(...)``.

    ``p_s = softmax(z_s / T)``; the teacher's ``k`` probabilities (mass ``1 - exp(log_rest)``) sorted
    decreasingly against the student's ``min(k, V_s)`` largest, see :func:`sorted_l1`.
    """
    p_s = torch.softmax(upcast(student_logits) / temperature, dim=-1)
    p_t = teacher_log_p.exp()
    a = p_t.sort(dim=-1, descending=True).values
    b = p_s.topk(min(a.shape[-1], p_s.shape[-1]), dim=-1).values
    ones = torch.ones_like(teacher_log_rest)
    return sorted_l1(a, ones, b, ones.to(b.dtype))


def _masked_xlogy_diff(p: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    # p * (log p - log q) with exact zeros (value and gradient) where p == 0, like hf_distill.losses.divergences.
    diff = (log_p - log_q).masked_fill(p == 0, 0.0)
    return p * diff


def per_position_aligned(
    student_logits: torch.Tensor,
    teacher_log_p: torch.Tensor,
    teacher_log_rest: torch.Tensor,
    student_ids: torch.Tensor,
    matched: torch.Tensor,
    *,
    temperature: float,
) -> torch.Tensor:
    """The hybrid loss per position: ``(..., V_s)``, ``(..., k)``, ``(...)``, ``(..., k)``, ``(...)`` -> ``(...)``.

    ``student_ids``: the student id of each listed teacher token, ``-1`` where the student has none
    (broadcastable to ``teacher_log_p``); ``matched``: bool, the position's prefix ends at the same text
    offset in both tokenizations. Matched: ``T^2 * KL(buckets) + ULD(rest)``; unmatched: ULD of the whole
    distributions (see the module docstring).
    """
    log_s = torch.log_softmax(upcast(student_logits) / temperature, dim=-1)
    floor = very_negative(log_s.dtype)
    student_ids = student_ids.expand_as(teacher_log_p)
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
    a = torch.where(shared, 0.0, p_t).sort(dim=-1, descending=True).values
    p_s_rest = log_s.exp().masked_fill(covered, 0.0)
    b = p_s_rest.topk(min(a.shape[-1], p_s_rest.shape[-1]), dim=-1).values
    uld_rest = sorted_l1(a, rest_t, b, log_rest_s.exp())
    matched_loss = kl * temperature**2 + uld_rest
    matched = matched.expand(matched_loss.shape)
    if bool(matched.all()):
        return matched_loss
    # The whole-distribution ULD only where it is used: its sorts are the step's most expensive part.
    unmatched = ~matched
    whole = per_position_uld(
        student_logits[unmatched],
        teacher_log_p[unmatched],
        teacher_log_rest[unmatched],
        temperature=temperature,
    )
    return matched_loss.masked_scatter(unmatched, whole)
