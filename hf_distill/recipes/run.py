"""The whole single-task recipe, :func:`run_recipe`.

A recipe (``recipes/<task>.py``) parses its arguments into one
:class:`~hf_distill.recipes.arguments.RecipeConfig` (:func:`~hf_distill.recipes.arguments.parse_recipe_config`),
prepares its task's data (:mod:`hf_distill.recipes.tasks`) and hands both to :func:`run_recipe`, which

1. loads the teacher and fine-tunes it on the task unless it already has a head for it
   (:mod:`hf_distill.recipes.teacher`);
2. builds each student (:func:`~hf_distill.recipes.students.build_student`): from teacher layers, from a
   smaller config, a GPT-2 over the teacher's vocabulary, or a given checkpoint;
3. distils it (:func:`~hf_distill.recipes.training.train_student` with ``kd=True``) in the chosen
   ``distillation_mode`` (:mod:`hf_distill.recipes.mode_select`: plain KD, several teachers,
   self-distillation, mutual learning, or for causal LMs on-policy and sequence-level KD);
4. trains a copy of the same initial student on the labels alone, the no-KD baseline (``kd=False``), and
   checks on the validation split that the teacher beats it (:mod:`hf_distill.recipes.teacher_check`);
5. evaluates teacher and students on the held-out test split, keeping per-example results
   (:func:`score_models`), and measures latency at batch 1 and 32 side by
   side, in interleaved rounds with their spread (:func:`~hf_distill.reports.timing.time_models`,
   :func:`~hf_distill.recipes.latency.latency_entries`); with ``--seeds 1,2,3`` steps 2-5 run once per
   seed against the same teacher, and the scorecard (:mod:`hf_distill.reports.scorecard`) gives each model's mean
   and 95% interval and the paired difference KD - no-KD with its interval and verdict;
6. writes ``report.json`` (:mod:`hf_distill.recipes.report_json`), prints the comparison table and, with
   ``report_to`` TensorBoard, logs it as the scorecard (:mod:`hf_distill.recipes.tensorboard_log`).

A recipe script ends with :func:`end_process_group`, so a multi-process run tears its process group down
itself rather than leaving it to the interpreter's exit.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from torch import nn
from transformers import PreTrainedModel, set_seed

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.arguments import RecipeConfig, ReportArguments, TeacherArguments
from hf_distill.recipes.console import stage
from hf_distill.recipes.deployment import DeploymentSource, deployment_report
from hf_distill.recipes.latency import LATENCY_BATCH_SIZES, latency_batch, latency_entries
from hf_distill.recipes.report_json import (
    build_report,
    build_scorecard,
    extra_teacher_entries,
    format_table,
    model_entry,
    teacher_entry,
    with_latency,
    write_cards,
    write_report,
)
from hf_distill.recipes.served_teacher import (
    ServedRecipeTeacher,
    check_served_recipe,
    is_served_recipe,
    served_recipe_teacher,
    served_teacher_entry,
    with_served_scoring,
)
from hf_distill.recipes.students import build_student, student_name
from hf_distill.recipes.tasks import TaskData
from hf_distill.recipes.teacher import check_teacher_sources, load_extra_teachers, ready_teacher
from hf_distill.recipes.teacher_check import check_teacher_worth, warn_teacher_check
from hf_distill.recipes.tensorboard_log import log_scorecard
from hf_distill.recipes.training import (
    derived_args,
    student_learning_rate,
    train_student,
    with_teacher_cache,
    with_teacher_outputs,
)
from hf_distill.reports.format import report_notes
from hf_distill.reports.report import REPORT_FILENAME, validate_report
from hf_distill.reports.timing import Timings, time_models
from hf_distill.training.metrics import ExampleScores


def _time_latency(models: dict[str, Any], task: TaskData, report_args: ReportArguments) -> tuple[Any, dict]:
    """Every model timed side by side at each batch size: the timings and each model's latency entries."""
    batches = {size: latency_batch(task, size) for size in LATENCY_BATCH_SIZES}
    rounds = report_args.latency_rounds
    with stage(f"time latency ({rounds} round{'s' if rounds > 1 else ''})"):
        timings = time_models(models, batches, rounds=rounds, threads=report_args.latency_threads)
    return timings, latency_entries(timings, reference="teacher")


