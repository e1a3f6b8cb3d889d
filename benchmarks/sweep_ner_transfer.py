"""Does a transfer set of other-domain text help NER distillation? Settled on validation, then measured on test.

    # validation: the NER default (labels only) and the default + N review snippets, 2 seeds
    python benchmarks/sweep_ner_transfer.py sweep --sizes 0,2000,8000 --seeds 1,2 --source reviews
    # test: the chosen size against the labels-only default, 3 seeds, paired 95% intervals
    python benchmarks/sweep_ner_transfer.py test --sizes 0,2000 --seeds 1,2,3 --source reviews

The recipe's own pieces do the work (``prepare_ner`` with ``--transfer_source``, ``ready_teacher``,
``build_student``, ``train_student``) on ``recipes/configs/ner.yaml``: the teacher is fine-tuned once on the
labeled tweets (saved under ``--out``/teacher and reused by later runs); for each size N the teacher's logits
over the distilled student's rows (labeled + N transfer sentences) are computed once for every seed; each seed
trains the distilled student of every size and the no-KD baselines from the same initial student. Baselines:
``base_0`` is the labels-only default's (2 epochs over the labeled tweets); ``base_N`` (with ``--match``) is the
recipe's baseline of the transfer setting (``baseline_steps: match``: as many optimizer steps as the distilled
student with N transfer rows, repeating the labeled tweets).

Every model is scored with the task's ``score_examples`` (seqeval entity F1, per-sentence counts), so the
comparisons are the scorecard's paired percentile bootstrap over sentences, every seed kept
(:func:`hf_distill.reports.scorecard.paired_difference`): ``kd_N - base_N`` (what the recipe reports),
``kd_N - kd_0`` (transfer vs no transfer) and ``kd_0 - base_0`` (the labels-only default). ``sweep`` reads the
validation split only; ``test`` the test split. The results JSON is rewritten after every run (``complete``
says whether all are in), and each run leaves ``scores.json`` in its folder under ``--out``: the same command
started again skips the runs already done. Runs record wall time, CPU share and load: on a shared machine
the timings are noise, the F1 values are not. ``--quick`` runs tiny sizes to check the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402
from transformers import set_seed  # noqa: E402

from hf_distill.recipes.arguments import parse_recipe_config  # noqa: E402
from hf_distill.recipes.students import build_student  # noqa: E402
from hf_distill.recipes.tasks import prepare_ner  # noqa: E402
from hf_distill.recipes.teacher import ready_teacher, teacher_tokenizer  # noqa: E402
from hf_distill.recipes.training import (  # noqa: E402
    derived_args,
    optimizer_steps,
    train_student,
    with_teacher_outputs,
)
from hf_distill.reports.scorecard import paired_difference, stack_statistics  # noqa: E402

QUICK = ["--max_train_samples", "48", "--max_eval_samples", "24", "--max_test_samples", "24",
         "--teacher_num_train_epochs", "1", "--num_train_epochs", "1"]  # fmt: skip


def setup(config: str, extra: list[str], out: Path):
    """The recipe's arguments, the labels-only task and the teacher (fine-tuned once, then read from ``out``)."""
    argv = [
        "--config",
        config,
        "--output_dir",
        str(out),
        "--report_to",
        "none",
        "--disable_tqdm",
        "true",
        *extra,
    ]
    recipe = parse_recipe_config(argv, task="token_classification")
    teacher_args, student_args, data_args, training_args = (
        recipe.teacher,
        recipe.student,
        recipe.data,
        recipe.training,
    )
    tokenizer = teacher_tokenizer(teacher_args)
    task = prepare_ner(data_args, tokenizer)
    saved = out / "teacher"
    if (saved / "config.json").is_file():
        teacher_args.teacher_model_name_or_path = str(saved)
    set_seed(training_args.seed)
    teacher, _, _ = ready_teacher(teacher_args, task, training_args, saved)
    return task, teacher, student_args, data_args, training_args, tokenizer


