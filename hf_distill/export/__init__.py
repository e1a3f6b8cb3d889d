"""A trained model shipped where it will run: exported to ONNX, quantized to int8, and scored there.

- ``packages``: the optional ``[export]`` packages (onnx, onnxruntime, onnxscript), checked before any work;
- ``graph``: the model's forward as an ONNX graph (``torch.onnx.export(..., dynamo=True)``), batch and sequence
  axes dynamic; causal LMs take and return their past keys and values, so generation never recomputes a prefix;
- ``quantize``: int8 weights (dynamic) or int8 weights and activations calibrated on rows (static);
- ``runtime``: :class:`OnnxModel`, an ``onnxruntime.InferenceSession`` behind the call a PyTorch model answers
  (``model(**batch).logits``, a loss when labels come), and greedy generation over the past keys and values;
- ``check``: the exported graph's outputs against PyTorch's on rows of shapes the export never saw;
- ``student``: :func:`export_student`, the whole step: refusals first, export, quantize, check, write.

Nothing here is imported by the trainer or its parts; the recipe layer and the CLI use it. The ONNX packages
are imported inside the functions that need them, so ``import hf_distill`` works without the extra.
"""

from hf_distill.export.graph import ExportRefused
from hf_distill.export.packages import require_export_packages
from hf_distill.export.runtime import OnnxModel
from hf_distill.export.student import ExportResult, export_student

__all__ = ["ExportRefused", "ExportResult", "OnnxModel", "export_student", "require_export_packages"]
