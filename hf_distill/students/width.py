"""Width pruning: a model with fewer attention heads and MLP channels per block, the rest of it unchanged.

:func:`prune_width` keeps, in every block, the heads and channels of highest importance
(:mod:`hf_distill.students.importance`, measured on calibration batches, or scores given) and slices the
weights that read or write them. The result is built fresh from a config that states the new sizes, so it is
an ordinary ``PreTrainedModel``: it saves and loads with ``from_pretrained`` and generates with a KV cache.

Which families can drop what (:mod:`hf_distill.students.layout`):

- Llama-family (Llama, SmolLM2, Mistral, Qwen2, ...): heads and MLP channels. The config carries
  ``head_dim``, so fewer heads keep their size. Query heads share key/value heads in groups
  (``num_attention_heads / num_key_value_heads`` per group): whole groups are kept or dropped, so ``heads``
  must be a multiple of the group size.
- BERT-family and GPT-2: MLP channels only. Their attention derives the head size from
  ``hidden_size / num_attention_heads``, so no config rebuilds fewer heads of the same size: asking for
  fewer heads is refused, saying so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from transformers import PreTrainedModel

from hf_distill.students.blocks import find_block_list, num_layers_of
from hf_distill.students.derived import model_like
from hf_distill.students.importance import channel_importance, head_importance
from hf_distill.students.layout import (
    INTERMEDIATE_KEY,
    bias_follows,
    head_layout,
    intermediate_size_of,
    width_family,
    width_slices,
)


def _check_size(name: str, value: int | None, current: int) -> int:
    if value is None:
        return current
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= current:
        raise ValueError(f"{name}={value!r} must be an integer from 1 to the model's current {current}.")
    return value


def _refuse_heads(model: PreTrainedModel) -> None:
    raise ValueError(
        f"{type(model).__name__} ({model.config.model_type}) cannot drop attention heads: its attention "
        "derives the head size from hidden_size / num_attention_heads, so no config that from_pretrained "
        "rebuilds has fewer heads of the same size. Prune its MLP channels (intermediate_size) or its layers "
        "(student_from_teacher) instead."
    )


def _scores(
    given: torch.Tensor | None,
    measure: Any,
    model: PreTrainedModel,
    calibration: Any,
    shape: tuple,
    what: str,
) -> torch.Tensor:
    if given is None:
        if calibration is None:
            raise ValueError(
                f"Pruning {what} needs calibration=batches (model inputs to measure importance on) or "
                f"{what[:-1]}_scores of shape {shape}."
            )
        given = measure(model, calibration)
    given = torch.as_tensor(given, dtype=torch.float32)
    if tuple(given.shape) != shape:
        raise ValueError(
            f"{what} scores have shape {tuple(given.shape)}; the model needs {shape} (layers, {what})."
        )
    if not torch.isfinite(given).all():
        raise ValueError(f"{what} scores are not all finite; recompute them on float32 calibration batches.")
    return given


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the ``k`` indices of highest score in increasing order (ties keep the earlier index)."""
    order = torch.sort(-scores, dim=-1, stable=True).indices[..., :k]
    return torch.sort(order, dim=-1).values


def _rows(units: torch.Tensor, size: int) -> torch.Tensor:
    """Row indices of whole units (heads) of ``size`` rows each."""
    return (units[:, None] * size + torch.arange(size)).reshape(-1)