def with_size(task, data_args, tokenizer, teacher, training_args, seeds, size: int, source: str):
    """``task`` with ``size`` transfer sentences of ``source`` (none for 0) and the teacher's logits over the
    distilled student's rows computed once."""
    transfer = None
    if size:
        changed = dataclasses.replace(data_args, transfer_source=source, transfer_samples=size)
        transfer = prepare_ner(changed, tokenizer).transfer
    sized = dataclasses.replace(task, transfer=transfer, kd_train=None)
    return with_teacher_outputs(sized, teacher.eval(), training_args, "kd", seeds)


def train_scored(
    task, teacher, student_args, base_args, out: Path, seed: int, kd: bool, baseline_steps: str, split
):
    """One student of ``seed`` (distilled or baseline), scored on ``split``: its per-sentence statistics, F1
    and the run's figures (steps, wall time, CPU share, load)."""
    args = derived_args(base_args, out, seed=seed)
    set_seed(seed)
    student = build_student("teacher_layers", teacher, student_args, task)
    start, cpu, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    history, _ = train_student(student, teacher, task, args, out, kd=kd, baseline_steps=baseline_steps)
    wall = time.perf_counter() - start
    scores = task.score_examples(student.eval(), split, args)
    figures = {
        "steps": max((h.get("step", 0) for h in history), default=0),
        "wall_s": round(wall, 1),
        "cpu_share": round((time.process_time() - cpu) / wall, 2),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "f1": float(scores.metrics["f1"]),
        "transfer_rows": 0 if task.transfer is None else len(task.transfer),
    }
    return scores.statistics, figures


def compare(stats: dict[str, list], a: str, b: str) -> dict | None:
    """``a - b`` in F1 points with its paired 95% interval, or None when either model was not run."""
    if a not in stats or b not in stats:
        return None
    result = paired_difference(stack_statistics(stats[a], "f1"), stack_statistics(stats[b], "f1"), "f1")
    return {
        "models": f"{a} - {b}",
        "points": 100 * result["difference"],
        "interval_points": [100 * v for v in result["interval"]],
        "per_seed_points": [100 * v for v in result["per_seed"]],
    }


def saved_run(folder: Path):
    """A finished run's statistics and figures (``scores.json``), or None: a stopped sweep resumes run by run."""
    path = folder / "scores.json"
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return {k: np.asarray(v) for k, v in saved["statistics"].items()}, saved["figures"]


def summary(ns, task, split, sizes, seeds, stats, runs, training_args) -> dict:
    """The results so far: F1 per model and seed, and the paired comparisons of the models run for every seed."""
    complete = {name: runs_of for name, runs_of in stats.items() if len(runs_of) == len(seeds)}
    f1 = {}
    for name in stats:
        values = [r["f1"] for r in runs if r["model"] == name]
        f1[name] = {"per_seed": values, "mean": float(np.mean(values))}
    transfer_rows = {int(r["model"].split("_")[1]): r.get("transfer_rows") for r in runs}
    transfer_rows.update(
        {0: 0} if 0 in transfer_rows else {}
    )  # labels only (runs saved before the key existed)
    comparisons = [compare(complete, "kd_0", "base_0")]
    for size in (s for s in sizes if s):
        comparisons += [
            compare(complete, f"kd_{size}", "kd_0"),
            compare(complete, f"kd_{size}", f"base_{size}"),
        ]
        comparisons.append(compare(complete, f"kd_{size}", "base_0"))
    return {
        "split": "validation" if ns.what == "sweep" else "test",
        "split_rows": len(split),
        "labeled_rows": len(task.train),
        "source": ns.source,
        "transfer_rows": transfer_rows,
        "distilled_steps": {
            size: optimizer_steps(len(task.train) + (transfer_rows.get(size) or size), training_args)
            for size in sizes
        },
        "seeds": seeds,
        "complete": len(runs) == sum(len(plan_of(size, ns)) for size in sizes) * len(seeds),
        "f1": f1,
        "comparisons": [c for c in comparisons if c is not None],
        "runs": runs,
    }


