"""A model's forward as an ONNX graph: ``torch.onnx.export(..., dynamo=True)`` of a small adapter that fixes the
inputs and outputs by kind, batch and sequence axes dynamic.

- classifiers (sequence, token): ``input_ids``, ``attention_mask`` (and ``token_type_ids`` where the model takes
  them) to ``logits``;
- causal LMs: the same plus ``position_ids`` and each layer's ``past_key_values.<i>.key/value``
  ``(batch, heads, past, head_dim)``, to ``logits`` and ``present.<i>.key/value`` (past and new positions): one
  graph serves the prompt (past of length 0) and every generated token, the names Optimum and transformers.js
  use;
- anything else (the vision recipe's CNN, image classifiers): ``pixel_values`` to ``logits``, batch dynamic.

Only the module given is traced: the adapter calls its ``forward`` and nothing else, so a trainer's projection
heads or other distillation modules never reach the graph.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_distill.model_kind import CAUSAL_LM, GENERIC, detect_head_kind, logits_of

# The shapes traced at export; the check runs other shapes, so an axis fixed by mistake shows there.
EXPORT_BATCH, EXPORT_SEQUENCE, EXPORT_PAST = 2, 7, 3


class ExportRefused(ValueError):
    """The model cannot be exported: it names the architecture and the step that failed."""


@dataclass
class GraphSpec:
    """What the graph takes and gives: the manifest (``export.json``) the runtime reads back."""

    task: str
    inputs: list[str]
    outputs: list[str]
    architecture: str
    past_layers: int = 0
    past_shape: list[int] = field(default_factory=list)  # (heads, head_dim) of one layer's keys
    pixel_shape: list[int] = field(default_factory=list)  # (channels, height, width) of an image model

    def past_names(self) -> list[str]:
        return [f"past_key_values.{i}.{part}" for i in range(self.past_layers) for part in ("key", "value")]


class _Logits(nn.Module):
    """``forward(*inputs) -> logits`` for a classifier or image model."""

    def __init__(self, model: nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return logits_of(self.model(**dict(zip(self.names, inputs))))


class CausalWithPast(nn.Module):
    """``forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present)`` over a DynamicCache."""

    def __init__(self, model: nn.Module, layers: int):
        super().__init__()
        self.model, self.layers = model, layers

    def forward(self, input_ids, attention_mask, position_ids, *past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.layers)])
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **{cache_argument(self.model): cache},
            use_cache=True,
        )
        present = [t for layer in returned_cache(out).layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)


def cache_argument(model: nn.Module) -> str:
    """The forward's name for the cache: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def returned_cache(outputs: Any) -> Any:
    """The cache a forward returned, under either name."""
    cache = outputs.get("cache") if hasattr(outputs, "get") else None
    return cache if cache is not None else outputs.past_key_values


