"""int8 graphs from an fp32 one, with ``onnxruntime.quantization``.

- ``int8-dynamic``: MatMul / Gemm weights stored as int8 with one scale per output column (per-channel),
  activations quantized per call from their own range; no data needed. Each transformer layer's feed-forward
  down-projection stays fp32 (:func:`down_projections`): its input, after GELU, spans the widest range of the
  layer, and one per-tensor uint8 scale over it is where int8 lost the sentiment student's predictions (1,279
  validation rows, one seed: 96.1% of them kept with every MatMul quantized, 99.5% with the down-projections
  fp32; benchmarks/int8_variants.py). Per-channel weights were then chosen over per-tensor on the validation
  rows of three seeds' students (benchmarks/int8_splits.py): sentiment, accuracy against the PyTorch student
  -0.05 points [-0.31, +0.23] and 26 rows changed, against -0.34 [-0.68, -0.00] and 33; NER -0.24 F1 against
  -0.39; at 13% more time at batch 1 and none at batch 32. Static calibration, reduce_range and graph
  pre-processing all kept fewer. A third of the weights' multiply-adds stay fp32.
- ``int8-static``: weights and activations int8 (QDQ), activation ranges calibrated on rows of the training
  data (``calibration_rows``); convolutions are quantized too, which dynamic quantization leaves in fp32.
- ``int8-weights``: every MatMul's weight int8 in blocks of :data:`WEIGHT_BLOCK` along its input dimension,
  one scale per block (``MatMulNBits``), and activations quantized per block of each row as it multiplies
  (``accuracy_level`` 4), so no scale spans a whole tensor: the int8 graph closest to fp32 (three seeds'
  validation rows, sentiment: -0.03 points [-0.18, +0.13] and 9 rows changed; NER: +0.19 F1 [-0.09, +0.63];
  benchmarks/int8_splits.py) and the smallest, but on a CPU without fast block kernels slower than fp32 (the
  sentiment student, quiet, benchmarks/export_latency.py: 5.6 ms at batch 1 against 4.0 fp32 and 4.1
  int8-dynamic; 128 ms at batch 32 against 95 and 83): a scheme for size and fidelity, not speed. MatMuls
  only: a Gemm (GPT-2's Conv1D projections, a classifier head) stays fp32.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

QUANTIZATIONS = ("int8-dynamic", "int8-static", "int8-weights")
WEIGHT_BLOCK = 32  # int8-weights: weights per scale along a MatMul's input dimension
# Modules that are a transformer layer's feed-forward down-projection, by the names transformers gives them
# (BERT / RoBERTa / ViT, DistilBERT, GPT-2, Llama-style gated MLPs, OPT / Whisper / BART).
DOWN_PROJECTION_MODULES = re.compile(
    r"(\.layer\.\d+\.output\.dense|\.ffn\.lin2|\.mlp\.c_proj|\.mlp\.down_proj|\.fc2)$"
)
# The exporter's record of the modules a node was traced in, outermost first.
NAME_SCOPES = "pkg.torch.onnx.name_scopes"


def check_quantization(quantize: str | None, calibration_rows: object | None) -> None:
    """Refuses an unknown scheme, and static quantization without calibration rows, before any work."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(
            f"quantize={quantize!r} is not a scheme the export knows; use one of {list(QUANTIZATIONS)} "
            "or None for the fp32 graph alone."
        )
    if quantize == "int8-static" and calibration_rows is None:
        raise ValueError(
            "quantize='int8-static' calibrates activation ranges on rows, and no calibration_dataset was "
            "given: pass a few hundred training rows (model input columns), or use 'int8-dynamic'."
        )


def quantize_graph(
    source: Path,
    target: Path,
    quantize: str,
    calibration_feeds: Iterable[Mapping[str, np.ndarray]] | None = None,
) -> None:
    """Writes the int8 version of ``source`` to ``target``; ``calibration_feeds`` (session feeds) for static."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    if quantize == "int8-dynamic":
        quantize_dynamic_graph(source, target)
        return
    if quantize == "int8-weights":
        _quantize_weights(source, target)
        return

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(calibration_feeds or [])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm", "Conv"],
    )


def quantize_dynamic_graph(source: Path, target: Path, *, per_channel: bool = True) -> None:
    """``int8-dynamic``: every MatMul / Gemm weight int8 but the down-projections (:func:`_dynamic_exclusions`),
    one scale per output column, or one per matrix with ``per_channel=False`` (13% faster at batch 1 on the
    sentiment student, less accurate; the module docstring)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
        nodes_to_exclude=_dynamic_exclusions(onnx.load(str(source), load_external_data=False)),
        per_channel=per_channel,
    )


def _quantize_weights(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        onnx.load(str(source)), bits=8, block_size=WEIGHT_BLOCK, is_symmetric=True, accuracy_level=4
    )
    quantizer.process()
    quantizer.model.save_model_to_file(str(target), use_external_data_format=False)


def _dynamic_exclusions(model: Any) -> list[str]:
    """:func:`down_projections` as ``quantize_dynamic`` must name them: in dynamic mode onnxruntime first rewrites
    each Gemm as a MatMul named ``<gemm>_MatMul`` (plus an Add) and matches the exclusions against the rewritten
    graph, so a Gemm excluded by its own name alone (GPT-2's Conv1D projections) would be quantized."""
    gemms = {node.name for node in model.graph.node if node.op_type == "Gemm"}
    kept = down_projections(model)
    return [*kept, *(f"{name}_MatMul" for name in kept if name in gemms)]


def down_projections(model: Any) -> list[str]:
    """Names of the MatMul / Gemm nodes that are a feed-forward down-projection: traced in a module named as
    :data:`DOWN_PROJECTION_MODULES` says, or fed by a ``Gelu`` node (a graph without the exporter's scopes).

    Args:
        model (onnx.ModelProto): the fp32 graph.

    Returns:
        list[str]: node names, in graph order (empty when the graph has none, e.g. a CNN).
    """
    gelu_outputs = {out for node in model.graph.node if node.op_type == "Gelu" for out in node.output}
    found = []
    for node in model.graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        if node.input[0] in gelu_outputs or DOWN_PROJECTION_MODULES.search(module_of(node)):
            found.append(node.name)
    return found


def module_of(node: Any) -> str:
    """The innermost module (``model.bert.encoder.layer.0.output.dense``) a node was traced in, or ``""``."""
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:
            # The value is a Python list's repr; its last entry names the op, the modules come before it.
            modules = [m for m in ast.literal_eval(prop.value) if m.startswith("model")]
            return modules[-1] if modules else ""
    return ""
