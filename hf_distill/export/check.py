"""An exported graph checked against the PyTorch model it came from, on shapes the export never traced.

fp32 must match within a tolerance (a graph that fixed an axis by mistake, or translated an op wrongly, fails
here, before anything is written as done). The tolerance is relative to each output's scale (its largest
magnitude), not to each element: float32 rounding in a sum grows with the magnitude of its terms, so an
element near zero in a tensor of large values carries the error of that scale. ONNX Runtime orders and fuses
the reductions differently from PyTorch, so an 18-layer, 576-wide SmolLM2 cut differs by 3.9e-4 on logits of
magnitude ~20 (2e-5 of their scale) while a wrong op differs by a large share of it. int8 is lossy by design,
so it is measured (the share of rows whose argmax did not move) and left to the caller and the recipes'
intervals to judge.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hf_distill.export.graph import EXPORT_BATCH, EXPORT_SEQUENCE, CausalWithPast, GraphSpec, example_inputs
from hf_distill.model_kind import CAUSAL_LM, GENERIC

# (batch, sequence, past) rows checked: none is the traced (2, 7, 3).
CHECK_SHAPES = ((3, 11, 0), (1, 5, 4), (5, 9, 2))
ATOL = RTOL = 1e-4


class ExportCheckFailed(RuntimeError):
    """The exported graph's outputs differ from PyTorch's beyond the tolerance."""


def _shapes(spec: GraphSpec) -> list[tuple[int, int, int]]:
    shapes = [s for s in CHECK_SHAPES if (s[0], s[1]) != (EXPORT_BATCH, EXPORT_SEQUENCE)]
    if spec.task != CAUSAL_LM:
        shapes = [(b, n, 0) for b, n, _ in shapes]
    return shapes


@torch.no_grad()
def reference_outputs(model: nn.Module, spec: GraphSpec, inputs: dict[str, torch.Tensor]) -> list[np.ndarray]:
    """PyTorch's outputs for the graph's inputs, in the graph's output order."""
    if spec.task == CAUSAL_LM:
        outputs = CausalWithPast(model, spec.past_layers)(*inputs.values())
    else:
        outputs = (model(**inputs),)
        outputs = (getattr(outputs[0], "logits", outputs[0]),)
    return [o.float().numpy() for o in outputs]


def check_fp32(
    model: nn.Module, spec: GraphSpec, session: Any, atol: float = ATOL, rtol: float = RTOL
) -> float:
    """The largest ``|onnx - torch|`` over :data:`CHECK_SHAPES` (all outputs, past keys and values included).

    Raises:
        ExportCheckFailed: when any output differs by more than ``atol + rtol * max|torch|`` (the largest
            magnitude of that output on that row shape), or is not finite.
    """
    worst = 0.0
    for batch, sequence, past in _shapes(spec):
        inputs = example_inputs(model, spec, batch, sequence, past, seed=batch * 100 + sequence)
        expected = reference_outputs(model, spec, inputs)
        got = session.run(None, {k: v.numpy() for k, v in inputs.items()})
        for name, want, have in zip(spec.outputs, expected, got):
            if want.shape != have.shape or not np.isfinite(have).all():
                raise ExportCheckFailed(
                    f"{spec.architecture}: ONNX output {name!r} on batch {batch}, sequence {sequence}, past {past} "
                    f"is {have.shape} (finite: {np.isfinite(have).all()}) where PyTorch gives {want.shape}; "
                    "an axis the export fixed would do this. Re-export, or report the architecture."
                )
            difference = float(np.abs(have - want).max(initial=0.0))
            scale = float(np.abs(want).max(initial=0.0))
            worst = max(worst, difference)
            if difference > atol + rtol * scale:
                raise ExportCheckFailed(
                    f"{spec.architecture}: ONNX output {name!r} differs from PyTorch's by up to "
                    f"{difference:.3g} (tolerance {atol:g} + {rtol:g} * {scale:.3g}, the output's largest "
                    f"magnitude) on batch {batch}, sequence {sequence}, past {past}: the graph does not compute "
                    "what the model does."
                )
    return worst


def argmax_agreement(model: nn.Module, spec: GraphSpec, session: Any, rows: int = 64) -> float:
    """Share of rows (positions, for token-level models) whose argmax the graph keeps: int8 vs PyTorch fp32."""
    sequence = 16 if spec.task != GENERIC else 0
    inputs = example_inputs(model, spec, rows, sequence, 0, seed=7)
    expected = reference_outputs(model, spec, inputs)[0]
    got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
    same = expected.argmax(-1) == got.argmax(-1)
    if spec.task != GENERIC and same.ndim == 2:
        same = same[inputs["attention_mask"][:, -sequence:].numpy().astype(bool)]
    return float(same.mean())