def _accepts(model: nn.Module, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters


def _vocab(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    return int(getattr(config, "vocab_size", None) or 2)


def example_text(model: nn.Module, batch: int, sequence: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random token rows (the last row right-padded by a third) for a text model: what is traced and checked."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, _vocab(model), (batch, sequence), generator=generator)
    mask = torch.ones_like(ids)
    if batch > 1:
        mask[-1, sequence - max(1, sequence // 3) :] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    if detect_head_kind(model) != CAUSAL_LM and _accepts(model, "token_type_ids"):
        inputs["token_type_ids"] = torch.zeros_like(ids)
    return inputs


def past_shape(model: nn.Module) -> tuple[int, list[int]]:
    """Layers and ``(heads, head_dim)`` of a causal LM's cached keys, read from one small forward."""
    with torch.no_grad():
        out = model(input_ids=torch.zeros(1, 2, dtype=torch.long), use_cache=True)
    layers = getattr(returned_cache(out), "layers", None)
    if not layers:
        raise ExportRefused(
            f"{type(model).__name__} cannot be exported with past keys and values: its forward returned no "
            "per-layer cache (step: reading the cache layout); export a model whose cache is a DynamicCache."
        )
    return len(layers), [int(layers[0].keys.shape[1]), int(layers[0].keys.shape[-1])]


def graph_spec(model: nn.Module, pixel_shape: list[int] | None = None) -> GraphSpec:
    """The inputs and outputs :func:`export_graph` gives ``model``."""
    task, name = detect_head_kind(model), type(model).__name__
    if task == GENERIC:
        if not pixel_shape:
            raise ExportRefused(
                f"{name} is not a Transformers text model, so the export takes it as an image model, and needs "
                "pixel_shape=(channels, height, width) to trace it (step: building the example inputs)."
            )
        return GraphSpec(task, ["pixel_values"], ["logits"], name, pixel_shape=list(pixel_shape))
    if task == CAUSAL_LM:
        layers, shape = past_shape(model)
        spec = GraphSpec(
            task, ["input_ids", "attention_mask", "position_ids"], ["logits"], name, layers, shape
        )
        spec.inputs += spec.past_names()
        spec.outputs += [n.replace("past_key_values", "present") for n in spec.past_names()]
        return spec
    inputs = list(example_text(model, 2, 3))
    return GraphSpec(task, inputs, ["logits"], name)


def example_inputs(
    model: nn.Module, spec: GraphSpec, batch: int, sequence: int, past: int = 0, seed: int = 0
):
    """``{input name: tensor}`` in ``spec.inputs`` order, for the traced shapes or any other."""
    if spec.task == GENERIC:
        generator = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(batch, *spec.pixel_shape, generator=generator)}
    inputs = example_text(model, batch, sequence, seed)
    if spec.task != CAUSAL_LM:
        return inputs
    generator = torch.Generator().manual_seed(seed + 1)
    mask = torch.cat([torch.ones(batch, past, dtype=torch.long), inputs["attention_mask"]], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    inputs = {"input_ids": inputs["input_ids"], "attention_mask": mask, "position_ids": positions}
    heads, dim = spec.past_shape
    for name in spec.past_names():
        inputs[name] = torch.randn(batch, heads, past, dim, generator=generator)
    return inputs


def _dynamic_shapes(spec: GraphSpec) -> tuple[dict[int, Any], ...]:
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    # The adapters take ``*inputs`` (or ``*past``): one entry per signature parameter, the varargs a tuple.
    if spec.task == GENERIC:
        return (({0: batch},),)
    if spec.task != CAUSAL_LM:
        return (tuple({0: batch, 1: sequence} for _ in spec.inputs),)
    past, total = torch.export.Dim("past"), torch.export.Dim("total")
    return (
        {0: batch, 1: sequence},
        {0: batch, 1: total},
        {0: batch, 1: sequence},
        tuple({0: batch, 2: past} for _ in spec.past_names()),
    )


def export_graph(model: nn.Module, spec: GraphSpec, path: Path) -> None:
    """Writes ``model``'s graph to ``path`` (ONNX, weights inside).

    Raises:
        ExportRefused: when ``torch.export`` cannot capture the forward or the graph cannot be translated to
            ONNX, naming the architecture and the exporter's step.
    """
    adapter = (
        CausalWithPast(model, spec.past_layers) if spec.task == CAUSAL_LM else _Logits(model, spec.inputs)
    )
    adapter.eval()
    inputs = example_inputs(model, spec, EXPORT_BATCH, EXPORT_SEQUENCE, EXPORT_PAST)
    try:
        program = torch.onnx.export(
            adapter,
            tuple(inputs.values()),
            dynamo=True,
            input_names=spec.inputs,
            output_names=spec.outputs,
            dynamic_shapes=_dynamic_shapes(spec),
            verbose=False,
            optimize=True,
        )
    except Exception as error:  # the exporter raises many types; each becomes one line naming the step
        raise ExportRefused(
            f"{spec.architecture} cannot be exported to ONNX (step: {_failed_step(error)}): "
            f"{_first_line(error)}. Data-dependent Python control flow in forward is the usual cause; "
            "rewrite it with tensor ops, or export another architecture."
        ) from error
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)


def _failed_step(error: BaseException) -> str:
    text = f"{type(error).__name__} {error}"
    chain = error.__cause__
    while chain is not None:
        text += f" {type(chain).__name__} {chain}"
        chain = chain.__cause__
    if "torch.export" in text or "Unsupported" in text or "GuardOnDataDependent" in text:
        return "capturing the graph with torch.export"
    if "translat" in text.lower() or "onnx" in text.lower():
        return "translating the captured graph to ONNX"
    return "tracing the forward"


def _first_line(error: BaseException) -> str:
    root = error
    while root.__cause__ is not None:
        root = root.__cause__
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    return f"{type(root).__name__}: {lines[0] if lines else ''}"[:300]
