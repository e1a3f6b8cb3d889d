"""int8 graphs from an fp32 one, with ``onnxruntime.quantization``.

- ``int8-dynamic``: MatMul / Gemm weights stored as int8, activations quantized per call from their own range;
  no data needed.
- ``int8-static``: weights and activations int8 (QDQ), activation ranges calibrated on rows of the training
  data (``calibration_rows``); convolutions are quantized too, which dynamic quantization leaves in fp32.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

QUANTIZATIONS = ("int8-dynamic", "int8-static")


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
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    if quantize == "int8-dynamic":
        quantize_dynamic(
            str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]
        )
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
