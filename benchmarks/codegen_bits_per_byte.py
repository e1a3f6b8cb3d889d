"""KD - no-KD of a finished code run in BITS PER BYTE on its test blocks, paired by seed and block, 95% interval.

    python benchmarks/codegen_bits_per_byte.py --run runs/codegen --config recipes/configs/codegen.yaml

The recipe's scorecard compares perplexity; bits per byte is what the code targets name (and what compares
across tokenizers). Both come from the same per-block sums the recipe's scorer keeps (NLL, tokens, bytes), so
this reloads every seed's distilled student and its no-KD twin, scores the test split exactly as the recipe did
(``score_examples``), and runs the scorecard's paired bootstrap (``paired_difference``) on ``bits_per_byte``
instead. The data flags after ``--run`` (``--config`` and any overrides) must be the run's own.
Writes results/codegen_bits_per_byte.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402
from _common import RESULTS, machine, recipe_task, run_folder, shown_path, write_result  # noqa: E402

METRIC = "bits_per_byte"


def seed_folders(run: Path) -> dict[str, dict[int, Path]]:
    """``{"distilled": {seed: folder}, "no_kd": {...}}`` of the first distilled student and its no-KD twin."""
    report = json.loads((run / "report.json").read_text())
    kinds = {"distilled": "distilled", "no_kd": "no_kd_baseline"}
    found = {}
    for label, kind in kinds.items():
        entries = [s for s in report.get("students", []) if s.get("kind") == kind]
        if not entries:
            raise SystemExit(f"{run}/report.json has no {kind} student: train with --run_baseline true.")
        found[label] = {s["seed"]: run_folder(run, s["output_dir"]) for s in entries[0]["seeds"]}
    if set(found["distilled"]) != set(found["no_kd"]):
        raise SystemExit(f"the distilled and no-KD students were trained under different seeds: {found}")
    return found


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished codegen run (report.json inside)")
    parser.add_argument("--output", type=Path, default=RESULTS / "codegen_bits_per_byte.json")
    options, recipe_argv = parser.parse_known_args(argv)

    from hf_distill.loading import load_pretrained
    from hf_distill.reports.scorecard import model_interval, paired_difference, stack_statistics, verdict

    folders = seed_folders(options.run)
    seeds = sorted(folders["distilled"])
    stats: dict[str, list] = {label: [] for label in folders}
    per_seed: dict[str, dict[int, float]] = {label: {} for label in folders}
    with tempfile.TemporaryDirectory() as scratch:
        first = folders["distilled"][seeds[0]]
        task, training_args = recipe_task("codegen", recipe_argv, scratch, first, "codegen_bits_per_byte")
        for label, by_seed in folders.items():
            for seed in seeds:
                model = load_pretrained(
                    task.auto_class.from_pretrained, str(by_seed[seed]), role="student", dtype=torch.float32
                ).eval()
                scores = task.score_examples(model, task.test, training_args)
                stats[label].append(scores.statistics)
                per_seed[label][seed] = float(scores.metrics[METRIC])
                print(f"{label} seed {seed}: {METRIC} {per_seed[label][seed]:.4f}", flush=True)
    stacked = {label: stack_statistics(values, METRIC) for label, values in stats.items()}
    difference = paired_difference(stacked["distilled"], stacked["no_kd"], METRIC)
    line = verdict(difference, METRIC, higher_is_better=False, n_seeds=len(seeds), n_examples=len(task.test))
    print(line, flush=True)
    result = {
        "benchmark": "codegen_bits_per_byte",
        "command": f"python benchmarks/codegen_bits_per_byte.py --run {shown_path(options.run)} "
        + " ".join(recipe_argv),
        "split": "test",
        "test_blocks": len(task.test),
        "seeds": seeds,
        "models": {
            label: {"per_seed": per_seed[label], "interval": model_interval(stacked[label], METRIC)}
            for label in folders
        },
        "kd_minus_no_kd": {**difference, "verdict": line},
        "machine": machine(),
    }
    print(f"wrote {write_result(result, options.output)}")
    return result


if __name__ == "__main__":
    main()