def evaluate_models(
    models: dict[str, nn.Module], task: TaskData, training_args: DistillationTrainingArguments
) -> dict[str, dict[str, float]]:
    """Every model's metrics on the held-out test split."""
    return {name: task.evaluate(model, task.test, training_args) for name, model in models.items()}


def score_models(
    models: dict[str, nn.Module], task: TaskData, training_args: DistillationTrainingArguments
) -> dict[str, ExampleScores]:
    """Every model's metrics on the held-out test split with its per-example statistics (what the multi-seed
    scorecard resamples)."""
    return {name: task.score_examples(model, task.test, training_args) for name, model in models.items()}


def mean_metrics(scores: list[ExampleScores]) -> dict[str, float]:
    """Each metric's mean over the seeds' scores (the metrics every seed has)."""
    names = [name for name in scores[0].metrics if all(name in s.metrics for s in scores)]
    return {name: float(np.mean([s.metrics[name] for s in scores])) for name in names}


def run_recipe(task: TaskData, config: RecipeConfig) -> dict[str, Any] | None:
    """Steps 1-6 of the module docstring.

    Args:
        task (TaskData): the task's prepared data.
        config (RecipeConfig): the run's argument groups (teacher, student, report, mode, training).

    Returns:
        dict | None: the report on the main process, None on the others.
    """
    teacher_args, student_args, training_args = config.teacher, config.student, config.training
    report_args, mode_args = config.report, config.mode
    mode_args.check_task(task.task, len(task.train[0]["input_ids"]) if task.task == "causal_lm" else None)
    check_teacher_sources(teacher_args, mode_args)
    check_served_recipe(config, task.task)
    task = with_teacher_cache(task, teacher_args.teacher_cache, training_args, mode_args.distillation_mode)
    state = PartialState()
    run_dir = Path(training_args.output_dir)
    set_seed(training_args.seed)
    teacher, teacher_folder, teacher_history, task = _ready_teacher(
        teacher_args, task, training_args, run_dir
    )
    teacher = _with_eager_attention(teacher, training_args)
    extra = load_extra_teachers(config, task, run_dir)
    seeds = student_args.seeds or [training_args.seed]
    students, models, histories, scores = _train_seeds(
        task, teacher, [model for _, model, _ in extra], config, run_dir, seeds
    )
    with stage("score the teachers on test and check the teacher on validation"):
        teacher_scores = score_models({"teacher": teacher}, task, training_args)["teacher"]
        extra_metrics = evaluate_models({name: model for name, model, _ in extra}, task, training_args)
        baselines = {s["name"]: models[s["name"]] for s in students if s["kind"] == "no_kd_baseline"}
        teacher_check = check_teacher_worth(teacher, baselines, task, training_args)
    if not state.is_main_process:
        state.wait_for_everyone()
        return None
    served = isinstance(teacher, ServedRecipeTeacher)
    timings, latency = _time_latency(models if served else {"teacher": teacher, **models}, task, report_args)
    if served:
        teacher_report = served_teacher_entry(teacher, teacher_args, teacher_scores.metrics, task)
    else:
        teacher_report = teacher_entry(
            teacher,
            teacher_args,
            teacher_folder,
            teacher_history,
            teacher_scores.metrics,
            latency["teacher"],
            task,
        )
    for entry in students:
        name = entry["name"]
        entry.update(model_entry(models[name], Path(entry["output_dir"]), mean_metrics(scores[name]), task))
        with_latency(entry, latency[name])
    scorecard = build_scorecard(task, seeds, teacher_scores, students, scores)
    extra_entries = extra_teacher_entries(extra, extra_metrics, task)
    report = build_report(
        task, teacher_report, students, training_args, histories, mode_args.distillation_mode, extra_entries
    )
    _add_checks(report, timings, teacher_check, task)
    report["scorecard"] = scorecard
    if report_args.export:
        report["deployment"] = _deployment(
            task, teacher, teacher_scores, students, models, scores, training_args, report_args
        )
    report = validate_report(report)
    _write_outputs(report, run_dir, report_args)
    log_scorecard(report, run_dir, training_args.report_to)
    state.wait_for_everyone()
    return report


