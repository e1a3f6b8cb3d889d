"""ONNX graphs as the push guard reads them: their weights, the external data files they name, and what
``export_student`` recorded about the model it exported (``export.json`` beside the graph).

The ``onnx`` package is imported inside the functions, so the guard works without the ``[export]`` extra until
a folder would upload a graph (then it is needed to read it, and a graph that cannot be read is refused).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ONNX_SUFFIX = ".onnx"
# External data files as torch's exporter and onnx.save_model name them: weights of a graph kept outside it.
EXTERNAL_DATA_SUFFIXES = (".onnx_data", ".onnx.data")
# Written beside the graph by hf_distill.export.export_student (its "source" entry says which model it was).
EXPORT_MANIFEST = "export.json"
# Integer weight types of a quantized graph (onnx.TensorProto: UINT8, INT8, UINT4, INT4).
_QUANTIZED_TYPES = (2, 3, 21, 22)


def _load_graph(path: Path) -> Any:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    if not model.HasField("graph"):
        raise ValueError(f"{path} holds no graph")
    return model.graph


def _weights(graph: Any) -> list[Any]:
    """Initializers and the tensors of ``Constant`` nodes (a folded weight may end up in either)."""
    constants = [
        attribute.t
        for node in graph.node
        if node.op_type == "Constant"
        for attribute in node.attribute
        if attribute.name == "value"
    ]
    return [*graph.initializer, *constants]


def _as_tensor(proto: Any, base_dir: Path) -> torch.Tensor:
    from onnx import numpy_helper

    array = numpy_helper.to_array(proto, base_dir=str(base_dir))  # reads external data where the graph says
    if array.dtype.kind not in "fiub":  # bfloat16 / float8 arrays (ml_dtypes): exact in float32
        array = array.astype(np.float32)
    return torch.from_numpy(np.array(array))  # a writable, contiguous copy


def onnx_tensors(path: Path) -> Iterator[tuple[str, tuple[int, ...], Any]]:
    """``(name, shape, load)`` for each weight of the graph in ``path``, as
    :func:`hf_distill.hub.push_guard.file_tensors` gives them for PyTorch formats; ``load()`` reads that
    tensor alone (from its external data file when it has one).

    A 2-D weight comes twice, as stored and transposed (``name.T``): exporters store a ``Linear``'s weight
    transposed for ``MatMul``, so the teacher's ``(out, in)`` tensor is found as the graph's ``(in, out)``.

    Raises:
        ValueError: (or onnx's own errors) when ``path`` is not an ONNX model with a graph.
    """
    path = Path(path)
    for proto in _weights(_load_graph(path)):
        shape = tuple(int(size) for size in proto.dims)

        def load(proto: Any = proto) -> torch.Tensor:
            return _as_tensor(proto, path.parent)

        yield proto.name, shape, load
        if len(shape) == 2:
            yield f"{proto.name}.T", shape[::-1], lambda load=load: load().T


def external_data_files(path: Path) -> set[Path]:
    """The files holding weights of the graph in ``path`` outside it (resolved paths)."""
    path = Path(path)
    found = set()
    for proto in _weights(_load_graph(path)):
        for entry in proto.external_data:
            if entry.key == "location":
                found.add((path.parent / entry.value).resolve())
    return found


def has_quantized_weights(path: Path) -> bool:
    """Whether the graph in ``path`` holds integer weight matrices (an int8 or int4 quantized graph), whose
    values no longer equal any float model's."""
    return any(
        len(proto.dims) >= 2 and proto.data_type in _QUANTIZED_TYPES for proto in _weights(_load_graph(path))
    )


def export_source(path: Path) -> dict[str, Any] | None:
    """The ``source`` entry of the ``export.json`` beside the graph in ``path`` (the exported model's
    fingerprint and whether it carried a student's ``distillation`` record), or None when there is none."""
    manifest = Path(path).parent / EXPORT_MANIFEST
    try:
        source = json.loads(manifest.read_text(encoding="utf-8")).get("source")
    except (OSError, ValueError, AttributeError):
        return None
    return source if isinstance(source, dict) else None
