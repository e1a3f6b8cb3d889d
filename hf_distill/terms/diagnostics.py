"""What the teacher's target looks like beside the student, logged per step next to the loss parts.

- ``teacher_tail_mass``: the teacher's probability outside its top-k at the training temperature (the
  distribution the KD term matches), averaged over the KD positions. For a top-k target (cache, served
  teacher) it is the tail bucket, ``softmax([z_K / T, tail])[-1]``: how much the target leaves unsaid. For full
  logits it is ``1 - sum of the top-k probabilities`` at ``k = teacher_diagnostics_top_k`` (20 by default, the
  served teacher's default ``k``): what a top-k cache of this teacher at that ``k`` would leave in its tail.
- ``topk_overlap``: the share of the teacher's top-k token ids that are also in the student's top-k (same
  ``k``) at the same position, averaged over the KD positions; 1 when the student ranks the teacher's
  favourites first, whatever their order.
- ``matched_share`` (cross-tokenizer runs): the share of the student's KD positions whose prefix ends where a
  teacher prefix ends (``AlignedTeacher.matched``): the positions where the ``aligned`` loss compares the two
  vocabularies token by token rather than by sorted probabilities.

They are measured on the batches of the steps Trainer logs (:func:`diagnostics_due`), and the logged value is
their mean over those batches. Everything runs under ``no_grad`` and costs one ``topk`` of each side plus a ``logsumexp`` over the teacher's
vocabulary at the KD positions: no sort. The student's top-k needs its logits, so on the chunked KD path (no
student logits) ``topk_overlap`` is left out, and a teacher given as hidden states has no tail mass.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.trainer_utils import IntervalStrategy

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TeacherTarget
from hf_distill.losses.divergences import IGNORE_INDEX
from hf_distill.model_kind import CAUSAL_LM, align_for_distillation

# The names these diagnostics are logged under (``eval_``-prefixed in evaluation): not task metrics.
DIAGNOSTIC_NAMES = ("teacher_tail_mass", "topk_overlap", "matched_share")


def diagnostics_due(args: DistillationTrainingArguments, state: Any, training: bool) -> bool:
    """Whether a batch's diagnostics are measured: in evaluation always, in training on the batches of the
    steps Trainer logs (``logging_steps``, and the first with ``logging_first_step``), so a run pays for them
    once per logged step, not at every step.

    Args:
        args: the run's arguments (``teacher_diagnostics``, the logging strategy).
        state: Trainer's ``TrainerState`` (``global_step`` is the number of steps done; ``logging_steps`` as
            Trainer resolved a ratio of the run into steps, read only when ``args.logging_steps < 1``).
        training: whether the model is training.
    """
    if not args.teacher_diagnostics:
        return False
    if not training:
        return True
    if args.logging_strategy != IntervalStrategy.STEPS:
        return args.logging_strategy == IntervalStrategy.EPOCH  # an epoch's end is not known here: every step
    every = args.logging_steps
    if every < 1:  # a ratio of the run: Trainer turns it into steps on its state when training starts
        every = getattr(state, "logging_steps", None) or 1
    every = max(int(every), 1)
    step = state.global_step + 1  # the step these batches are part of
    return step % every == 0 or (args.logging_first_step and step == 1)


def topk_tail_mass(values: torch.Tensor, tail: torch.Tensor, temperature: float) -> torch.Tensor:
    """The tail bucket's probability of a top-k target: ``(..., k)``, ``(...)`` -> ``(...)``.

    Args:
        values: the raw top-k logits.
        tail: the tail logit at ``temperature`` (``logsumexp`` of the other logits over ``T``).
        temperature: the training temperature.
    """
    buckets = torch.cat([values.float() / temperature, tail.float().unsqueeze(-1)], dim=-1)
    return torch.softmax(buckets, dim=-1)[..., -1]


def logits_tail_mass(logits: torch.Tensor, k: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``1 - sum of the top-k probabilities`` of ``softmax(logits / T)``, and the top-k ids.

    Args:
        logits: full teacher logits ``(..., V)``.
        k: the top tokens counted in (capped at ``V``).
        temperature: the training temperature.

    Returns:
        ``(tail mass (...), top-k ids (..., k))``.
    """
    scaled = logits.float() / temperature
    top = scaled.topk(min(k, scaled.shape[-1]), dim=-1)
    # 1 - exp(logsumexp(top) - logsumexp(all)), without cancelling when the tail is tiny.
    log_top = torch.logsumexp(top.values, dim=-1) - torch.logsumexp(scaled, dim=-1)
    return -torch.expm1(log_top.clamp_max(0.0)), top.indices


def topk_overlap(student_logits: torch.Tensor, teacher_ids: torch.Tensor) -> torch.Tensor:
    """The share of the teacher's top-k ids in the student's top-k: ``(..., V)``, ``(..., k)`` -> ``(...)``.

    Args:
        student_logits: the student's logits.
        teacher_ids: the teacher's top-k token ids (``k <= V``).
    """
    k = teacher_ids.shape[-1]
    student_ids = student_logits.topk(k, dim=-1).indices
    hits = (teacher_ids.unsqueeze(-1) == student_ids.unsqueeze(-2)).any(dim=-1)
    return hits.float().mean(dim=-1)


