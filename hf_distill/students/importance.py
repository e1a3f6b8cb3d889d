"""How much each layer, attention head and MLP channel of a model matters, measured on calibration batches.

- Depth, :func:`layer_importance`: Block Influence (ShortGPT, Men et al., 2024), ``1 - mean cos(x, f(x))``
  between each block's input and output hidden states over the attended tokens: a block that barely turns
  its input scores near 0 and can go. Or, with ``method="skip_loss"``, the increase of the model's loss when
  the block is skipped (its output replaced by its input): slower (one pass per layer) but measured on the
  objective itself.
- Width, :func:`head_importance` and :func:`channel_importance`: activation magnitude (Minitron, Muralidharan
  et al., 2024), read at the input of the block's output projections: each head's output norm, each MLP
  channel's mean absolute activation, over the attended tokens.

Block inputs and outputs are read with forward hooks on the blocks rather than from ``output_hidden_states``:
transformers hands back the last hidden state *after* the final norm (``hidden_states[-1] ==
last_hidden_state`` for GPT-2 and Llama), which would score the last block against a normalised vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hf_distill.students.blocks import blocks_of
from hf_distill.students.layout import attention_output, head_layout, mlp_output, width_family

IMPORTANCE_METHODS = ("block_influence", "skip_loss")

Batches = Iterable[Mapping[str, torch.Tensor]]


def _hidden(output: Any) -> torch.Tensor:
    # BERT and GPT-2 blocks return tuples (hidden, attention, ...); Llama's return the tensor.
    return output[0] if isinstance(output, tuple) else output


def _block_input(args: tuple, kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def _token_mask(batch: Mapping[str, torch.Tensor], hidden: torch.Tensor) -> torch.Tensor:
    """Which positions of ``hidden`` ``[batch, seq, dim]`` are attended tokens (all, without a mask)."""
    mask = batch.get("attention_mask")
    if mask is None or mask.shape != hidden.shape[:2]:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return mask.to(hidden.device).bool()


@contextmanager
def _evaluating(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _run(model: nn.Module, batches: Batches, on_batch=None) -> int:
    """Runs every batch (moved to the model's device); returns how many ran. ``on_batch(batch)`` is called
    before each forward so hooks know the batch's mask."""
    device = next(model.parameters()).device
    count = 0
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if on_batch is not None:
            on_batch(batch)
        model(**batch)
        count += 1
    if count == 0:
        raise ValueError(
            "calibration batches are empty: importance needs at least one batch of model inputs."
        )
    return count


def _check_finite(scores: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(scores).all():
        raise ValueError(
            f"{what} are not finite ({scores.tolist()}): the model's activations overflowed or are NaN on the "
            "calibration batches; check the model in float32 and the batches' values."
        )
    return scores


def block_influence(model: nn.Module, batches: Batches) -> list[float]:
    """Block Influence of each block: ``1 - mean cos(input, output)`` over every attended token of ``batches``
    (the mean is over tokens, so a batch counts by its tokens).

    Args:
        model (nn.Module): a transformers model.
        batches (Iterable[Mapping[str, Tensor]]): model inputs (``attention_mask`` marks the attended tokens).

    Returns:
        list[float]: one score per block, in ``[0, 2]``; 0 for a block that returns its input.
    """
    blocks = blocks_of(model)
    sums = torch.zeros(len(blocks), dtype=torch.float64)
    counts = torch.zeros(len(blocks), dtype=torch.float64)
    current: dict[str, Any] = {}

    def hook(index: int):
        def record(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
            inputs, outputs = _block_input(args, kwargs), _hidden(output)
            cosine = F.cosine_similarity(inputs.float(), outputs.float(), dim=-1)
            mask = _token_mask(current["batch"], outputs)
            sums[index] += cosine[mask].double().sum().cpu()
            counts[index] += mask.sum().cpu()

        return record

    handles = [block.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    try:
        with _evaluating(model):
            _run(model, batches, lambda batch: current.update(batch=batch))
    finally:
        for handle in handles:
            handle.remove()
    if counts.min() == 0:
        raise ValueError("calibration batches have no attended token (attention_mask is all zeros).")
    return _check_finite(1.0 - sums / counts, "Block Influence scores").tolist()


def _mean_loss(model: nn.Module, batches: Sequence[Mapping[str, torch.Tensor]]) -> float:
    losses: list[float] = []
    device = next(model.parameters()).device
    for batch in batches:
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        losses.append(float(model(**batch).loss))
    if not losses:
        raise ValueError(
            "calibration batches are empty: importance needs at least one batch of model inputs."
        )
    return sum(losses) / len(losses)


def skip_loss_increase(model: nn.Module, batches: Batches) -> list[float]:
    """For each block, the model's mean loss over ``batches`` with that block skipped (its output replaced
    by its input) minus the loss with every block: how much the objective needs the block.

    Args:
        model (nn.Module): a transformers model that returns ``loss`` given ``labels``.
        batches (Iterable[Mapping[str, Tensor]]): model inputs with ``labels``.

    Returns:
        list[float]: one loss increase per block (negative when skipping it helps).
    """
    batches = list(batches)
    if not all("labels" in batch for batch in batches):
        raise ValueError(
            "method='skip_loss' needs batches with `labels` (the loss is what skipping a layer changes); "
            "add labels to the calibration batches or use method='block_influence'."
        )
    blocks = blocks_of(model)

    def skip(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        inputs = _block_input(args, kwargs)
        return (inputs, *output[1:]) if isinstance(output, tuple) else inputs

    with _evaluating(model):
        base = _mean_loss(model, batches)
        increases = []
        for block in blocks:
            handle = block.register_forward_hook(skip, with_kwargs=True)
            try:
                increases.append(_mean_loss(model, batches) - base)
            finally:
                handle.remove()
    return _check_finite(torch.tensor(increases), "skip-loss increases").tolist()


def check_importance_method(method: str, flag: str, purpose: str) -> None:
    """Refuses a ``method`` that :func:`layer_importance` does not know, naming the ``flag`` that gave it and its
    ``purpose``, before any model is loaded."""
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"{flag}={method!r}: choose one of {list(IMPORTANCE_METHODS)} ({purpose}).")


def layer_importance(model: nn.Module, batches: Batches, method: str = "block_influence") -> list[float]:
    """One importance score per transformer block of ``model`` (higher: keep it).

    Args:
        model (nn.Module): a transformers model (BERT, GPT-2, Llama and any model whose blocks sit in one
            ``nn.ModuleList`` of ``num_hidden_layers`` modules).
        batches (Iterable[Mapping[str, Tensor]]): calibration batches of model inputs, e.g. a few training
            batches from the task's collator.
        method (str): ``"block_influence"`` (``1 - mean cos`` of the block's input and output over attended
            tokens) or ``"skip_loss"`` (loss increase when the block is skipped; batches need ``labels``).

    Returns:
        list[float]: a score per block, in block order.

    Raises:
        ValueError: an unknown method, empty batches, no ``labels`` for ``"skip_loss"``, or scores that are
            not finite.
    """
    if method not in IMPORTANCE_METHODS:
        raise ValueError(f"Unknown importance method {method!r}; choose one of {list(IMPORTANCE_METHODS)}.")
    if method == "skip_loss":
        return skip_loss_increase(model, batches)
    return block_influence(model, batches)


def layers_by_importance(scores: Sequence[float], num_layers: int) -> list[int]:
    """The ``num_layers`` blocks of highest score, in their original (increasing) order; ties keep the earlier.

    Args:
        scores (Sequence[float]): one score per block (:func:`layer_importance`).
        num_layers (int): how many to keep.

    Returns:
        list[int]: increasing block indices.
    """
    if not 1 <= num_layers <= len(scores):
        raise ValueError(
            f"num_layers={num_layers} must be between 1 and the number of scored layers ({len(scores)})."
        )
    if not all(math.isfinite(s) for s in scores):
        raise ValueError(
            f"layer scores {list(scores)} are not all finite; recompute them on float32 batches."
        )
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:num_layers])


def _width_scores(model: nn.Module, batches: Batches, which: str) -> torch.Tensor:
    family = width_family(model)
    heads, _, head_dim = head_layout(model, family)
    blocks = blocks_of(model)
    sums: list[torch.Tensor | None] = [None] * len(blocks)
    count = torch.zeros((), dtype=torch.float64)
    current: dict[str, Any] = {}

    def hook(index: int):
        def record(module: nn.Module, args: tuple) -> None:
            x = args[0].float()
            mask = _token_mask(current["batch"], x)
            tokens = x[mask]  # [tokens, width]
            if which == "heads":  # each head's output norm per token
                per_token = tokens.reshape(tokens.shape[0], heads, head_dim).norm(dim=-1)
            else:  # each channel's absolute activation per token
                per_token = tokens.abs()
            total = per_token.double().sum(dim=0).cpu()
            sums[index] = total if sums[index] is None else sums[index] + total
            if index == 0:
                count.add_(mask.sum().cpu())

        return record

    target = attention_output if which == "heads" else mlp_output
    handles = [target(block, family).register_forward_pre_hook(hook(i)) for i, block in enumerate(blocks)]
    try:
        with _evaluating(model):
            _run(model, batches, lambda batch: current.update(batch=batch))
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise ValueError("calibration batches have no attended token (attention_mask is all zeros).")
    scores = torch.stack([s for s in sums if s is not None]) / count
    return _check_finite(scores.float(), f"{which} importance scores")


def head_importance(model: nn.Module, batches: Batches) -> torch.Tensor:
    """Each attention head's mean output norm (L2, over its ``head_dim`` values) over the attended tokens,
    read at the input of the block's attention output projection (Minitron's head importance).

    Args:
        model (nn.Module): a BERT-, GPT-2- or Llama-family model (:func:`hf_distill.students.layout.width_family`).
        batches (Iterable[Mapping[str, Tensor]]): calibration batches of model inputs.

    Returns:
        Tensor: ``[layers, query heads]`` float32 scores (higher: keep it).
    """
    return _width_scores(model, batches, "heads")


def channel_importance(model: nn.Module, batches: Batches) -> torch.Tensor:
    """Each MLP channel's mean absolute activation over the attended tokens, read at the input of the MLP's
    output projection (after the activation, and the gate for Llama): Minitron's neuron importance.

    Args:
        model (nn.Module): a BERT-, GPT-2- or Llama-family model.
        batches (Iterable[Mapping[str, Tensor]]): calibration batches of model inputs.

    Returns:
        Tensor: ``[layers, intermediate size]`` float32 scores (higher: keep it).
    """
    return _width_scores(model, batches, "channels")