def _ready_teacher(
    teacher_args: TeacherArguments,
    task: TaskData,
    training_args: DistillationTrainingArguments,
    run_dir: Path,
) -> tuple[Any, Path | None, list[dict], TaskData]:
    """Step 1: the teacher, the folder it was fine-tuned into, the fine-tune's log history, and the task; a
    served teacher (:mod:`hf_distill.recipes.served_teacher`) is checked against its server and the task then
    scores it through the server."""
    with stage("load the teacher") as teacher_stage:
        if is_served_recipe(teacher_args):
            teacher = served_recipe_teacher(teacher_args, task, training_args)
            return teacher, None, [], with_served_scoring(task)
        teacher, folder, history = ready_teacher(teacher_args, task, training_args, run_dir / "teacher")
        if history:
            teacher_stage.name = "fine-tune the teacher"
    return teacher, folder, history, task


def _deployment(
    task: TaskData,
    teacher: nn.Module,
    teacher_scores: ExampleScores,
    students: list[dict[str, Any]],
    models: dict[str, nn.Module],
    scores: dict[str, list[ExampleScores]],
    training_args: DistillationTrainingArguments,
    report_args: ReportArguments,
) -> dict[str, Any]:
    """``--export onnx``: the teacher and every distilled student in ONNX Runtime, beside PyTorch; with several
    seeds each seed's student, the later ones read back from the folders their training saved them in."""
    sources = {"teacher": DeploymentSource(teacher, [teacher_scores])}
    for student in (s for s in students if s["kind"] == "distilled"):
        name = student["name"]
        sources[name] = DeploymentSource(
            models[name],
            scores[name],
            seeds=[record["seed"] for record in student["seeds"]],
            later_folders=[Path(record["output_dir"]) for record in student["seeds"][1:]],
        )
    return deployment_report(
        task,
        sources,
        training_args,
        Path(training_args.output_dir),
        quantize=report_args.quantize,
        rounds=report_args.latency_rounds,
        threads=report_args.latency_threads,
    )


def _add_checks(
    report: dict[str, Any], timings: Timings, teacher_check: dict[str, Any], task: TaskData
) -> None:
    """How latency was measured, the teacher check (warned about when the teacher is not better) and, for
    NER, what evaluation covered (long sentences scored through windows, anything left unscored)."""
    report["latency_measurement"] = timings.measurement()
    report["teacher_check"] = teacher_check
    warn_teacher_check(teacher_check)
    if task.eval_coverage:
        report["data"]["eval_coverage"] = task.eval_coverage


def _train_seeds(
    task: TaskData,
    teacher: PreTrainedModel,
    extra_teachers: list[PreTrainedModel],
    config: RecipeConfig,
    run_dir: Path,
    seeds: list[int],
) -> tuple[list[dict[str, Any]], dict[str, nn.Module], dict[str, list[dict]], dict[str, list[ExampleScores]]]:
    """Steps 2-5 once per seed: each seed builds its students afresh (its own initial weights, shared by the
    distilled student and its baseline), trains them with that seed's data order and scores them on the test
    split. Several seeds write ``students/<name>/seed-<s>/``, one seed ``students/<name>/``.

    Returns the first seed's report entries (each with ``seeds``: every seed's folder and metrics), models (for
    latency and sizes) and log histories, and every seed's scores by student name."""
    scores: dict[str, list[ExampleScores]] = {}
    records: dict[str, list[dict[str, Any]]] = {}
    first = None
    training_args = config.training
    if config.student.teacher_outputs_once:
        with stage("teacher outputs"):
            task = with_teacher_outputs(task, teacher, training_args, config.mode.distillation_mode, seeds)
    for seed in seeds:
        seed_args = derived_args(training_args, Path(training_args.output_dir), seed=seed)
        seed_folder = f"seed-{seed}" if len(seeds) > 1 else ""
        with stage(f"seed {seed}: train and score the students"):
            entries, models, histories = _train_students(
                task,
                teacher,
                extra_teachers,
                dataclasses.replace(config, training=seed_args),
                run_dir,
                seed_folder,
            )
            results = {
                e["name"]: task.score_examples(models[e["name"]], task.test, seed_args) for e in entries
            }
        first = first or (entries, models, histories)
        for entry in entries:
            result = results[entry["name"]]
            scores.setdefault(entry["name"], []).append(result)
            records.setdefault(entry["name"], []).append(
                {
                    "seed": seed,
                    "output_dir": entry["output_dir"],
                    "metric": float(result.metrics[task.metric_name]),
                    "metrics": result.metrics,
                }
            )
    for entry in first[0]:
        entry["seeds"] = records[entry["name"]]
    return (*first, scores)


