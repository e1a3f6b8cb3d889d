"""The recipes' deployment rows (``--export onnx [--quantize int8-dynamic]``): every distilled student and the
teacher exported (:func:`hf_distill.export.export_student`), scored by the task's own ``score_examples`` through
:class:`hf_distill.export.OnnxModel`, and timed beside the PyTorch models they came from.

Each row: the metric on the same test split with its interval, the paired difference against the PyTorch model
it came from (what export and quantization cost, example by example), retention vs the PyTorch teacher, size
on disk, latency at batch 1 and 32 from one side-by-side harness (torch threads = ONNX Runtime intra-op
threads, recorded) and the speed-up against the PyTorch teacher.

With several seeds (``--seeds 1,2,3``) every seed's distilled student is exported (``onnx/<name>/seed-<s>/``)
and scored, and a student's row pools its seeds as the multi-seed scorecard does (:mod:`hf_distill.reports.scorecard`):
the metric is the mean over seeds with its interval, ``versus_pytorch`` the paired difference against each
seed's own PyTorch model, resampled over test examples with every seed held, and ``per_seed`` each seed's own
metric. Only the first seed's models are timed: every seed's graph has the same shape (same architecture, same
inputs), so latency and size do not depend on the seed and timing the others would only cost time.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import PreTrainedModel

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.export import OnnxModel, export_student
from hf_distill.recipes.latency import LATENCY_BATCH_SIZES, latency_batch, latency_entries
from hf_distill.recipes.tasks import TaskData
from hf_distill.reports.scorecard import model_interval, paired_difference, stack_statistics
from hf_distill.reports.timing import time_models
from hf_distill.students.build import model_size_on_disk
from hf_distill.training.metrics import ExampleScores

STATE_DICT_FILE = "model.safetensors"


@dataclass(frozen=True)
class DeploymentSource:
    """One model's rows: the PyTorch model exported and timed (the first seed's), every seed's test scores in
    PyTorch, the seeds (empty for the teacher, trained once) and the folders the later seeds' models were saved
    in. The later seeds are read back one at a time, exported, scored and dropped, so the deployment holds one
    extra student in memory at most; keeping every seed's models through the run would hold them all, twice
    over with their baselines, and the run saves them anyway.

    Raises:
        ValueError: when the scores, seeds and folders do not count the same models.
    """

    model: nn.Module
    scores: list[ExampleScores]
    seeds: list[int] = field(default_factory=list)
    later_folders: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        models = 1 + len(self.later_folders)
        if len(self.scores) != models or (self.seeds and len(self.seeds) != models):
            raise ValueError(
                f"a deployment source needs one PyTorch score per model: {len(self.scores)} scores, "
                f"{len(self.seeds)} seeds and 1 + {len(self.later_folders)} models (the first seed's and the "
                "later seeds' folders); pass every seed's scores in seed order, with the folder of each seed "
                "after the first."
            )

    def models(self) -> Iterator[nn.Module]:
        """The first seed's model, then each later seed's read back from its folder (one at a time)."""
        yield self.model
        for folder in self.later_folders:
            yield load_seed_model(self.model, folder)

    def folder(self, run_dir: Path, name: str, index: int) -> Path:
        """Where model ``index`` is exported: ``onnx/<name>/`` for one model, ``onnx/<name>/seed-<s>/``
        for several."""
        base = run_dir / "onnx" / name
        return base / f"seed-{self.seeds[index]}" if len(self.scores) > 1 else base


def load_seed_model(first: nn.Module, folder: Path) -> nn.Module:
    """A later seed's student read back from the folder its training saved it in, built as the first seed's:
    a Transformers model through ``from_pretrained`` of the same class; a plain ``nn.Module`` (the vision CNN,
    which the Trainer saves as its state dict alone) as a copy of the first seed's given the saved weights.

    Args:
        first (nn.Module): the first seed's student (its class and, for a plain module, its architecture).
        folder (Path): the later seed's ``students/<name>/seed-<s>/`` (``student_a/`` under it for mutual).

    Returns:
        nn.Module: the later seed's student, in eval mode.

    Raises:
        ValueError: when the folder holds no saved weights.
    """
    if isinstance(first, PreTrainedModel):
        return type(first).from_pretrained(folder).eval()
    weights = Path(folder) / STATE_DICT_FILE
    if not weights.is_file():
        raise ValueError(
            f"{folder} holds no {STATE_DICT_FILE}: the seed's student cannot be read back to export it. The "
            "recipe saves every seed's student there; rerun the seeds, or export the first seed alone "
            "(--seeds with one seed)."
        )
    model = copy.deepcopy(first)
    model.load_state_dict(load_file(weights))
    return model.eval()


def _pixel_shape(task: TaskData) -> tuple[int, ...] | None:
    if "pixel_values" not in task.model_inputs:
        return None
    return tuple(torch.as_tensor(task.test[0]["pixel_values"]).shape)


def deployment_report(
    task: TaskData,
    sources: dict[str, DeploymentSource],
    training_args: DistillationTrainingArguments,
    run_dir: Path,
    *,
    quantize: str | None,
    rounds: int,
    threads: int | None,
) -> dict[str, Any]:
    """``report["deployment"]``: rows for ``sources`` (the teacher named ``teacher``) in PyTorch and in ONNX
    Runtime, pooled over each source's seeds, and how latency was measured (the first seed's models).

    Args:
        task (TaskData): the task (test split, ``score_examples``, latency batches).
        sources (dict[str, DeploymentSource]): each model's PyTorch model(s) and scores, by row name.
        training_args (DistillationTrainingArguments): the arguments scoring runs with.
        run_dir (Path): the run's folder; graphs go to ``onnx/<name>/`` (``seed-<s>/`` under it per seed).
        quantize (str | None): the quantization beside fp32, or None.
        rounds (int): interleaved timing rounds.
        threads (int | None): torch and ONNX Runtime threads (torch's current count when None).

    Returns:
        dict: ``{"quantize", "seeds", "latency_measurement", "rows"}``.
    """
    threads = threads or torch.get_num_threads()
    rows, timed = [], {}
    for name, source in sources.items():
        timed[name] = source.model
        rows.append(_row(name, "pytorch", "fp32", source.scores, source.scores, source.model, task))
        onnx_scores: dict[str, list[ExampleScores]] = {}
        first_graphs: dict[str, OnnxModel] = {}
        for index, model in enumerate(source.models()):
            folder = source.folder(run_dir, name, index)
            exported = _export_and_score(model, folder, task, training_args, quantize, threads)
            for precision, (graph, scores) in exported.items():
                onnx_scores.setdefault(precision, []).append(scores)
                if index == 0:  # the later seeds' sessions go with their model
                    first_graphs[precision] = graph
            del model, exported  # before the next seed is read back
        for precision, scores in onnx_scores.items():
            graph = first_graphs[precision]
            rows.append(_row(name, "onnxruntime", precision, scores, source.scores, graph.path, task))
            timed[f"{name} onnxruntime {precision}"] = graph
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
    seeds = next((list(s.seeds) for s in sources.values() if s.seeds), [])
    measurement = timings.measurement()
    measurement["onnxruntime_intra_op_threads"] = threads
    if seeds:
        # Every seed's graph has the same shape, so the first seed's timing stands for all of them.
        measurement["timed_seed"] = seeds[0]
    return {"quantize": quantize, "seeds": seeds, "latency_measurement": measurement, "rows": rows}


def _export_and_score(
    model: nn.Module,
    folder: Path,
    task: TaskData,
    training_args: DistillationTrainingArguments,
    quantize: str | None,
    threads: int,
) -> dict[str, tuple[OnnxModel, ExampleScores]]:
    """``model`` exported into ``folder`` and each graph (fp32, then ``quantize``'s) loaded with the timing's
    ``threads`` and scored on the test split: ``{precision: (graph, scores)}``."""
    result = export_student(
        model,
        folder,
        quantize=quantize,
        calibration_dataset=task.train if quantize == "int8-static" else None,
        tokenizer=task.tokenizer,
        pixel_shape=_pixel_shape(task),
    )
    variants = {"fp32": result.onnx_path, **({quantize: result.quantized_path} if quantize else {})}
    graphs = {precision: OnnxModel(path, threads=threads) for precision, path in variants.items()}
    return {
        precision: (graph, task.score_examples(graph, task.test, training_args))
        for precision, graph in graphs.items()
    }


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
    scores: list[ExampleScores],
    pytorch_scores: list[ExampleScores],
    source: Path | nn.Module,
    task: TaskData,
) -> dict[str, Any]:
    """A row's metric (the mean over seeds), its interval, each seed's metric and the paired difference against
    the PyTorch models, seed by seed and example by example, as the scorecard computes them; size from the first
    seed's ``source``."""
    metric = task.metric_name
    stacked = stack_statistics([s.statistics for s in scores], metric)
    versus = paired_difference(
        stacked, stack_statistics([s.statistics for s in pytorch_scores], metric), metric
    )
    per_seed = [float(s.metrics[metric]) for s in scores]
    return {
        "model": name,
        "runtime": runtime,
        "precision": precision,
        "path": None if isinstance(source, nn.Module) else str(source),
        "metric": float(np.mean(per_seed)),
        "interval": model_interval(stacked, metric)["interval"],
        "per_seed": per_seed,
        "versus_pytorch": {k: versus[k] for k in ("difference", "interval")},
        "size_bytes": size_on_disk(source),
    }
