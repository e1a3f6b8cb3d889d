"""Every distillation mode against plain KD and no KD, through the recipes, on the real offline data.

    python benchmarks/modes_recipes.py [--task sentiment|codegen|all] [--quick] [--out runs/modes]

Sentiment (recipes/configs/sentiment.yaml: MiniLM-L6 fine-tuned on 2,000 Rotten Tomatoes snippets, a 3-layer
student, one epoch, 800 test snippets of unseen movies): plain KD and the no-KD baseline first, then, with
the same fine-tuned teacher and the same student, step budget and data order, KD plus attention-map matching,
multi-teacher (the teacher plus MiniLM-L6 fine-tuned with the next seed, equal weights), self-distillation
(EMA of the student, no teacher) and mutual learning (two students, no teacher).

Code (recipes/configs/codegen.yaml: SmolLM2-135M, 24 steps of 4 blocks of 128 tokens; the student is 6 of the
teacher's 30 layers, or with ``--code-student gpt2`` the random 6-layer GPT-2): plain KD and no KD on whole
blocks, then sequence-level KD (the student learns the teacher's greedy 32-token continuation of each block's
first 32 tokens) and on-policy KD (GKD: half of the batches continued by the student for 32 tokens and
scored by the teacher).

Accuracy / perplexity are on the held-out test split; one seed, so differences of a point or two on sentiment
are within seed noise. Prints a table and writes results/modes_recipes.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402

from hf_distill.cli import train  # noqa: E402

CONFIGS = ROOT / "recipes" / "configs"
QUICK = {
    "sentiment": ["--max_train_samples", "128", "--max_test_samples", "64", "--max_eval_samples", "16"],
    "codegen": ["--max_train_samples", "8", "--max_test_samples", "8", "--max_files", "40", "--max_length", "64",
                "--student_num_layers", "2"],
}  # fmt: skip
SENTIMENT_MODES = {
    "kd + attention maps": ["--attention_weight", "1.0", "--hidden_layer_map", "1:1,2:3,3:6"],
    "multi_teacher": ["--distillation_mode", "multi_teacher", "--extra_teachers", "minilm-l6"],
    # About 60 steps: an EMA with decay 0.999 would stay the initial student; 0.9 averages the last ~10 steps.
    "self_distillation": ["--distillation_mode", "self_distillation", "--ema_decay", "0.9", "--alpha", "0.5"],
    "mutual": ["--distillation_mode", "mutual", "--alpha", "0.5"],
}
CODE_MODES = {
    "sequence_kd": ["--distillation_mode", "sequence_kd", "--prompt_tokens", "32", "--teacher_max_new_tokens", "32"],
    "on_policy": ["--distillation_mode", "on_policy", "--prompt_tokens", "32", "--alpha", "1.0",
                  "--lmbda", "0.5", "--max_new_tokens", "32"],
}  # fmt: skip


def run(task: str, out: Path, extra: list[str], quick: bool) -> tuple[dict, float]:
    """One recipe run, or the report of the same run finished earlier (rerunning the script resumes)."""
    done, timing = out / "report.json", out / "benchmark_seconds.json"
    if done.is_file():
        seconds = json.loads(timing.read_text())["seconds"] if timing.is_file() else float("nan")
        return json.loads(done.read_text()), seconds
    config = CONFIGS / f"{task}.yaml"
    flags = ["--config", str(config), "--output_dir", str(out), "--latency_rounds", "1", *extra]
    flags += ["--disable_tqdm", "true", "--report_to", "none"]  # timed runs: no bar, no event files
    start = time.perf_counter()
    report = train(task, [*flags, *(QUICK[task] if quick else [])])
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds}) + "\n")
    return report, seconds


def rows_of(report: dict, mode: str, seconds: float) -> list[dict]:
    rows = []
    for student in report["students"]:
        rows.append(
            {
                "mode": "no KD" if student["kind"] == "no_kd_baseline" else mode,
                "student": student["name"],
                "metric": student["metric"],
                "teacher_metric": report["teacher"]["metric"],
                "run_seconds": round(seconds, 1),
            }
        )
    return rows


def compare(task: str, modes: dict[str, list[str]], out: Path, quick: bool, code_student: str) -> dict:
    student_flags = ["--student_init", code_student] if task == "codegen" else []
    report, seconds = run(task, out / "kd", student_flags, quick)
    rows = rows_of(report, "kd", seconds)
    # The teacher the kd run used: its fine-tuned folder, else the checkpoint it named.
    first = report["teacher"]
    teacher = first.get("fine_tuned_dir") or first.get("offline_alias") or first["name_or_path"]
    shared = [*student_flags, "--teacher_model_name_or_path", teacher, "--fine_tune_teacher", "never",
              "--run_baseline", "false"]  # fmt: skip
    for mode, flags in modes.items():
        report, seconds = run(
            task, out / mode.replace(" ", "_").replace("+", "plus"), [*shared, *flags], quick
        )
        rows += rows_of(report, mode, seconds)
        if "extra_teachers" in report["distillation"]:
            rows[-1]["extra_teachers"] = report["distillation"]["extra_teachers"]
    return {
        "metric_name": report["metric_name"],
        "higher_is_better": report["higher_is_better"],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("sentiment", "codegen", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="tiny subsets, to check the script runs")
    parser.add_argument("--out", default="runs/modes")
    parser.add_argument("--code-student", choices=("teacher_layers", "gpt2"), default="teacher_layers")
    options = parser.parse_args()
    tasks = ["sentiment", "codegen"] if options.task == "all" else [options.task]
    results = {}
    for task in tasks:
        modes = SENTIMENT_MODES if task == "sentiment" else CODE_MODES
        gpt2 = task == "codegen" and options.code_student == "gpt2"
        folder = f"{task}_gpt2" if gpt2 else task
        results[task] = compare(task, modes, Path(options.out) / folder, options.quick, options.code_student)
    for task, result in results.items():
        print(
            f"\n{task}: test {result['metric_name']} ({'higher' if result['higher_is_better'] else 'lower'} is better)"
        )
        print(f"{'mode':<24} {'student':<40} {'metric':>8} {'teacher':>8} {'run s':>7}")
        for row in result["rows"]:
            print(f"{row['mode']:<24} {row['student']:<40} {row['metric']:>8.4f} {row['teacher_metric']:>8.4f} "
                  f"{row['run_seconds']:>7.0f}")  # fmt: skip
    name = (
        "modes_recipes"
        + ("_quick" if options.quick else "")
        + ("" if options.task == "all" else f"_{options.task}")
        + ("_gpt2" if options.task == "codegen" and options.code_student == "gpt2" else "")
    )
    path = RESULTS / f"{name}.json"
    path.write_text(
        json.dumps({"benchmark": name, "results": results, "machine": machine()}, indent=2) + "\n"
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
