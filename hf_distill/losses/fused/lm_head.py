"""A causal LM's LM head and last hidden state: whether the chunked KD loss can run on a model, and how.

The chunked losses of :mod:`hf_distill.losses.fused.chunked` need ``logits = lm_head(last_hidden_state)`` with a plain
linear head, and a forward pass that can skip the full logits (``logits_to_keep``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

IMPLEMENTATIONS = ("plain", "chunked", "fused")
KD_LOSS_IMPLEMENTATIONS = ("auto", *IMPLEMENTATIONS)
# "auto" switches to the fused loss from this output vocabulary size on: below it the full logits are
# small and the plain loss is as fast; above it they dominate the step's memory (50257 x 1024 positions of
# float32 is 206 MB per tensor).
AUTO_MIN_VOCAB = 16384
# Config attributes of models whose logits are not a plain linear map of the last hidden state.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def lm_head_of(model: nn.Module) -> tuple[nn.Module, nn.Linear] | str:
    """``(base_model, lm_head)`` when the model's logits are ``lm_head(base_model(...)[0])``, else the reason.

    The chunked path needs the last hidden state and a plain linear head. Models that scale or soft-cap
    their logits after the head (Gemma 2's ``final_logit_softcapping``, Cohere's ``logit_scale``) or whose
    forward cannot skip the full logits (no ``logits_to_keep`` argument) are refused with the reason.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Linear):
        return f"{type(model).__name__} has no nn.Linear output embedding (get_output_embeddings())"
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return f"{type(model).__name__} has no separate base model to return the last hidden states"
    config = getattr(model, "config", None)
    for name in _LOGIT_TRANSFORMS:
        value = getattr(config, name, None)
        if value not in (None, 1, 1.0, 0, 0.0, False):
            return f"{type(model).__name__} transforms its logits after the LM head ({name}={value})"
    if "logits_to_keep" not in inspect.signature(model.forward).parameters:
        return f"{type(model).__name__}.forward has no `logits_to_keep` argument to skip the full logits"
    return base, head


def resolve_implementation(requested: str, model: nn.Module, vocab_size: int | None) -> str:
    """``"plain"``, ``"chunked"`` or ``"fused"`` for a causal-LM student.

    ``"auto"`` picks ``"fused"`` when the vocabulary has at least :data:`AUTO_MIN_VOCAB` entries and the model
    allows it (:func:`lm_head_of`), else ``"plain"``. An explicit chunked choice on a model that does not
    allow it raises, rather than falling back silently.
    """
    if requested not in KD_LOSS_IMPLEMENTATIONS:
        raise ValueError(
            f"kd_loss_implementation={requested!r} is unknown; choose one of {KD_LOSS_IMPLEMENTATIONS}."
        )
    if requested == "plain":
        return "plain"
    found = lm_head_of(model)
    if requested == "auto":
        large = vocab_size is not None and vocab_size >= AUTO_MIN_VOCAB
        return "fused" if large and not isinstance(found, str) else "plain"
    if isinstance(found, str):
        raise ValueError(
            f"kd_loss_implementation={requested!r} needs the student's last hidden states and a linear LM "
            f"head, but {found}. Use kd_loss_implementation='plain' (or 'auto')."
        )
    return requested


def forward_with_last_hidden(
    model: nn.Module, unwrapped: nn.Module, inputs: dict[str, Any], **kwargs: Any
) -> tuple[Any, torch.Tensor]:
    """Runs ``model(**inputs, logits_to_keep=1)`` and returns its outputs and the base model's last hidden
    state ``(B, T, H)``, caught by a forward hook.

    Calling the (possibly DDP-wrapped) model itself keeps the wrapper's gradient synchronisation, while
    ``logits_to_keep=1`` makes the model project only the last position onto the vocabulary.
    """
    found = lm_head_of(unwrapped)
    if isinstance(found, str):
        raise ValueError(f"Cannot compute the chunked loss: {found}. Use kd_loss_implementation='plain'.")
    base, _ = found
    caught: dict[str, torch.Tensor] = {}

    def hook(_module, _args, output):
        caught["hidden"] = output[0] if isinstance(output, (tuple, list)) else output["last_hidden_state"]

    handle = base.register_forward_hook(hook)
    try:
        outputs = model(**inputs, logits_to_keep=1, **kwargs)
    finally:
        handle.remove()
    return outputs, caught["hidden"]
