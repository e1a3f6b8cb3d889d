"""Sentiment defaults settled on the validation split, then measured once on the test split.

    # the sweep (validation split only): every KD point and every baseline learning rate, 2 seeds
    python benchmarks/sweep_sentiment.py sweep --config recipes/configs/sentiment_transfer.yaml --seeds 1,2
    # the chosen default on the test split, 3 seeds, the teacher fine-tuned once
    python benchmarks/sweep_sentiment.py test --config recipes/configs/sentiment_transfer.yaml --seeds 1,2,3
    python benchmarks/sweep_sentiment.py test --config recipes/configs/sentiment.yaml --seeds 1,2,3

The recipe's own pieces do the work (``prepare_sentiment``, ``ready_teacher``, ``build_student``,
``train_student``): the teacher is fine-tuned once on the labeled rows (saved under ``--out``/teacher and
reused by later runs), each seed trains the distilled student (labeled + transfer rows) and the no-KD baseline
(labeled rows only, as many optimizer steps: ``baseline_steps: match``) from the same initial student.

``sweep`` scores every point of ``KD_GRID`` (temperature, alpha, learning rate, epochs, and the weights of
hidden-state and attention matching, off by default) and the baseline at every
learning rate of ``BASELINE_LRS`` with the same epochs (so the same steps as the KD run of those epochs) on the
validation split (``--max_eval_samples`` rows), and names the best of each by mean accuracy. The test split is
never read. ``test`` takes the config's values (or ``--set temperature=2 ...``) and the baseline's learning rate
(``--baseline_lr``), and reports teacher accuracy, each model's mean accuracy, retention (distilled / teacher)
and the paired difference distilled - no-KD with a 95% interval: per test example the difference of the two
models' correctness averaged over seeds, resampled over examples (``scipy.stats.bootstrap``, percentile).

Every run records its wall time, this process's CPU share and the load average: numbers taken on a shared
machine are noise for timing; accuracies are not affected. ``--quick`` runs tiny sizes (one KD point, one
baseline learning rate) to check the script; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402
from transformers import Trainer, set_seed  # noqa: E402

from hf_distill.recipes.arguments import parse_recipe_config  # noqa: E402
from hf_distill.recipes.students import build_student  # noqa: E402
from hf_distill.recipes.tasks import prepare_sentiment  # noqa: E402
from hf_distill.recipes.teacher import ready_teacher, teacher_tokenizer  # noqa: E402
from hf_distill.recipes.training import derived_args, optimizer_steps, train_student  # noqa: E402

KD_GRID = {
    "temperature": [2.0, 4.0],
    "alpha": [0.5, 0.9],
    "learning_rate": [1e-4, 2e-4],
    "num_train_epochs": [1],
    # Intermediate-layer terms (TinyBERT-style) for the layer-cut student: off unless the grid names them.
    "hidden_state_weight": [0.0],
    "attention_weight": [0.0],
}
BASELINE_LRS = [5e-5, 1e-4, 2e-4]
QUICK = ["--max_train_samples", "48", "--transfer_samples", "48", "--max_eval_samples", "32",
         "--max_test_samples", "32", "--teacher_num_train_epochs", "1"]  # fmt: skip


def setup(config: str, extra: list[str], out: Path):
    """The recipe's arguments, the task's data and the teacher (fine-tuned once, then read from ``out``)."""
    argv = ["--config", config, "--output_dir", str(out), "--report_to", "none", *extra]
    recipe = parse_recipe_config(argv, task="sequence_classification")
    teacher_args, student_args, training_args = recipe.teacher, recipe.student, recipe.training
    task = prepare_sentiment(recipe.data, teacher_tokenizer(teacher_args))
    saved = out / "teacher"
    if (saved / "config.json").is_file():
        teacher_args.teacher_model_name_or_path = str(saved)
    set_seed(training_args.seed)
    teacher, _, _ = ready_teacher(teacher_args, task, training_args, saved)
    return task, teacher, student_args, training_args


def correct(model, dataset, task, args) -> np.ndarray:
    """Per example: whether the model's prediction is its label (``Trainer.predict``)."""
    output = Trainer(model=model, args=args, data_collator=task.collator).predict(dataset)
    return np.asarray(output.predictions.argmax(-1) == output.label_ids)