def plan_of(size: int, ns: argparse.Namespace) -> list[tuple[str, bool, str]]:
    """The models of one size: the distilled student, and its baseline (base_0: 2 epochs over the labeled
    tweets, the labels-only default's; base_N with --match: the recipe's matched steps)."""
    plan = [("kd", True, "match")]
    if size == 0 or ns.match:
        plan.append(("base", False, "match" if size else "epochs"))
    return plan


def measure(ns: argparse.Namespace, extra: list[str], write) -> dict:
    """Size by size (each size's teacher logits computed when first needed), seed by seed; ``write`` is called
    with the results so far after every run, so a stopped sweep leaves what it measured."""
    out = Path(ns.out)
    task, teacher, student_args, data_args, training_args, tokenizer = setup(ns.config, extra, out)
    split = task.validation if ns.what == "sweep" else task.test
    seeds = [int(s) for s in ns.seeds.split(",")]
    sizes = [int(s) for s in ns.sizes.split(",")]
    stats: dict[str, list] = {}
    runs: list[dict] = []
    result = {}
    for size in sizes:
        sized = None
        for seed in seeds:
            for kind, kd, baseline_steps in plan_of(size, ns):
                name = f"{kind}_{size}"
                folder = out / f"{name}_s{seed}"
                done = saved_run(folder)
                if done is None:
                    if sized is None:
                        sized = with_size(
                            task, data_args, tokenizer, teacher, training_args, seeds, size, ns.source
                        )
                    statistics, figures = train_scored(
                        sized, teacher, student_args, training_args, folder, seed, kd, baseline_steps, split
                    )
                    (folder / "scores.json").write_text(json.dumps({
                        "statistics": {k: np.asarray(v).tolist() for k, v in statistics.items()},
                        "figures": figures,
                    }))  # fmt: skip
                else:
                    statistics, figures = done
                stats.setdefault(name, []).append(statistics)
                runs.append({"model": name, "seed": seed, **figures})
                print(json.dumps(runs[-1]), flush=True)
                result = summary(ns, task, split, sizes, seeds, stats, runs, training_args)
                write(result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["sweep", "test"])
    parser.add_argument("--config", default=str(ROOT / "recipes" / "configs" / "ner.yaml"))
    parser.add_argument(
        "--sizes", default="0,2000,8000", help="transfer sentences per setting; 0: labels only"
    )
    parser.add_argument("--source", default="reviews", help="--transfer_source of the transfer sentences")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument(
        "--match", action="store_true", help="also train each size's matched-steps baseline (base_N)"
    )
    parser.add_argument("--out", default="runs/sweep_ner_transfer")
    parser.add_argument("--name", default=None, help="results/<name>.json (default: ner_transfer_<what>)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads; on a machine shared past its cores 1 is faster (2 threads wait on each other)",
    )
    parser.add_argument("--quick", action="store_true")
    ns, extra = parser.parse_known_args()
    extra = [*QUICK, *extra] if ns.quick else extra
    if ns.threads:
        torch.set_num_threads(ns.threads)
    start, load = time.perf_counter(), os.getloadavg()
    name = ns.name or f"ner_transfer_{ns.what}"
    path = RESULTS / f"{name}{'_quick' if ns.quick else ''}.json"

    def write(result: dict) -> None:
        result.update(
            config=os.path.relpath(ns.config, ROOT), overrides=extra, command=" ".join(sys.argv),
            wall_s=round(time.perf_counter() - start, 1), load_start=load, load_end=os.getloadavg(),
            machine=machine(), torch_threads=torch.get_num_threads(), quick=ns.quick,
        )  # fmt: skip
        path.write_text(json.dumps(result, indent=2, default=float) + "\n")

    result = measure(ns, extra, write)
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2, default=float))
    print(f"written: {path}")


if __name__ == "__main__":
    main()
