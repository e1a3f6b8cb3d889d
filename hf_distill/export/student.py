"""Exporting a trained model, :func:`export_student`: refusals first, then export, quantize, check and write.

The layout is the one transformers.js and the Hub already use: ``OUT/onnx/model.onnx`` (fp32),
``OUT/onnx/model_quantized.onnx`` (int8), and the config and tokenizer in ``OUT/`` beside ``onnx/``;
``OUT/onnx/export.json`` says what the graph takes, what the check measured, and which model it came from (its
fingerprint and whether it carried a student's ``distillation`` record: what the push guard reads to refuse a
teacher's graph, int8 ones included, whose weights no longer equal the teacher's).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hf_distill.export.check import argmax_agreement, check_fp32
from hf_distill.export.graph import GraphSpec, export_graph, graph_spec
from hf_distill.export.packages import require_export_packages
from hf_distill.export.quantize import check_quantization, quantize_graph
from hf_distill.export.runtime import MANIFEST, OnnxModel
from hf_distill.hub.push_guard import model_fingerprint
from hf_distill.model_kind import CAUSAL_LM, GENERIC

ONNX_FOLDER, FP32_FILE, INT8_FILE = "onnx", "model.onnx", "model_quantized.onnx"
# int8 keeps the argmax of fewer rows than this: warned about (the recipes measure the metric's real cost).
INT8_AGREEMENT_WARNING = 0.95
CALIBRATION_ROWS = 128


@dataclass
class ExportResult:
    """What :func:`export_student` wrote and measured."""

    output_dir: Path
    onnx_path: Path
    quantized_path: Path | None
    spec: GraphSpec
    max_abs_difference: float  # fp32 graph vs PyTorch, on shapes not traced
    int8_agreement: float | None  # share of rows whose argmax int8 keeps, vs PyTorch
    size_bytes: int
    quantized_size_bytes: int | None


def export_student(
    model_or_folder: nn.Module | str | Path | Any,
    output_dir: str | Path,
    *,
    quantize: str | None = None,
    calibration_dataset: Iterable[Mapping[str, Any]] | None = None,
    tokenizer: Any = None,
    pixel_shape: tuple[int, int, int] | None = None,
    atol: float = 1e-4,
) -> ExportResult:
    """Exports a model (the student alone) to ONNX, optionally int8, and checks it before returning.

    Args:
        model_or_folder (nn.Module | str | Path | Trainer): a model, a folder written by ``save_pretrained``,
            or a trainer (its ``model``, the student: projection heads and other distillation modules stay out).
        output_dir (str | Path): where ``onnx/model.onnx``, the config and tokenizer go.
        quantize (str | None): ``"int8-dynamic"``, ``"int8-static"`` (needs ``calibration_dataset``),
            ``"int8-weights"`` (:mod:`hf_distill.export.quantize` compares them) or None.
        calibration_dataset (Iterable[Mapping] | None): rows with the model's input columns, for static int8.
        tokenizer: saved beside the graph; read from the folder when a folder is given.
        pixel_shape (tuple[int, int, int] | None): ``(channels, height, width)`` of an image model's input.
        atol (float): tolerance of the fp32 check (absolute, and relative to each output's largest magnitude).

    Returns:
        ExportResult: paths, sizes, the fp32 check's largest difference and int8's argmax agreement.

    Raises:
        ImportError: the ``[export]`` extra is not installed.
        ValueError: an unknown ``quantize``, static int8 without rows, a folder that is not a model.
        ExportRefused: the architecture cannot be traced (named, with the step that failed).
        ExportCheckFailed: the fp32 graph does not reproduce PyTorch's outputs.
    """
    require_export_packages()
    check_quantization(quantize, calibration_dataset)
    model, tokenizer = _resolve(model_or_folder, tokenizer)
    model.eval()
    spec = graph_spec(model, list(pixel_shape) if pixel_shape else None)
    folder = Path(output_dir) / ONNX_FOLDER
    onnx_path = folder / FP32_FILE
    export_graph(model, spec, onnx_path)
    source = export_source_record(model)
    _write_manifest(folder, spec, {}, source)
    worst = check_fp32(model, spec, OnnxModel(onnx_path).session, atol=atol, rtol=atol)
    quantized_path, agreement = None, None
    if quantize:
        quantized_path = folder / INT8_FILE
        feeds = None if calibration_dataset is None else calibration_feeds(calibration_dataset, spec)
        quantize_graph(onnx_path, quantized_path, quantize, feeds)
        agreement = argmax_agreement(model, spec, OnnxModel(quantized_path).session)
        if agreement < INT8_AGREEMENT_WARNING:
            warnings.warn(
                f"{spec.architecture}: the {quantize} graph keeps PyTorch's argmax on {agreement:.1%} of random "
                f"rows (< {INT8_AGREEMENT_WARNING:.0%}); score it on the task before shipping it "
                "(the recipes' --export flag does); benchmarks/int8_variants.py compares int8 schemes on validation rows.",
                stacklevel=2,
            )
    checks = {"max_abs_difference": worst, "atol": atol, "quantize": quantize, "int8_agreement": agreement}
    _write_manifest(folder, spec, checks, source)
    _save_beside(model, tokenizer, Path(output_dir))
    return ExportResult(
        Path(output_dir),
        onnx_path,
        quantized_path,
        spec,
        worst,
        agreement,
        onnx_path.stat().st_size,
        quantized_path.stat().st_size if quantized_path else None,
    )


def _resolve(model_or_folder: Any, tokenizer: Any) -> tuple[nn.Module, Any]:
    """The module to export (a trainer gives its student) and the tokenizer to save beside it."""
    if isinstance(model_or_folder, nn.Module):
        return model_or_folder, tokenizer
    if isinstance(getattr(model_or_folder, "model", None), nn.Module):  # a (distillation) Trainer
        return model_or_folder.model, tokenizer or getattr(model_or_folder, "processing_class", None)
    if isinstance(model_or_folder, (str, Path)):
        return load_model_folder(Path(model_or_folder), tokenizer)
    raise TypeError(
        f"model_or_folder is a {type(model_or_folder).__name__}; pass a model, a trainer, or the folder a "
        "model was saved to with save_pretrained."
    )


def load_model_folder(folder: Path, tokenizer: Any = None) -> tuple[nn.Module, Any]:
    """The model saved in ``folder`` (its ``config.json`` names the class) and its tokenizer, if saved.

    Raises:
        ValueError: when ``folder`` is not a folder holding ``config.json`` and weights.
    """
    import transformers

    weights = list(folder.glob("*.safetensors")) + list(folder.glob("*.bin")) if folder.is_dir() else []
    if not (folder / "config.json").is_file() or not weights:
        raise ValueError(
            f"{folder} is not a model folder: it needs config.json and weights (*.safetensors), as "
            "save_pretrained writes them; pass the student's folder (e.g. runs/<recipe>/students/<name>)."
        )
    config = transformers.AutoConfig.from_pretrained(folder)
    architecture = (config.architectures or [None])[0]
    model_class = getattr(transformers, architecture or "", None)
    if model_class is None:
        raise ValueError(
            f"{folder}/config.json names the architecture {architecture!r}, which this transformers does not "
            "have; export it from Python with export_student(model, ...)."
        )
    if tokenizer is None and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    return model_class.from_pretrained(folder), tokenizer


def calibration_feeds(rows: Iterable[Mapping[str, Any]], spec: GraphSpec) -> list[dict[str, np.ndarray]]:
    """Session feeds of one row each (at most :data:`CALIBRATION_ROWS`), missing inputs filled as the runtime
    fills them."""
    feeds = []
    for row in rows:
        if len(feeds) >= CALIBRATION_ROWS:
            break
        if spec.task == GENERIC:
            feeds.append({"pixel_values": np.asarray(row["pixel_values"], np.float32)[None]})
            continue
        ids = np.asarray(row["input_ids"], np.int64)[None]
        feed = {
            "input_ids": ids,
            "attention_mask": np.asarray(row.get("attention_mask", np.ones_like(ids[0])))[None],
        }
        if "token_type_ids" in spec.inputs:
            feed["token_type_ids"] = np.asarray(row.get("token_type_ids", np.zeros_like(ids[0])), np.int64)[
                None
            ]
        if spec.task == CAUSAL_LM:
            feed["position_ids"] = np.arange(ids.shape[1])[None]
            heads, dim = spec.past_shape
            feed.update({n: np.zeros((1, heads, 0, dim), np.float32) for n in spec.past_names()})
        feeds.append({k: v.astype(np.int64) if v.dtype.kind in "iu" else v for k, v in feed.items()})
    return feeds


def export_source_record(model: nn.Module) -> dict[str, Any]:
    """``export.json``'s ``source``: the exported model's fingerprint and whether its config carries the
    ``distillation`` record every hf_distill student has (None for a model without a config)."""
    config = getattr(model, "config", None)
    record = None if config is None else isinstance(getattr(config, "distillation", None), dict)
    return {"fingerprint": model_fingerprint(model), "distillation_record": record}


def _write_manifest(folder: Path, spec: GraphSpec, checks: dict[str, Any], source: dict[str, Any]) -> None:
    manifest = {
        "graph": dataclasses.asdict(spec),
        "check": checks,
        "source": source,
        "torch": torch.__version__,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _save_beside(model: nn.Module, tokenizer: Any, output_dir: Path) -> None:
    """The config (and generation config) and tokenizer beside ``onnx/``, as the Hub's ONNX repos lay them."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(output_dir)
    generation = getattr(model, "generation_config", None)
    if generation is not None and hasattr(generation, "save_pretrained"):
        generation.save_pretrained(output_dir)
    if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(output_dir)