def train_scored(
    task, teacher, student_args, base_args, out: Path, seed: int, kd: bool, changes: dict, split
):
    """One student (distilled or baseline) of ``seed`` with ``changes`` to the training arguments, scored on
    ``split``; returns the correctness vector and the run's figures (steps, wall time, CPU share, load)."""
    args = derived_args(base_args, out, seed=seed, **changes)
    set_seed(seed)
    student = build_student("teacher_layers", teacher, student_args, task)
    start, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    history, _ = train_student(
        student, teacher, task, args, out, kd=kd, baseline_steps=student_args.baseline_steps
    )
    wall = time.perf_counter() - start
    steps = max((h.get("step", 0) for h in history), default=0)
    hits = correct(student.eval(), split, task, args)
    figures = {
        "steps": steps,
        "wall_s": round(wall, 1),
        "cpu_share": round((time.process_time() - cpu) / wall, 2),
    }
    figures["load_before"], figures["load_after"] = round(load, 2), round(os.getloadavg()[0], 2)
    return hits, figures


def paired_interval(kd: np.ndarray, baseline: np.ndarray) -> dict:
    """Mean difference distilled - no-KD in accuracy points and its 95% interval; ``kd``, ``baseline``:
    correctness ``(seeds, examples)`` of models paired by seed, resampled over examples."""
    per_example = (kd.astype(float) - baseline.astype(float)).mean(axis=0)
    result = stats.bootstrap(
        (per_example,), np.mean, confidence_level=0.95, n_resamples=10000, method="percentile", random_state=0
    )
    low, high = result.confidence_interval
    return {"mean": 100 * per_example.mean(), "low": 100 * low, "high": 100 * high}


def grid_points(grid: dict[str, list[float]]) -> list[dict]:
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))]


def parse_grid(text: str | None) -> dict[str, list[float]]:
    """``KD_GRID`` with the axes ``--grid "temperature=2,4;alpha=0.9,1.0"`` names replaced."""
    grid = dict(KD_GRID)
    for part in filter(None, (text or "").split(";")):
        name, _, values = part.partition("=")
        if name.strip() not in grid or not values:
            raise SystemExit(f"--grid: {part!r} is not AXIS=v1,v2 with AXIS one of {sorted(grid)}")
        grid[name.strip()] = [
            float(v) if name.strip() != "num_train_epochs" else int(v) for v in values.split(",")
        ]
    return grid