def _train_students(
    task: TaskData,
    teacher: PreTrainedModel,
    extra_teachers: list[PreTrainedModel],
    config: RecipeConfig,
    run_dir: Path,
    seed_folder: str = "",
) -> tuple[list[dict[str, Any]], dict[str, nn.Module], dict[str, list[dict]]]:
    """Steps 2-4: every student of ``student_init``, distilled and (unless ``run_baseline`` is off) trained on
    the labels alone from the same initial weights, with ``config.training.seed``. Returns the students' report
    entries (name, kind, init, folder), the trained models and their log histories, all keyed by student
    name. Each is saved in ``students/<name>/<seed_folder>``."""
    student_args, training_args, mode_args = config.student, config.training, config.mode
    mode = mode_args.distillation_mode
    students: list[dict[str, Any]] = []
    models: dict[str, nn.Module] = {}
    histories: dict[str, list[dict]] = {}
    for init in student_args.student_init:
        set_seed(training_args.seed)
        initial = _with_eager_attention(build_student(init, teacher, student_args, task), training_args)
        peer = None
        if mode == "mutual":
            # The second student is built the same way with the next seed: its random parts (a new head, a
            # config student's weights) differ; students copied from teacher layers start equal and part
            # through dropout.
            set_seed(training_args.seed + 1)
            peer = build_student(init, teacher, student_args, task)
        runs = [True, False] if student_args.run_baseline else [True]
        for kd in runs:
            name = student_name(init, student_args, kd, mode)
            student = copy.deepcopy(initial) if kd and student_args.run_baseline else initial
            histories[name], folder = train_student(
                student,
                teacher,
                task,
                training_args,
                run_dir / "students" / name / seed_folder,
                kd=kd,
                mode_args=mode_args,
                extra_teachers=extra_teachers,
                peer=peer,
                baseline_steps=student_args.baseline_steps,
                baseline_learning_rate=student_args.baseline_learning_rate,
            )
            models[name] = student.eval()
            students.append(
                {
                    "name": name,
                    "kind": "distilled" if kd else "no_kd_baseline",
                    "init": init,
                    "output_dir": str(folder),
                    "learning_rate": student_learning_rate(
                        training_args, kd, student_args.baseline_learning_rate
                    ),
                }
            )
    return students, models, histories


def _write_outputs(report: dict[str, Any], run_dir: Path, report_args: ReportArguments) -> None:
    """Step 6: ``report.json``, the students' model cards when asked for, and the table on stdout."""
    write_report(report, run_dir)
    if report_args.write_model_cards:
        write_cards(report)
    notes = "".join(f"\n{note}" for note in report_notes(report))
    print(f"\n{format_table(report)}\n{notes}\n\nreport: {run_dir / REPORT_FILENAME}", flush=True)


def _with_eager_attention(model: PreTrainedModel, args: DistillationTrainingArguments) -> PreTrainedModel:
    """Attention matching reads the attention probabilities, which only the eager implementation returns; the
    recipes load models with the default (SDPA), so they switch when the matching is on."""
    if args.matches_attention:
        model.set_attn_implementation("eager")
    return model


def end_process_group() -> None:
    """Waits for every process, then destroys the process group (nothing to do in a single process).

    Left to the interpreter's exit, a gloo group is torn down by its destructor while the garbage collector
    holds the GIL; that destructor joins gloo's worker thread, which may itself be waiting for the GIL to free
    a finished collective's tensors, and the rank sleeps forever in ``~ProcessGroupGloo`` (or aborts with
    "terminate called without an active exception"). ``destroy_process_group`` shuts the group down while
    the interpreter is whole, after a barrier so no rank leaves while another still talks to it.
    """
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return
    state = PartialState()
    state.wait_for_everyone()
    state.destroy_process_group()
