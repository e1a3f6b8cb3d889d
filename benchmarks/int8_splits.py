"""int8 schemes on a finished run's students, task by task: chosen on VALIDATION, then reported on test.

    python benchmarks/int8_splits.py ner --config recipes/configs/ner.yaml --run runs/ner-int8 --seeds 1,2,3
    python benchmarks/int8_splits.py sentiment --config recipes/configs/sentiment_transfer.yaml \
        --run runs/demo --seeds 1,2,3 --max_eval_samples 100000

Every seed's first distilled student is read from the run (``report.json``), exported once to fp32 ONNX
(``hf_distill.export_student``) and quantized by each scheme of :func:`schemes`; each graph is scored through
``hf_distill.export.OnnxModel`` by the task's own ``score_examples``, on the validation split (where a scheme
is chosen) and on the test split (reported once the choice is made), exactly as the recipes score their
deployment rows. Each scheme's row: the metric and its difference from the seed's PyTorch student, paired
example by example and pooled over seeds with a 95% bootstrap interval
(``hf_distill.reports.scorecard.paired_difference``), and the rows whose prediction changed (classification).
The flags after the task (``--config`` and overrides) must be the run's data flags. No timing: latency is
measured by the recipes' deployment rows and ``export_latency.py``. Writes results/int8_splits_<task>.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import RESULTS, distilled_seeds, machine, recipe_task, write_result  # noqa: E402

SPLITS = ("validation", "test")


def schemes() -> dict[str, Callable[[Path, Path], None]]:
    """name -> build(fp32 graph, target) of each int8 graph compared: the package's own quantization, so the
    chosen row is exactly what ships."""
    from hf_distill.export.quantize import quantize_dynamic_graph, quantize_graph

    return {
        "int8-dynamic, per-tensor weights, down-projections fp32": lambda fp32, target: (
            quantize_dynamic_graph(fp32, target, per_channel=False)
        ),
        "int8-dynamic, per-channel weights, down-projections fp32": lambda fp32, target: quantize_graph(
            fp32, target, "int8-dynamic"
        ),
        "int8 weights in blocks of 32, activations per block (MatMulNBits)": lambda fp32, target: (
            quantize_graph(fp32, target, "int8-weights")
        ),
    }


def predictions(scores: Any) -> np.ndarray | None:
    """Per-example correctness (classification), to count the rows a scheme changed; None for other metrics."""
    return scores.statistics.get("correct") if isinstance(scores.statistics, dict) else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("task", choices=("sentiment", "ner", "codegen"))
    parser.add_argument("--run", type=Path, required=True, help="a finished recipe run (report.json inside)")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    options, recipe_argv = parser.parse_known_args(argv)
    seeds = [int(s) for s in options.seeds.split(",")]

    from hf_distill.export import OnnxModel, export_student
    from hf_distill.loading import load_pretrained
    from hf_distill.reports.scorecard import format_value, paired_difference, stack_statistics

    torch.set_num_threads(options.threads)
    name, folders = distilled_seeds(options.run)
    missing = [s for s in seeds if s not in folders]
    if missing:
        raise SystemExit(f"{options.run}: {name} has no seed(s) {missing}; it has {sorted(folders)}.")
    builders = schemes()
    scores: dict[str, dict[str, list]] = {}  # variant -> split -> per-seed ExampleScores
    with tempfile.TemporaryDirectory() as scratch:
        task, training_args = recipe_task(
            options.task, recipe_argv, scratch, folders[seeds[0]], f"int8_splits {options.task}"
        )
        tokenizer = task.tokenizer
        for seed in seeds:
            student = load_pretrained(
                task.auto_class.from_pretrained, str(folders[seed]), role="student", dtype=torch.float32
            ).eval()
            export = export_student(student, Path(scratch) / f"seed-{seed}", tokenizer=tokenizer)
            models = {"pytorch": student, "onnx fp32": OnnxModel(export.onnx_path, threads=options.threads)}
            for i, (variant, build) in enumerate(builders.items()):
                target = export.onnx_path.with_name(f"variant_{i}.onnx")
                build(export.onnx_path, target)
                models[variant] = OnnxModel(target, threads=options.threads)
            for variant, model in models.items():
                for split in SPLITS:
                    scored = task.score_examples(model, getattr(task, split), training_args)
                    scores.setdefault(variant, {}).setdefault(split, []).append(scored)
                print(
                    f"seed {seed} {variant:<58} "
                    + "  ".join(
                        f"{split} {scores[variant][split][-1].metrics[task.metric_name]:.4f}"
                        for split in SPLITS
                    ),
                    flush=True,
                )
    metric = task.metric_name
    rows: dict[str, Any] = {}
    for variant, by_split in scores.items():
        rows[variant] = {}
        for split, per_seed in by_split.items():
            reference = scores["pytorch"][split]
            diff = paired_difference(
                stack_statistics([s.statistics for s in per_seed], metric),
                stack_statistics([s.statistics for s in reference], metric),
                metric,
            )
            mine = [predictions(s) for s in per_seed]
            theirs = [predictions(s) for s in reference]
            changed = (
                int(sum(int((a != b).sum()) for a, b in zip(mine, theirs))) if mine[0] is not None else None
            )
            rows[variant][split] = {
                "metric_per_seed": [float(s.metrics[metric]) for s in per_seed],
                "versus_pytorch": {"difference": diff["difference"], "interval": diff["interval"]},
                "correctness_changed": changed,
            }
    print(f"\n{name} of {options.run}, seeds {seeds}: {metric}, each scheme - the PyTorch student")
    for variant, by_split in rows.items():
        shown = []
        for split in SPLITS:
            versus = by_split[split]["versus_pytorch"]
            low, high = (format_value(x, metric, signed=True) for x in versus["interval"])
            shown.append(f"{split} {format_value(versus['difference'], metric, signed=True)} [{low}, {high}]")
        print(f"  {variant:<58} " + "   ".join(shown))
    result = {
        "benchmark": "int8_splits",
        "meta": {
            "task": options.task,
            "run": str(options.run),
            "student": name,
            "seeds": seeds,
            "recipe_flags": recipe_argv,
            "metric": metric,
            "rows": {split: len(getattr(task, split)) for split in SPLITS},
            "threads": options.threads,
        },
        "variants": rows,
        "machine": machine(),
    }
    out = options.output or RESULTS / f"int8_splits_{options.task}.json"
    print(f"wrote {write_result(result, out)}")
    return result


if __name__ == "__main__":
    main()