def sweep(ns: argparse.Namespace, extra: list[str]) -> dict:
    """Every KD point and baseline learning rate on the validation split; the best of each by mean accuracy."""
    out = Path(ns.out)
    task, teacher, student_args, training_args = setup(ns.config, extra, out)
    seeds, rows = [int(s) for s in ns.seeds.split(",")], []
    grid = parse_grid(ns.grid)
    epochs = sorted(set(grid["num_train_epochs"]))
    kd_points = grid_points(grid)[: 1 if ns.quick else None]
    lrs = [float(v) for v in ns.baseline_lrs.split(",")] if ns.baseline_lrs else BASELINE_LRS
    baseline_lrs = lrs[: 1 if ns.quick else None]
    runs = [(True, point) for point in kd_points]
    runs += [(False, {"learning_rate": lr, "num_train_epochs": e}) for lr in baseline_lrs for e in epochs]
    for kd, point in runs:
        accuracies, figures = [], []
        for seed in seeds:
            name = (
                ("kd" if kd else "base") + "_" + "_".join(f"{k}{v}" for k, v in point.items()) + f"_s{seed}"
            )
            hits, fig = train_scored(
                task, teacher, student_args, training_args, out / name, seed, kd, point, task.validation
            )
            accuracies.append(float(hits.mean()))
            figures.append(fig)
        row = {
            "kd": kd,
            **point,
            "val_accuracy": accuracies,
            "mean": float(np.mean(accuracies)),
            "runs": figures,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    best = {
        "kd": max((r for r in rows if r["kd"]), key=lambda r: r["mean"]),
        "baseline": max((r for r in rows if not r["kd"]), key=lambda r: r["mean"]),
    }
    return {
        "split": "validation",
        "validation_rows": len(task.validation),
        "seeds": seeds,
        "rows": rows,
        "best": best,
    }


def test(ns: argparse.Namespace, extra: list[str]) -> dict:
    """The config's default (and the baseline at ``--baseline_lr``) on the test split over seeds."""
    out = Path(ns.out)
    task, teacher, student_args, training_args = setup(ns.config, extra, out)
    seeds = [int(s) for s in ns.seeds.split(",")]
    teacher_hits = correct(teacher, task.test, task, derived_args(training_args, out / "eval"))
    baseline_changes = {} if ns.baseline_lr is None else {"learning_rate": ns.baseline_lr}
    kd_hits, base_hits, runs = [], [], []
    for seed in seeds:
        hits, kd_fig = train_scored(
            task, teacher, student_args, training_args, out / f"kd_s{seed}", seed, True, {}, task.test
        )
        kd_hits.append(hits)
        hits, base_fig = train_scored(
            task,
            teacher,
            student_args,
            training_args,
            out / f"base_s{seed}",
            seed,
            False,
            baseline_changes,
            task.test,
        )
        base_hits.append(hits)
        runs.append({"seed": seed, "kd": kd_fig, "baseline": base_fig,
                     "kd_accuracy": float(kd_hits[-1].mean()), "baseline_accuracy": float(base_hits[-1].mean())})  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    kd, base = np.stack(kd_hits), np.stack(base_hits)
    teacher_accuracy = float(teacher_hits.mean())
    return {
        "split": "test",
        "test_rows": len(task.test),
        "labeled_rows": len(task.train),
        "transfer_rows": 0 if task.transfer is None else len(task.transfer),
        "distilled_steps": optimizer_steps(
            len(task.train) + (0 if task.transfer is None else len(task.transfer)), training_args
        ),
        "seeds": seeds,
        "teacher_accuracy": teacher_accuracy,
        "kd_accuracy": float(kd.mean()),
        "baseline_accuracy": float(base.mean()),
        "retention": float(kd.mean()) / teacher_accuracy,
        "kd_minus_baseline_points": paired_interval(kd, base),
        "settings": {
            k: getattr(training_args, k)
            for k in ("temperature", "alpha", "learning_rate", "num_train_epochs")
        },
        "baseline_learning_rate": ns.baseline_lr or training_args.learning_rate,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["sweep", "test"])
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "sentiment_transfer.yaml"))
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--baseline_lr", type=float, default=None, help="test: the baseline's learning rate")
    parser.add_argument(
        "--grid", default=None, help='sweep: replace axes of KD_GRID, "temperature=2,4;alpha=0.9,1"'
    )
    parser.add_argument(
        "--baseline_lrs", default=None, help="sweep: the baseline's learning rates, 1e-4,2e-4"
    )
    parser.add_argument("--out", default="runs/sweep_sentiment")
    parser.add_argument("--name", default=None, help="results/<name>.json (default: sweep_sentiment[_test])")
    parser.add_argument("--quick", action="store_true")
    ns, extra = parser.parse_known_args()
    extra = [*QUICK, *extra] if ns.quick else extra
    start, load = time.perf_counter(), os.getloadavg()
    result = sweep(ns, extra) if ns.what == "sweep" else test(ns, extra)
    result.update(
        config=os.path.relpath(ns.config, ROOT), overrides=extra, command=" ".join(sys.argv), wall_s=round(time.perf_counter() - start, 1),
        load_start=load, load_end=os.getloadavg(), machine=machine(), quick=ns.quick,
    )  # fmt: skip
    name = ns.name or ("sweep_sentiment" if ns.what == "sweep" else "sweep_sentiment_test")
    path = RESULTS / f"{name}{'_quick' if ns.quick else ''}.json"
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("rows", "runs")}, indent=2, default=float))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
