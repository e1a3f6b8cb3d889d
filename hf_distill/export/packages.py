"""The optional packages the export needs, checked before any work so a missing one fails in one line."""

from __future__ import annotations

import importlib.util

EXPORT_PACKAGES = ("onnx", "onnxruntime", "onnxscript")
INSTALL_HINT = 'pip install "hf_distill[export]"'


def require_export_packages() -> None:
    """Raises ImportError naming the missing packages and the extra that installs them.

    Raises:
        ImportError: when onnx, onnxruntime or onnxscript (the dynamo exporter's translator) is missing.
    """
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"exporting to ONNX needs {', '.join(missing)}, which is not installed: run `{INSTALL_HINT}` "
            "(onnx, onnxruntime, and onnxscript for torch.onnx.export(dynamo=True))."
        )
