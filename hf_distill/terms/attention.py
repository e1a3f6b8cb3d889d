"""Attention-map matching (TinyBERT, Jiao et al. 2020; MiniLM, Wang et al. 2020) between mapped layers.

The layer map is the hidden-state map of :class:`~hf_distill.DistillationTrainingArguments`
(``hidden_layer_map``): hidden-state index ``i >= 1`` is the output of layer ``i``, whose attention map is
``attentions[i - 1]``. Index 0 (the embeddings) has no attention map, so pairs naming it are left out of
attention matching.

Two relations are matched, both as a KL divergence per query position, averaged over heads:

* attention distributions ``A = softmax(Q K^T / sqrt(d))``, ``(B, H, T, T)`` as returned by a model called
  with ``output_attentions=True`` (MiniLM's first term; TinyBERT matches the same maps with an MSE);
* value relations ``VR = softmax(V V^T / sqrt(d_r))`` over ``R`` relation heads (MiniLM's second term),
  computed from the value projections captured with :class:`ValueCapture`. Splitting values into relation
  heads of their own lets student and teacher differ in width and head count.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hf_distill.losses.divergences import upcast

# Module names of the per-layer value projections, in layer order, for the architectures we know.
_VALUE_SUFFIXES = (".attention.self.value", ".self_attn.v_proj", ".attention.v_proj", ".attn.v_proj")


def attention_layer_pairs(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Hidden-state pairs -> pairs of indices into ``attentions`` (layer ``i`` is ``attentions[i - 1]``)."""
    mapped = [(s - 1, t - 1) for s, t in pairs if s > 0 and t > 0]
    if not mapped:
        raise ValueError(
            f"The layer map {pairs} pairs only embedding outputs (index 0), which have no attention map; "
            "map at least one transformer layer (index >= 1) for attention matching, or set attention_weight=0."
        )
    return mapped


def _row_kl(teacher_probs: torch.Tensor, student_probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the last dim, ``(..., T, T) -> (..., T)``; 0 * log 0 counts as 0."""
    teacher_probs, student_probs = upcast(teacher_probs), upcast(student_probs)
    # clamp: a student probability that is exactly 0 (a masked key, or attention dropout) must not give inf.
    log_student = student_probs.clamp_min(1e-12).log()
    return (torch.xlogy(teacher_probs, teacher_probs) - teacher_probs * log_student).sum(-1)


def attention_map_loss(
    student_attention: torch.Tensor, teacher_attention: torch.Tensor, query_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Sum over unmasked query positions of the head-averaged KL(A_teacher || A_student).

    Shapes: ``(B, H_s, T, T)`` and ``(B, H_t, T, T)`` attention probabilities, ``query_mask`` ``(B, T)``.
    With ``H_s == H_t`` head ``h`` matches head ``h``; otherwise both are averaged over their heads first
    (the mean of distributions is a distribution). The caller divides by the token count so that the
    normalisation can span gradient accumulation.
    """
    if student_attention.shape[-2:] != teacher_attention.shape[-2:]:
        raise ValueError(
            f"Student attention maps {tuple(student_attention.shape)} and teacher maps "
            f"{tuple(teacher_attention.shape)} cover different sequence lengths; run both on the same inputs."
        )
    teacher_attention = teacher_attention.detach()
    if student_attention.shape[1] != teacher_attention.shape[1]:
        student_attention = student_attention.mean(1, keepdim=True)
        teacher_attention = teacher_attention.mean(1, keepdim=True)
    per_query = _row_kl(teacher_attention, student_attention).mean(1)  # (B, T)
    if query_mask is not None:
        per_query = torch.where(query_mask.bool(), per_query, torch.zeros_like(per_query))
    return per_query.sum()


def value_relation(
    values: torch.Tensor, num_relation_heads: int, key_mask: torch.Tensor | None
) -> torch.Tensor:
    """``(B, T, D)`` values -> ``(B, R, T, T)`` relations ``softmax(V_r V_r^T / sqrt(D / R))`` (MiniLM)."""
    batch, length, width = values.shape
    if width % num_relation_heads:
        raise ValueError(
            f"The value width {width} is not divisible by value_relation_heads={num_relation_heads}; pick a "
            "number of relation heads that divides both the student's and the teacher's hidden size."
        )
    head_width = width // num_relation_heads
    split = upcast(values).view(batch, length, num_relation_heads, head_width).transpose(1, 2)
    scores = split @ split.transpose(-1, -2) / math.sqrt(head_width)
    if key_mask is not None:
        # Padding keys get no probability, as in the attention itself.
        scores = scores.masked_fill(~key_mask.bool()[:, None, None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


def value_relation_loss(
    student_values: torch.Tensor,
    teacher_values: torch.Tensor,
    num_relation_heads: int,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum over unmasked query positions of the relation-head-averaged KL(VR_teacher || VR_student).

    Shapes: ``(B, T, D_s)``, ``(B, T, D_t)``, ``mask`` ``(B, T)``. Widths may differ: each side is split into
    ``num_relation_heads`` heads of its own width, so the relations are ``(B, R, T, T)`` on both sides.
    """
    student_relation = value_relation(student_values, num_relation_heads, mask)
    teacher_relation = value_relation(teacher_values.detach(), num_relation_heads, mask)
    per_query = _row_kl(teacher_relation, student_relation).mean(1)
    if mask is not None:
        per_query = torch.where(mask.bool(), per_query, torch.zeros_like(per_query))
    return per_query.sum()


def value_projections(model: nn.Module) -> list[nn.Module]:
    """The per-layer value projections of ``model``, in layer order."""
    found = [module for name, module in model.named_modules() if name.endswith(_VALUE_SUFFIXES)]
    if not found:
        raise ValueError(
            f"Found no value projections in {type(model).__name__} (looked for modules named like "
            f"{_VALUE_SUFFIXES}); value-relation matching supports BERT-like and Llama-like attention. "
            "Set value_relation_weight=0 for this model."
        )
    return found


class ValueCapture:
    """Keeps the latest output of each of a model's value projections (forward hooks).

    Only the most recent forward pass is held, one ``(B, T, D)`` tensor per layer, and :meth:`take` hands them
    over and forgets them, so generation or evaluation between two training steps holds no growing list.
    """

    def __init__(self, model: nn.Module):
        self._latest: dict[int, torch.Tensor] = {}
        self._handles = [
            module.register_forward_hook(self._hook_for(index))
            for index, module in enumerate(value_projections(model))
        ]

    def _hook_for(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self._latest[index] = output

        return hook

    def take(self) -> list[torch.Tensor]:
        """The values of the last forward pass in layer order; the capture is emptied."""
        values = [self._latest[i] for i in sorted(self._latest)]
        self._latest = {}
        return values

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
