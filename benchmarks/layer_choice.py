"""Which teacher layers make the better student: importance (Block Influence) against a uniform cut, same size
and steps, scored on VALIDATION with the paired interval over seeds.

    python benchmarks/layer_choice.py sentiment --config recipes/configs/sentiment_transfer.yaml \
        --runs uniform=runs/demo importance=runs/layers-importance
    python benchmarks/layer_choice.py codegen --config recipes/configs/codegen.yaml \
        --runs uniform=runs/codegen-uniform18 importance=runs/codegen-budget

Each ``--runs NAME=RUN`` is a finished recipe run (``report.json`` inside) whose first distilled student was
trained under the same seeds as the others'; the runs differ only in which teacher layers their student kept
(``--student_layer_strategy uniform`` / ``importance``, or ``hf-distill budget``'s winner). The first run is the
reference: every other is reported as ``other - reference``, per seed and pooled over seeds and validation
examples (``hf_distill.reports.scorecard.paired_difference``, a 95% bootstrap interval), with the direction
that is better for the task's metric. The data flags after the task (``--config`` and any overrides) must be
the ones the runs were trained with, so the validation split is the one they were not trained on.
Writes results/layer_choice_<task>.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import RESULTS, distilled_seeds, machine, recipe_task, write_result  # noqa: E402


def kept_layers(model: Any) -> list[int] | None:
    """The teacher layers a student kept, as ``student_from_teacher`` recorded them in its config."""
    record = getattr(model.config, "distillation", None) or {}
    return list(record["layers"]) if "layers" in record else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("sentiment", "ner", "codegen"))
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN")
    parser.add_argument("--output", type=Path, default=None)
    options, recipe_argv = parser.parse_known_args(argv)
    runs = dict(item.split("=", 1) for item in options.runs)
    if len(runs) < 2 or any(not name or not path for name, path in runs.items()):
        parser.error("--runs takes two or more NAME=RUN pairs, the reference first")

    from hf_distill.loading import load_pretrained
    from hf_distill.reports.scorecard import format_value, paired_difference, stack_statistics

    folders = {name: distilled_seeds(Path(path)) for name, path in runs.items()}
    seeds = sorted(set.intersection(*(set(f[1]) for f in folders.values())))
    if not seeds:
        raise SystemExit("the runs share no seed: a paired comparison needs the same seeds in each.")
    with tempfile.TemporaryDirectory() as scratch:
        first = next(iter(folders.values()))[1][seeds[0]]
        task, training_args = recipe_task(
            options.task, recipe_argv, scratch, first, f"layer_choice {options.task}"
        )
        stats: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in folders}
        rows: dict[str, Any] = {}
        for name, (student, by_seed) in folders.items():
            rows[name] = {"run": runs[name], "student": student, "metric_per_seed": {}}
            for seed in seeds:
                model = load_pretrained(
                    task.auto_class.from_pretrained, str(by_seed[seed]), role="student", dtype=torch.float32
                ).eval()
                rows[name]["num_layers"] = model.config.num_hidden_layers
                rows[name]["teacher_layers"] = kept_layers(model)
                scores = task.score_examples(model, task.validation, training_args)
                stats[name].append(scores.statistics)
                value = float(scores.metrics[task.metric_name])
                rows[name]["metric_per_seed"][seed] = value
                print(f"{name} seed {seed}: {task.metric_name} {value:.4f}", flush=True)
    reference = next(iter(folders))
    comparisons = {}
    for name in list(folders)[1:]:
        diff = paired_difference(
            stack_statistics(stats[name], task.metric_name),
            stack_statistics(stats[reference], task.metric_name),
            task.metric_name,
        )
        low, high = diff["interval"]
        better = low > 0 if task.higher_is_better else high < 0
        comparisons[f"{name} - {reference}"] = {**diff, "better_with_interval": bool(better)}
        print(
            f"{name} - {reference} on validation ({task.metric_name}, "
            f"{'higher' if task.higher_is_better else 'lower'} is better): "
            f"{format_value(diff['difference'], task.metric_name, signed=True)} "
            f"[{format_value(low, task.metric_name, signed=True)}, {format_value(high, task.metric_name, signed=True)}]"
            f" over {len(seeds)} seeds x {len(task.validation)} examples",
            flush=True,
        )
    result = {
        "benchmark": "layer_choice",
        "meta": {
            "task": options.task,
            "recipe_flags": recipe_argv,
            "split": "validation",
            "validation_examples": len(task.validation),
            "metric": task.metric_name,
            "higher_is_better": task.higher_is_better,
            "seeds": seeds,
        },
        "runs": rows,
        "comparisons": comparisons,
        "machine": machine(),
    }
    out = options.output or RESULTS / f"layer_choice_{options.task}.json"
    print(f"wrote {write_result(result, out)}")
    return result


if __name__ == "__main__":
    main()