def _kept_heads(
    scores: torch.Tensor, heads: int, kv_heads: int, group: int, model: PreTrainedModel
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, the query heads and key/value heads kept: the ``heads / group`` groups of highest summed score."""
    if heads % group:
        raise ValueError(
            f"{type(model).__name__} shares each key/value head among {group} query heads "
            f"(num_attention_heads={kv_heads * group}, num_key_value_heads={kv_heads}): prune whole groups, "
            f"so heads must be a multiple of {group} (e.g. {max(group, heads - heads % group)}), not {heads}."
        )
    groups = _top(scores.reshape(scores.shape[0], kv_heads, group).sum(-1), heads // group)
    query = (groups[..., None] * group + torch.arange(group)).reshape(scores.shape[0], -1)
    return query, groups


def prune_width(
    model: PreTrainedModel,
    heads: int | None = None,
    intermediate_size: int | None = None,
    calibration: Iterable[Mapping[str, torch.Tensor]] | None = None,
    *,
    head_scores: torch.Tensor | None = None,
    channel_scores: torch.Tensor | None = None,
) -> PreTrainedModel:
    """A copy of ``model`` with ``heads`` attention heads and ``intermediate_size`` MLP channels per block.

    Args:
        model (PreTrainedModel): a BERT-, GPT-2- or Llama-family model (a depth-pruned student too).
        heads (int | None): query heads to keep per block (Llama-family only; a multiple of the number of
            query heads per key/value head). None keeps them all.
        intermediate_size (int | None): MLP channels to keep per block. None keeps them all.
        calibration (Iterable[Mapping[str, Tensor]] | None): batches of model inputs to measure head and
            channel importance on (:func:`hf_distill.students.importance.head_importance`,
            :func:`~hf_distill.students.importance.channel_importance`).
        head_scores (Tensor | None): ``[layers, heads]`` scores to rank heads by instead.
        channel_scores (Tensor | None): ``[layers, intermediate size]`` scores to rank channels by instead.

    Returns:
        PreTrainedModel: a new model of ``model``'s class whose config states the new sizes, in ``model``'s
        dtype and training mode; ``config.distillation["width"]`` records what was kept.

    Raises:
        ValueError: an architecture that cannot be pruned in width (named), heads asked of BERT or GPT-2,
            sizes out of range, a head count that splits a key/value group, no calibration or scores for a
            size that shrinks, or scores of the wrong shape or not finite.
    """
    family = width_family(model)
    old_heads, kv_heads, head_dim = head_layout(model, family)
    old_channels = intermediate_size_of(model, family)
    heads = _check_size("heads", heads, old_heads)
    channels = _check_size("intermediate_size", intermediate_size, old_channels)
    if heads < old_heads and family != "llama":
        _refuse_heads(model)
    layers = num_layers_of(model.config)
    group = old_heads // kv_heads
    kept: dict[str, torch.Tensor] = {
        "q": torch.arange(old_heads).repeat(layers, 1),
        "kv": torch.arange(kv_heads).repeat(layers, 1),
        "channels": torch.arange(old_channels).repeat(layers, 1),
    }
    if heads < old_heads:
        scores = _scores(head_scores, head_importance, model, calibration, (layers, old_heads), "heads")
        kept["q"], kept["kv"] = _kept_heads(scores, heads, kv_heads, group, model)
    if channels < old_channels:
        scores = _scores(
            channel_scores, channel_importance, model, calibration, (layers, old_channels), "channels"
        )
        kept["channels"] = _top(scores, channels)
    state = _sliced_state(model, family, kept, head_dim)
    changes: dict[str, Any] = {INTERMEDIATE_KEY[family]: channels}
    if family == "llama":
        changes.update(num_attention_heads=heads, num_key_value_heads=heads // group, head_dim=head_dim)
    pruned = _rebuilt(model, changes, state)
    record = dict(
        getattr(model.config, "distillation", None) or {"teacher": model.name_or_path, "init": "teacher"}
    )
    record["width"] = {
        "heads": heads,
        "kept_heads": kept["q"].tolist() if heads < old_heads else "all",
        "intermediate_size": channels,
        "teacher_heads": old_heads,
        "teacher_intermediate_size": old_channels,
        "importance": "activation magnitude" if calibration is not None else "given scores",
    }
    pruned.config.distillation = record
    pruned.train(model.training)
    return pruned


def _sliced_state(
    model: PreTrainedModel, family: str, kept: dict[str, torch.Tensor], head_dim: int
) -> dict[str, torch.Tensor]:
    """``model``'s state dict with each block's width slices kept (rows of whole heads, MLP channels)."""
    prefix = find_block_list(model, num_layers_of(model.config)) + "."
    index = {
        "q": [_rows(units, head_dim) for units in kept["q"]],
        "kv": [_rows(units, head_dim) for units in kept["kv"]],
        "channels": list(kept["channels"]),
    }
    slices = width_slices(family)
    state = {}
    for name, tensor in model.state_dict().items():
        state[name] = tensor
        if not name.startswith(prefix):
            continue
        layer, rest = name[len(prefix) :].split(".", 1)
        module, _, leaf = rest.rpartition(".")
        if module not in slices:
            continue
        dim, what = slices[module]
        rows = index[what][int(layer)].to(tensor.device)
        if leaf == "weight":
            state[name] = tensor.index_select(dim, rows).clone()
        elif leaf == "bias" and bias_follows(family, dim):
            state[name] = tensor.index_select(0, rows).clone()
    return state


def _rebuilt(
    model: PreTrainedModel, changes: dict[str, Any], state: dict[str, torch.Tensor]
) -> PreTrainedModel:
    """A fresh model of ``model``'s class from its config plus ``changes``, holding ``state``."""
    alias = model.config.attribute_map
    values = model.config.to_dict()
    values.update({alias.get(k, k): v for k, v in changes.items()})
    pruned = model_like(model, type(model.config).from_dict(values))
    # In place, so weights tied at construction (lm_head to the embeddings) stay one tensor.
    pruned.load_state_dict(state, strict=True)
    for (
        name,
        buffer,
    ) in model.named_buffers():  # non-persistent buffers (rotary inv_freq) in the model's dtype
        module_name, _, leaf = name.rpartition(".")
        target = pruned.get_submodule(module_name)
        if leaf in target._buffers and target._buffers[leaf].shape == buffer.shape:
            target._buffers[leaf] = buffer.detach().clone()
    return pruned