def kd_positions(head_kind: str, reference: torch.Tensor, batch: DistillationBatch) -> torch.Tensor:
    """The positions the KD term covers, shaped like ``reference[..., 0]`` after the causal shift: label
    positions and transfer rows' positions with labels, the attended positions without.

    Args:
        head_kind: the student's head kind.
        reference: any unshifted per-position tensor of the batch, ``(N, C)`` or ``(B, T, ...)`` (a target).
        batch: the batch (labels, attention mask, transfer positions).
    """
    _, _, kd_labels, mask = align_for_distillation(
        head_kind, reference, None, batch.labels, batch.attention_mask
    )
    if kd_labels is not None:
        transfer = batch.transfer_positions(shifted=head_kind == CAUSAL_LM)
        mask = kd_labels != IGNORE_INDEX if transfer is None else (kd_labels != IGNORE_INDEX) | transfer
    if mask is None:
        shape = (
            reference.shape[:-1] if head_kind != CAUSAL_LM else (reference.shape[0], reference.shape[1] - 1)
        )
        mask = torch.ones(shape, dtype=torch.bool, device=reference.device)
    return mask.to(reference.device).bool()


@torch.no_grad()
def teacher_diagnostics(
    head_kind: str,
    student_logits: torch.Tensor | None,
    target: TeacherTarget,
    batch: DistillationBatch,
    args: DistillationTrainingArguments,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """This batch's diagnostics (module docstring), each a mean over its KD positions; empty when there is
    nothing to measure (no KD position, a teacher given as hidden states on the chunked path). The logit terms
    call it with the KD positions they computed for the loss.

    Args:
        head_kind: the student's head kind (:mod:`hf_distill.model_kind`); causal LMs are shifted like the loss.
        student_logits: the student's logits (unshifted), or None on the chunked path.
        target: the teacher's target for this batch.
        batch: the batch (labels, attention mask, transfer positions).
        args: the run's arguments: ``temperature``, and ``teacher_diagnostics_top_k`` (``k`` for a
            full-logits target; a top-k target keeps its own).
        mask: the KD positions, shaped like the shifted (causal LM) or plain per-position target, when the
            caller has them; else computed from ``batch`` (:func:`kd_positions`).

    Returns:
        ``{"teacher_tail_mass", "topk_overlap", "matched_share"}``, the ones that apply, as 0-d tensors.
    """
    aligned = getattr(target, "aligned", None)
    if aligned is not None:
        return matched_share(aligned.matched, batch, mask)
    shifted, temperature = head_kind == CAUSAL_LM, args.temperature
    if target.topk is None and target.logits is None:
        return {}
    reference = target.topk[0] if target.topk is not None else target.logits
    mask = kd_positions(head_kind, reference, batch) if mask is None else mask.to(reference.device).bool()
    if not bool(mask.any()):
        return {}
    cut = (lambda t: t[:, :-1][mask]) if shifted else (lambda t: t[mask])
    # Only the KD positions are measured: padding and prompt positions cost nothing.
    if target.topk is not None:
        values, ids, tail = (cut(t) for t in target.topk)
        tail_mass = topk_tail_mass(values, tail, temperature)
    else:
        tail_mass, ids = logits_tail_mass(cut(target.logits), args.teacher_diagnostics_top_k, temperature)
    found = {"teacher_tail_mass": tail_mass.mean()}
    if student_logits is not None:
        found["topk_overlap"] = topk_overlap(cut(student_logits).float(), ids).mean()
    return found


def shifted_kd_positions(batch: DistillationBatch, like: torch.Tensor) -> torch.Tensor:
    """A causal LM's KD positions after the shift, ``(B, T - 1)``: the label positions, else the attended ones,
    else every one (the cross-tokenizer term's mask, and :func:`matched_share`'s).

    Args:
        batch: the batch (labels, attention mask).
        like: an unshifted ``(B, T, ...)`` tensor of the batch, for the shape and device.
    """
    if batch.labels is not None:
        mask = batch.labels[:, 1:] != IGNORE_INDEX
    elif batch.attention_mask is not None:
        mask = batch.attention_mask[:, 1:].bool()
    else:
        mask = torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)[:, 1:]
    return mask.to(like.device)


def matched_share(
    matched: torch.Tensor, batch: DistillationBatch, mask: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """``{"matched_share": ...}``: the share of the student's KD positions (shifted, label or attended) where
    the two tokenizations' prefixes end together; empty without a KD position. ``mask``: those positions when
    the caller has them (:func:`shifted_kd_positions`)."""
    mask = shifted_kd_positions(batch, matched) if mask is None else mask.to(matched.device)
    if not bool(mask.any()):
        return {}
    return {"matched_share": matched[:, :-1][mask].float().mean()}
