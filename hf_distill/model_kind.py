"""What kind of model this is, and how its predictions line up with their targets.

One small module that the trainer, the teacher cache, the teacher sources and the modes all import: the kind of
head a model has (:func:`detect_head_kind`: causal LM, token or sequence classification, generic), where its logits are (:func:`logits_of`), how many output rows it has
(:func:`output_vocab_size`), and which prediction is compared with which target (:func:`align_for_distillation`:
causal LMs shift by one).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

CAUSAL_LM, TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION, GENERIC = (
    "causal_lm",
    "token_classification",
    "sequence_classification",
    "generic",
)
AUTO_CLASSES = {
    CAUSAL_LM: AutoModelForCausalLM,
    TOKEN_CLASSIFICATION: AutoModelForTokenClassification,
    SEQUENCE_CLASSIFICATION: AutoModelForSequenceClassification,
}


def detect_head_kind(model: nn.Module) -> str:
    """The kind of head a model has, from its class name: ``causal_lm``, ``token_classification``,
    ``sequence_classification``, or ``generic`` for any other module returning logits. A head kind, not a
    recipe (``hf-distill train sentiment``) nor a multi-task model's named heads."""
    name = type(model).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return CAUSAL_LM
    if name.endswith("ForTokenClassification"):
        return TOKEN_CLASSIFICATION
    if name.endswith("ForSequenceClassification"):
        return SEQUENCE_CLASSIFICATION
    return GENERIC


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits in a model's outputs: a tensor, a tuple's first item, or the ``logits`` field."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) or hasattr(outputs, "logits"):
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    raise TypeError(
        f"The model returned {type(outputs).__name__}; distillation needs logits: return a tensor, a tuple "
        "whose first item is the logits, or an output with a `logits` field."
    )


def output_vocab_size(model: nn.Module) -> int | None:
    """Rows of the model's output embedding (its vocabulary, padding included), or ``config.vocab_size``."""
    get = getattr(model, "get_output_embeddings", None)
    embeddings = get() if callable(get) else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return embeddings.weight.shape[0]
    config = getattr(model, "config", None)
    return getattr(config, "vocab_size", None)


def slice_vocab(logits: torch.Tensor, vocab_size: int | None) -> torch.Tensor:
    """The first ``vocab_size`` logits (the rows both models share); all of them when ``vocab_size`` is None."""
    if vocab_size is None or logits.shape[-1] == vocab_size:
        return logits
    return logits[..., :vocab_size]


def head_rows(head: nn.Module, vocab_size: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """An LM head's weight ``(V, H)`` and bias, cut to the first ``vocab_size`` rows only when that drops any
    (a slice of the whole matrix would make autograd allocate and copy a second ``(V, H)`` gradient)."""
    weight, bias = head.weight, getattr(head, "bias", None)
    if vocab_size is None or vocab_size == weight.shape[0]:
        return weight, bias
    return weight[:vocab_size], None if bias is None else bias[:vocab_size]


def align_for_distillation(
    head_kind: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Pairs each prediction with its target: ``(student, teacher, labels, mask)`` for the losses.

    Causal LMs are shifted (position t predicts token t+1, so the last prediction and the first label go).
    Without labels, token-level positions are masked by the attention mask; with labels, by ``labels != -100``
    (``mask`` is then None). ``teacher_logits`` may be None (a teacher given in another form, e.g. top-k).
    """
    mask = None
    if head_kind == CAUSAL_LM:
        student_logits = student_logits[:, :-1]
        teacher_logits = None if teacher_logits is None else teacher_logits[:, :-1]
        if labels is not None:
            labels = labels[:, 1:]
        elif attention_mask is not None:
            mask = attention_mask[:, 1:].bool()
    elif labels is None and attention_mask is not None and student_logits.dim() == 3:
        mask = attention_mask.bool()
    return student_logits, teacher_logits, labels, mask
