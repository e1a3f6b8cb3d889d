"""The recipes' deployment rows (``--export onnx [--quantize int8-dynamic]``): every distilled student and the
teacher exported (:func:`hf_distill.export.export_student`), scored by the task's own ``score_examples`` through
:class:`hf_distill.export.OnnxModel`, and timed beside the PyTorch models they came from.

Each row: the metric on the same test split with its interval, the paired difference against the PyTorch model
it came from (what export and quantization cost, example by example), retention vs the PyTorch teacher, size
on disk, latency at batch 1 and 32 from one side-by-side harness (torch threads = ONNX Runtime intra-op
threads, recorded) and the speed-up against the PyTorch teacher. The first seed's students are exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.export import OnnxModel, export_student
from hf_distill.recipes.latency import LATENCY_BATCH_SIZES, latency_batch, latency_entries
from hf_distill.recipes.tasks import TaskData
from hf_distill.reports.scorecard import model_interval, paired_difference, stack_statistics
from hf_distill.reports.timing import time_models
from hf_distill.students.build import model_size_on_disk
from hf_distill.training.metrics import ExampleScores


def _pixel_shape(task: TaskData) -> tuple[int, ...] | None:
    if "pixel_values" not in task.model_inputs:
        return None
    return tuple(torch.as_tensor(task.test[0]["pixel_values"]).shape)


def deployment_report(
    task: TaskData,
    sources: dict[str, tuple[nn.Module, ExampleScores]],
    training_args: DistillationTrainingArguments,
    run_dir: Path,
    *,
    quantize: str | None,
    rounds: int,
    threads: int | None,
) -> dict[str, Any]:
    """``report["deployment"]``: rows for ``sources`` (``{name: (PyTorch model, its test scores)}``,
    the teacher named ``teacher``) in PyTorch and in ONNX Runtime, and how latency was measured."""
    threads = threads or torch.get_num_threads()
    calibration = task.train if quantize == "int8-static" else None
    rows, timed = [], {}
    for name, (model, scores) in sources.items():
        timed[name] = model
        rows.append(_row(name, "pytorch", "fp32", scores, scores, model, task))
        result = export_student(
            model,
            run_dir / "onnx" / name,
            quantize=quantize,
            calibration_dataset=calibration,
            tokenizer=task.tokenizer,
            pixel_shape=_pixel_shape(task),
        )
        variants = {"fp32": result.onnx_path, **({quantize: result.quantized_path} if quantize else {})}
        for precision, path in variants.items():
            onnx_model = OnnxModel(path, threads=threads)
            onnx_scores = task.score_examples(onnx_model, task.test, training_args)
            rows.append(_row(name, "onnxruntime", precision, onnx_scores, scores, path, task))
            timed[f"{name} onnxruntime {precision}"] = onnx_model
    batches = {size: latency_batch(task, size) for size in LATENCY_BATCH_SIZES}
    timings = time_models(timed, batches, rounds=rounds, threads=threads)
    latency = latency_entries(timings, reference="teacher")
    teacher_metric = rows[0]["metric"]
    for row, key in zip(rows, _timing_keys(rows)):
        row.update(latency[key])
        row["speedup_b1"], row["speedup_b32"] = (
            (latency["teacher"][f"latency_ms_b{s}"] / row[f"latency_ms_b{s}"]) for s in LATENCY_BATCH_SIZES
        )
        ratio = row["metric"] / teacher_metric if task.higher_is_better else teacher_metric / row["metric"]
        row["retention"] = float(ratio)
    measurement = timings.measurement()
    measurement["onnxruntime_intra_op_threads"] = threads
    return {"quantize": quantize, "latency_measurement": measurement, "rows": rows}


def _timing_keys(rows: list[dict[str, Any]]) -> list[str]:
    return [
        r["model"] if r["runtime"] == "pytorch" else f"{r['model']} {r['runtime']} {r['precision']}"
        for r in rows
    ]


def size_on_disk(source: Path | nn.Module) -> int:
    """Bytes of an ONNX file, or of a PyTorch model's saved weights (its parameters' bytes when it has no
    ``save_pretrained``, as the vision recipe's CNN)."""
    if isinstance(source, nn.Module) and not hasattr(source, "save_pretrained"):
        return int(sum(p.numel() * p.element_size() for p in source.parameters()))
    return int(model_size_on_disk(source))


def _row(
    name: str,
    runtime: str,
    precision: str,
    scores: ExampleScores,
    pytorch_scores: ExampleScores,
    source: Path | nn.Module,
    task: TaskData,
) -> dict[str, Any]:
    """A row's metric, its interval and the paired difference against the PyTorch model (one seed)."""
    metric = task.metric_name
    stacked = stack_statistics([scores.statistics], metric)
    versus = paired_difference(stacked, stack_statistics([pytorch_scores.statistics], metric), metric)
    return {
        "model": name,
        "runtime": runtime,
        "precision": precision,
        "path": None if isinstance(source, nn.Module) else str(source),
        "metric": float(scores.metrics[metric]),
        "interval": model_interval(stacked, metric)["interval"],
        "versus_pytorch": {k: versus[k] for k in ("difference", "interval")},
        "size_bytes": size_on_disk(source),
    }
