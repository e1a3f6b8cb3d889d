"""Every seed's code students on test: KD - no-KD in BITS PER BYTE (paired by seed and block, 95% interval) and
each student's parse rate on the held-out documented functions.

    python benchmarks/codegen_seeds.py --run runs/codegen --config recipes/configs/codegen.yaml

The recipe's scorecard compares perplexity, and its generation section completes the prompts with seed 1's
students only. The code targets name bits per byte (what compares across tokenizers) and a parse rate, so this
reloads every seed's distilled student and its no-KD twin and

* scores the test blocks exactly as the recipe did (``score_examples``: per-block NLL, tokens, bytes) and runs
  the scorecard's paired bootstrap (``paired_difference``) on ``bits_per_byte``;
* completes the recipe's held-out prompts (``--generation_prompts`` of the config, greedy, raw prompts; the
  ``_common.completion_counts``) and counts the completions that parse, with the paired interval of KD - no-KD
  in parse rate (over seeds and prompts); the teacher's rates are read from the run's report (chat and raw);
* where the run fine-tuned its teacher on the corpus first (``--fine_tune_teacher``), scores that teacher the
  same two ways.

The data flags after ``--run`` (``--config`` and any overrides) must be the run's own.
Writes results/codegen_seeds.json (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    completion_counts,
    distilled_seeds,
    machine,
    recipe_task,
    shown_path,
    write_result,
)

METRIC = "bits_per_byte"


def seed_folders(run: Path) -> dict[str, dict[int, Path]]:
    """``{"distilled": {seed: folder}, "no_kd": {...}}`` of the first distilled student and its no-KD twin."""
    found = {"distilled": distilled_seeds(run)[1], "no_kd": distilled_seeds(run, "no_kd_baseline")[1]}
    if set(found["distilled"]) != set(found["no_kd"]):
        raise SystemExit(f"the distilled and no-KD students were trained under different seeds: {found}")
    return found


def teacher_generation(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The teacher's rows of the run's generation section (parse rate per prompt style), as the recipe wrote them:
    every row but the students' (whose names, ``teacher_layers-...``, may start with "teacher" too)."""
    students = {entry["name"] for entry in report.get("students", [])}
    return [
        {k: row[k] for k in ("name", "prompt_style", "prompts", "parse_rate", "degenerate_rate")}
        for row in report.get("generation", {}).get("models", [])
        if row["name"] not in students
    ]


def fine_tuned_teacher(
    report: dict[str, Any], task: Any, training_args: Any, prompts: list, config: Any
) -> dict | None:
    """The teacher the run fine-tuned on the corpus (the one its students learnt from), scored as they are: bits
    per byte on the test blocks and its raw completions' parses. None where the run used the teacher as given."""
    from hf_distill.loading import load_pretrained

    folder = report["teacher"].get("fine_tuned_dir")
    if not folder:
        return None
    model = load_pretrained(
        task.auto_class.from_pretrained, folder, role="teacher_model", dtype=torch.float32
    ).eval()
    scored = task.score_examples(model, task.test, training_args)
    counts = completion_counts(model, task.tokenizer, prompts, config)
    print(f"fine-tuned teacher: {METRIC} {scored.metrics[METRIC]:.4f}, {counts}", flush=True)
    return {"folder": shown_path(Path(folder)), METRIC: float(scored.metrics[METRIC]), "parse": counts}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished codegen run (report.json inside)")
    parser.add_argument("--output", type=Path, default=RESULTS / "codegen_seeds.json")
    options, recipe_argv = parser.parse_known_args(argv)

    from hf_distill.loading import load_pretrained
    from hf_distill.recipes.arguments import parse_recipe_config
    from hf_distill.recipes.code_prompts import held_out_prompts
    from hf_distill.recipes.generation_eval import prompt_files
    from hf_distill.reports.scorecard import model_interval, paired_difference, stack_statistics, verdict

    folders = seed_folders(options.run)
    report = json.loads((options.run / "report.json").read_text())
    seeds = sorted(folders["distilled"])
    stats: dict[str, list] = {label: [] for label in folders}
    per_seed: dict[str, dict[int, float]] = {label: {} for label in folders}
    parsing: dict[str, dict[int, dict]] = {label: {} for label in folders}
    with tempfile.TemporaryDirectory() as scratch:
        first = folders["distilled"][seeds[0]]
        task, training_args = recipe_task("codegen", recipe_argv, scratch, first, "codegen_seeds")
        config = parse_recipe_config(
            [*recipe_argv, "--output_dir", scratch, "--report_to", "none"],
            task="codegen",
            prog="codegen_seeds",
            description="",
        )
        prompts = held_out_prompts(prompt_files(config.data)[0], config.report.generation_prompts)
        for label, by_seed in folders.items():
            for seed in seeds:
                model = load_pretrained(
                    task.auto_class.from_pretrained, str(by_seed[seed]), role="student", dtype=torch.float32
                ).eval()
                scores = task.score_examples(model, task.test, training_args)
                stats[label].append(scores.statistics)
                per_seed[label][seed] = float(scores.metrics[METRIC])
                parsing[label][seed] = completion_counts(model, task.tokenizer, prompts, config)
                print(
                    f"{label} seed {seed}: {METRIC} {per_seed[label][seed]:.4f}, {parsing[label][seed]}",
                    flush=True,
                )
        taught_by = fine_tuned_teacher(report, task, training_args, prompts, config)
    stacked = {label: stack_statistics(values, METRIC) for label, values in stats.items()}
    difference = paired_difference(stacked["distilled"], stacked["no_kd"], METRIC)
    line = verdict(difference, METRIC, higher_is_better=False, n_seeds=len(seeds), n_examples=len(task.test))
    print(line, flush=True)
    # The parse rate as an accuracy over prompts ("correct" = parses), paired by seed and prompt.
    parse_stats = {
        label: stack_statistics(
            [{"correct": np.array(parsing[label][seed]["parses"], dtype=float)} for seed in seeds], "accuracy"
        )
        for label in folders
    }
    parse_difference = paired_difference(parse_stats["distilled"], parse_stats["no_kd"], "accuracy")
    print(f"parse rate KD - no-KD: {parse_difference}", flush=True)
    result = {
        "benchmark": "codegen_seeds",
        "command": f"python benchmarks/codegen_seeds.py --run {shown_path(options.run)} "
        + " ".join(recipe_argv),
        "split": "test",
        "test_blocks": len(task.test),
        "seeds": seeds,
        "models": {
            label: {
                "per_seed": per_seed[label],
                "interval": model_interval(stacked[label], METRIC),
                "parse_per_seed": parsing[label],
            }
            for label in folders
        },
        "teacher_generation": teacher_generation(report),
        "fine_tuned_teacher": taught_by,
        "kd_minus_no_kd": {**difference, "verdict": line},
        "parse_rate_kd_minus_no_kd": parse_difference,
        "machine": machine(),
    }
    print(f"wrote {write_result(result, options.output)}")
    return result


if __name__ == "__main__":
    main()
