"""The teacher forms the fused KD loss takes: what the ``teacher`` argument of
:func:`hf_distill.losses.fused.chunked.fused_linear_distillation_loss` may be, one type per form.

- a tensor ``(..., V)`` or :class:`TeacherLogits`: the teacher's full logits, read chunk by chunk;
- :class:`TeacherHead`: the teacher's last hidden states and LM head, its logits made chunk by chunk (they never
  exist whole);
- :class:`TeacherTopk`: the teacher's top-k logits and tail logit (a top-k cache, a served teacher);
- :class:`TeacherChunkFn` (or a bare callable): any per-chunk KD loss, a :data:`KDChunkFn`.

Each form makes its per-chunk KD function for the loss's settings (``chunks``) and checks itself against the
student's positions and vocabulary (``check_matches``). The finiteness check is part of the forms whose logits
the loss reads or makes (``check_finite``): the numbers are checked where they are produced, chunk by chunk.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hf_distill.losses.fused.teacher_chunks import KDChunkFn, teacher_hidden_chunks, teacher_logits_chunks
from hf_distill.losses.topk import topk_chunks


def _check_tensors(form: str, **tensors: Any) -> None:
    for name, value in tensors.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{form}.{name} must be a torch.Tensor, got {type(value).__name__}.")


@dataclass(frozen=True, eq=False)
class TeacherLogits:
    """The teacher's full logits ``(..., V)``, positions shaped like the student's hidden states.

    Args:
        logits (Tensor): ``(..., V)``, already shifted like the student (position t predicts t+1).
        check_finite (bool): raise ``FloatingPointError`` on NaN / +inf logits or an all ``-inf`` row, read from
            the log-sum-exp the loss computes anyway (single ``-inf`` entries, a masked vocabulary, pass).
    """

    logits: torch.Tensor
    check_finite: bool = False

    def __post_init__(self) -> None:
        _check_tensors("TeacherLogits", logits=self.logits)

    def check_matches(self, leading: tuple[int, ...], vocab: int) -> None:
        """Refuses logits whose positions or vocabulary differ from the student's."""
        if tuple(self.logits.shape) != (*leading, vocab):
            raise ValueError(
                f"Teacher logits {tuple(self.logits.shape)} do not match the student's positions {tuple(leading)} "
                f"and vocabulary {vocab}; teacher and student must share the vocabulary and be shifted alike."
            )

    def chunks(self, *, loss: str, temperature: float, beta: float, skew_lambda: float) -> KDChunkFn:
        """The per-chunk KD loss against these logits."""
        return teacher_logits_chunks(
            self.logits, loss=loss, temperature=temperature, beta=beta, skew_lambda=skew_lambda,
            check_finite=self.check_finite,
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class TeacherHead:
    """The teacher's last hidden states and LM head: logits ``hidden @ weight^T (+ bias)`` made chunk by chunk.

    Args:
        hidden (Tensor): ``(..., H_t)``, positions shaped (and shifted) like the student's hidden states.
        weight (Tensor): the teacher's LM head ``(V, H_t)``.
        bias (Tensor | None): ``(V,)`` or None.
        check_finite (bool): raise ``FloatingPointError`` when a chunk's teacher logits hold NaN / +inf or an
            all ``-inf`` row (checked on each chunk as it is made).
    """

    hidden: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None = None
    check_finite: bool = False

    def __post_init__(self) -> None:
        _check_tensors("TeacherHead", hidden=self.hidden, weight=self.weight, bias=self.bias)

    def check_matches(self, leading: tuple[int, ...], vocab: int) -> None:
        """Refuses hidden states or a head whose positions, width or vocabulary do not fit the student's."""
        fits = self.hidden.shape[:-1] == leading and self.weight.shape[0] == vocab
        fits = fits and self.weight.dim() == 2 and self.weight.shape[1] == self.hidden.shape[-1]
        if not fits:
            raise ValueError(
                f"Teacher hidden states {tuple(self.hidden.shape)} with LM head {tuple(self.weight.shape)} "
                f"do not match the student's positions {tuple(leading)} and vocabulary {vocab} (the head is "
                "(vocabulary, teacher hidden size))."
            )
        if self.bias is not None and tuple(self.bias.shape) != (vocab,):
            raise ValueError(
                f"The teacher's LM head bias has shape {tuple(self.bias.shape)}, not ({vocab},): one entry per "
                "vocabulary row of the head."
            )

    def chunks(self, *, loss: str, temperature: float, beta: float, skew_lambda: float) -> KDChunkFn:
        """The per-chunk KD loss against the logits this head makes, one chunk at a time."""
        return teacher_hidden_chunks(
            self.hidden, self.weight, self.bias, loss=loss, temperature=temperature, beta=beta,
            skew_lambda=skew_lambda, check_finite=self.check_finite,
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class TeacherTopk:
    """The teacher's top-k logits and the tail logit (see :mod:`hf_distill.losses.topk`).

    Args:
        values (Tensor): ``(..., k)`` raw top-k logits, positions shaped (and shifted) like the student's.
        indices (Tensor): ``(..., k)`` their vocabulary ids.
        tail (Tensor): ``(...)`` the logit of the mass outside the top k, at the training temperature.
    """

    values: torch.Tensor
    indices: torch.Tensor
    tail: torch.Tensor

    def __post_init__(self) -> None:
        _check_tensors("TeacherTopk", values=self.values, indices=self.indices, tail=self.tail)

    def check_matches(self, leading: tuple[int, ...], vocab: int) -> None:
        """Refuses top-k tensors whose positions differ from the student's."""
        shapes = (self.values.shape[:-1], self.indices.shape[:-1], self.tail.shape)
        if any(tuple(s) != tuple(leading) for s in shapes) or self.values.shape != self.indices.shape:
            raise ValueError(
                f"Teacher top-k values {tuple(self.values.shape)}, indices {tuple(self.indices.shape)} and tail "
                f"{tuple(self.tail.shape)} do not match the student's positions {tuple(leading)}: values and "
                "indices are (..., k), the tail (...), shifted like the student."
            )

    def chunks(self, *, loss: str, temperature: float, beta: float, skew_lambda: float) -> KDChunkFn:
        """The top-k KD loss per chunk, with the fused loss's own settings."""
        return topk_chunks(
            self.values, self.indices, self.tail, loss=loss, temperature=temperature, beta=beta,
            skew_lambda=skew_lambda,
        )  # fmt: skip


@dataclass(frozen=True, eq=False)
class TeacherChunkFn:
    """Any per-chunk KD loss: ``fn(student_logits (n, V), rows (n,)) -> (n,)``, ``rows`` indexing the flattened
    positions. The loss's ``loss`` / ``temperature`` settings do not reach it: it carries its own.

    Args:
        fn (KDChunkFn): the per-chunk loss (e.g. :func:`hf_distill.losses.topk.topk_chunks`).
    """

    fn: KDChunkFn

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise TypeError(f"TeacherChunkFn.fn must be callable, got {type(self.fn).__name__}.")

    def check_matches(self, leading: tuple[int, ...], vocab: int) -> None:
        """Nothing to compare: the function indexes its own tensors."""

    def chunks(self, **_settings: Any) -> KDChunkFn:
        return self.fn


TeacherForm = TeacherLogits | TeacherHead | TeacherTopk | TeacherChunkFn
FORMS = (TeacherLogits, TeacherHead, TeacherTopk, TeacherChunkFn)


def as_teacher_form(teacher: Any) -> TeacherForm:
    """The form ``teacher`` names: a tensor is :class:`TeacherLogits`, a callable :class:`TeacherChunkFn`."""
    if isinstance(teacher, FORMS):
        return teacher
    if isinstance(teacher, torch.Tensor):
        return TeacherLogits(teacher)
    if isinstance(teacher, nn.Module):
        raise TypeError(
            f"teacher= got a model ({type(teacher).__name__}); the fused loss takes the teacher's numbers, not the "
            "model: its logits tensor, TeacherHead(last_hidden, lm_head.weight, lm_head.bias) or TeacherTopk(...)."
        )
    if callable(teacher):
        return TeacherChunkFn(teacher)
    raise TypeError(
        f"teacher= got a {type(teacher).__name__}; pass one teacher form: a logits tensor (..., V), "
        "TeacherLogits, TeacherHead, TeacherTopk or a per-chunk KD function (hf_distill.losses.fused)."
    )


# The keyword forms the loss took before `teacher=`; each one maps onto a form below.
DEPRECATED_TEACHER_KEYWORDS = (
    "teacher_logits",
    "teacher_hidden",
    "teacher_weight",
    "teacher_bias",
    "kd_chunk_fn",
    "check_teacher_finite",
)


def teacher_from_keywords(teacher: Any, keywords: dict[str, Any], caller: str) -> TeacherForm | None:
    """The one teacher form of a call, from ``teacher=`` or from the deprecated keywords (with a warning).

    Args:
        teacher: the ``teacher=`` argument, or None.
        keywords (dict): the call's other keyword arguments; only :data:`DEPRECATED_TEACHER_KEYWORDS` are known.
        caller (str): the public function's name, for messages.

    Returns:
        The teacher form, or None when the call gives no teacher.
    """
    unknown = sorted(set(keywords) - set(DEPRECATED_TEACHER_KEYWORDS))
    if unknown:
        raise TypeError(f"{caller}() got an unexpected keyword argument {unknown[0]!r}")
    given = {name: value for name, value in keywords.items() if value is not None}
    if not given:
        return None if teacher is None else as_teacher_form(teacher)
    named = ", ".join(f"{name}=" for name in given)
    warnings.warn(
        f"{caller}({named}) is deprecated: pass one `teacher=` argument, a logits tensor, "
        "TeacherLogits(logits, check_finite=...), TeacherHead(hidden, weight, bias, check_finite=...), TeacherTopk "
        "or a per-chunk KD function (hf_distill.losses.fused.teacher_forms).",
        DeprecationWarning,
        stacklevel=3,
    )
    if teacher is not None:
        raise ValueError(
            f"{caller} got teacher= together with the older {named}: the teacher comes in one form. Pass teacher= "
            "alone; the finiteness check is the form's check_finite (TeacherLogits / TeacherHead)."
        )
    return _form_of_keywords(given)


def _form_of_keywords(given: dict[str, Any]) -> TeacherForm | None:
    sources = [name for name in ("teacher_logits", "teacher_hidden", "kd_chunk_fn") if name in given]
    if len(sources) > 1:
        raise ValueError(
            f"Give exactly one teacher source to the chunked loss, got {len(sources)} ({', '.join(sources)}): "
            "pass one teacher= form."
        )
    if "teacher_hidden" in given and "teacher_weight" not in given:
        raise ValueError(
            "teacher_hidden needs teacher_weight, the teacher's LM head (V, H_t), to make logits; pass "
            "teacher=TeacherHead(hidden, weight, bias)."
        )
    if "teacher_hidden" not in given and ("teacher_weight" in given or "teacher_bias" in given):
        raise ValueError(
            "teacher_weight / teacher_bias are the LM head of teacher_hidden, which was not given; pass "
            "teacher=TeacherHead(hidden, weight, bias)."
        )
    check = bool(given.get("check_teacher_finite", False))
    if "teacher_logits" in given:
        return TeacherLogits(given["teacher_logits"], check_finite=check)
    if "teacher_hidden" in given:
        return TeacherHead(
            given["teacher_hidden"], given["teacher_weight"], given.get("teacher_bias"), check_finite=check
        )
    if "kd_chunk_fn" in given:
        # As before, a chunk function's numbers are its own: check_teacher_finite never reached them.
        return as_teacher_form(given["kd_chunk_fn"])
    return None
