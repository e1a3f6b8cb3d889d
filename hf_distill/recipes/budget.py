"""``hf-distill budget TASK``: the smallest student that meets a latency (or size) budget, searched, then proven.

1. the teacher is made ready as in every recipe (fine-tuned on the task when it has no head for it);
2. its layers are scored by Block Influence (``--budget_importance skip_loss``: by the loss increase when each
   is skipped) on a few training batches, and candidates over depth x width are cut from it
   (:mod:`hf_distill.students.budget`);
3. every candidate is timed *before training* at ``--batch_size`` on ``--runtime`` (PyTorch, or ONNX Runtime
   on the int8 graph :func:`hf_distill.export.export_student` writes), side by side with the teacher
   (:func:`hf_distill.reports.timing.time_models`): ms per forward, or for a causal LM ms per generated token
   (greedy ``generate`` from a ``--latency_prompt_tokens`` prompt, ``--latency_new_tokens`` new tokens,
   :func:`hf_distill.reports.generation_timing.time_generation`); those over ``--max_latency_ms`` (or under
   ``--min_speedup`` times the teacher's speed) / ``--max_params`` are dropped untrained, and an impossible
   budget is refused with the fastest candidate's latency;
4. the rest get a short plain-KD run each (``--search_steps``), scored on validation every
   ``--search_eval_steps`` and stopped early by the Optuna pruner when hopeless;
5. the winner's untrained student is saved and trained fully by :func:`hf_distill.recipes.run.run_recipe`
   as a ``pretrained`` student: seeds, intervals, the no-KD baseline and its verdict, latency, the test split;
6. ``report.json`` gains ``budget`` (every candidate, the winner and why), and ``budget_frontier.png`` plots
   validation metric against latency with the budget's lines and the winner marked.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.model_kind import CAUSAL_LM
from hf_distill.recipes.arguments import RecipeConfig, ReportArguments, parse_recipe_config
from hf_distill.recipes.code_generation import context_length
from hf_distill.recipes.latency import latency_batch, measure_latency
from hf_distill.recipes.report_json import write_report
from hf_distill.recipes.run import run_recipe
from hf_distill.recipes.students import calibration_batches
from hf_distill.recipes.tasks import TaskData
from hf_distill.recipes.teacher import ready_teacher
from hf_distill.recipes.training import derived_args, distilled_rows
from hf_distill.reports.budget_figure import FRONTIER_FILENAME, plot_budget_frontier
from hf_distill.reports.generation_timing import (
    DEFAULT_NEW_TOKENS,
    DEFAULT_PROMPT_TOKENS,
    time_generation,
)
from hf_distill.students.budget import (
    DEFAULT_DEPTHS,
    DEFAULT_WIDTHS,
    TEACHER,
    Candidate,
    build_candidate,
    candidate_grid,
    check_latency_budget,
    require_optuna,
    search_budget,
)
from hf_distill.students.importance import check_importance_method, layer_importance
from hf_distill.trainer import DistillationTrainer

RUNTIMES = ("torch", "onnx-int8")
WINNER_FOLDER = "budget/winner"


@dataclass
class BudgetArguments:
    """The budget, the runtime it is measured on, and how much the search may train."""

    _argument_group_name = "budget search"

    max_latency_ms: float | None = field(
        default=None,
        metadata={"help": "Latency budget in ms at --batch_size on --runtime: per forward for classifiers, per "
                  "generated token for causal LMs (codegen: greedy generate with the KV cache, the whole call "
                  "over its new tokens)."},
    )  # fmt: skip
    min_speedup: float | None = field(
        default=None,
        metadata={"help": "Instead of --max_latency_ms: the student must be at least this many times as fast as "
                  "the teacher timed beside it (teacher's ms / the student's, per generated token for causal "
                  "LMs, so 1.5 = 1.5x the teacher's tokens/s), e.g. 1.5."},
    )  # fmt: skip
    latency_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": f"Causal LMs: the prompt's length in tokens that generation is timed from (default "
                  f"{DEFAULT_PROMPT_TOKENS}, or --max_length when shorter)."},
    )  # fmt: skip
    latency_new_tokens: int | None = field(
        default=None,
        metadata={"help": f"Causal LMs: tokens every model generates while timed (default {DEFAULT_NEW_TOKENS})."},
    )  # fmt: skip
    batch_size: int = field(default=1, metadata={"help": "Batch size the latency budget is for."})
    runtime: str = field(
        default="torch", metadata={"help": f"Where the student will run, and is timed: one of {RUNTIMES}."}
    )
    max_params: int | None = field(default=None, metadata={"help": "Parameter budget of the student."})
    min_retention: float | None = field(
        default=None,
        metadata={"help": "Share of the teacher's validation metric the student must keep, e.g. 0.98: the "
                  "fastest candidate that keeps it wins (without it: the best within budget)."},
    )  # fmt: skip
    budget_depths: list[float] = field(
        default_factory=lambda: list(DEFAULT_DEPTHS),
        metadata={"help": "Shares of the teacher's layers tried."},
    )
    budget_widths: list[float] = field(
        default_factory=lambda: list(DEFAULT_WIDTHS),
        metadata={"help": "Shares of the teacher's MLP channels (and Llama heads) tried; 1 keeps them all."},
    )
    search_steps: int = field(default=50, metadata={"help": "Optimizer steps of each candidate's short run."})
    search_eval_steps: int = field(
        default=10,
        metadata={"help": "Validation every this many steps of a short run (what the pruner sees)."},
    )
    calibration_batches: int = field(
        default=4, metadata={"help": "Training batches Block Influence and width importance are measured on."}
    )
    budget_importance: str = field(
        default="block_influence",
        metadata={"help": "How the candidates' layers are ranked: block_influence (1 - cosine of a layer's input "
                  "and output) or skip_loss (the task loss increase when it is skipped)."},
    )  # fmt: skip

    def __post_init__(self):
        if self.runtime not in RUNTIMES:
            raise ValueError(
                f"runtime={self.runtime!r} is not one of {RUNTIMES}: the runtime the student ships on."
            )
        if self.max_latency_ms is None and self.max_params is None and self.min_speedup is None:
            raise ValueError(
                "hf-distill budget needs a budget: --max_latency_ms (ms per forward at --batch_size, per "
                "generated token for causal LMs) or --min_speedup (a multiple of the teacher's speed), and/or "
                "--max_params."
            )
        check_latency_budget(self.max_latency_ms, self.min_speedup)
        check_importance_method(
            self.budget_importance, "budget_importance", "how the candidates' teacher layers are ranked"
        )
        for name in ("batch_size", "search_steps", "search_eval_steps", "calibration_batches",
                     "latency_prompt_tokens", "latency_new_tokens"):  # fmt: skip
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1.")


def parse_budget_config(argv: list[str], task: str, prog: str) -> RecipeConfig:
    """The recipe's flags plus :class:`BudgetArguments` (``config.extra(BudgetArguments)``)."""
    return parse_recipe_config(
        argv,
        task=task,
        prog=prog,
        description="Search the smallest student that meets a latency or size budget (candidates over depth x "
        "width cut from the teacher by importance, timed before training, short runs pruned early), then "
        "train the winner fully with the recipe: seeds, intervals, no-KD baseline, report.json.",
        extra=(BudgetArguments,),
    )


def check_budget_task(task: TaskData, args: BudgetArguments) -> None:
    """Refuses the generation-timing flags for a task whose models do not generate (before any work)."""
    given = [
        name for name in ("latency_prompt_tokens", "latency_new_tokens") if getattr(args, name) is not None
    ]
    if task.task != CAUSAL_LM and given:
        raise ValueError(
            f"--{' / --'.join(given)} set how a causal LM's generation is timed, but the {task.task} task's "
            "models are timed per forward at --batch_size: drop the flag(s)."
        )


def generation_sizes(task: TaskData, args: BudgetArguments) -> tuple[int, int]:
    """``(prompt tokens, new tokens)`` of a causal LM's timing: the flags, else the defaults (the prompt no
    longer than the test blocks, ``--max_length``)."""
    length = len(task.test[0]["input_ids"])
    return (
        args.latency_prompt_tokens or min(DEFAULT_PROMPT_TOKENS, length),
        args.latency_new_tokens or DEFAULT_NEW_TOKENS,
    )


def generation_prompts(task: TaskData, teacher: nn.Module, args: BudgetArguments) -> dict[int, dict]:
    """``{batch size: prompts}``: the first ``latency_prompt_tokens`` tokens of ``batch_size`` test blocks,
    refused when the blocks are shorter or the prompt and the new tokens exceed the teacher's context."""
    batch = latency_batch(task, args.batch_size)
    length = batch["input_ids"].shape[1]
    tokens, new_tokens = generation_sizes(task, args)
    if tokens > length:
        raise ValueError(
            f"--latency_prompt_tokens {tokens} is longer than the test blocks ({length} tokens, --max_length): "
            "the prompts are cut from them; give a shorter prompt or raise --max_length."
        )
    if tokens + new_tokens > context_length(teacher):
        raise ValueError(
            f"a {tokens}-token prompt and {new_tokens} new tokens exceed the teacher's context of "
            f"{context_length(teacher)} positions; lower --latency_prompt_tokens / --latency_new_tokens."
        )
    return {args.batch_size: {k: v[:, :tokens] for k, v in batch.items()}}


def latency_label(task: TaskData, args: BudgetArguments) -> str:
    """What one latency is for, e.g. ``per generated token at batch 1 on torch (64-token prompt, 32 new)``."""
    where = f"at batch {args.batch_size} on {args.runtime}"
    if task.task != CAUSAL_LM:
        return f"per forward {where}"
    tokens, new_tokens = generation_sizes(task, args)
    return f"per generated token {where} ({tokens}-token prompt, {new_tokens} new)"


def latency_measurer(
    task: TaskData, teacher: nn.Module, args: BudgetArguments, report_args: ReportArguments, folder: Path
) -> tuple[Callable[[dict[str, nn.Module]], dict[str, float]], dict[str, float]]:
    """``measure(models) -> {name: ms}`` timing the models beside the teacher at ``args.batch_size`` on
    ``args.runtime``, per forward or, for a causal LM, per generated token (:func:`generation_prompts`,
    :func:`~hf_distill.reports.generation_timing.time_generation`); the dict it returns also receives the
    teacher's latency (``"teacher"``)."""
    generates = task.task == CAUSAL_LM
    batch = (
        generation_prompts(task, teacher, args)
        if generates
        else {args.batch_size: latency_batch(task, args.batch_size)}
    )
    seen: dict[str, float] = {}

    def measure(models: dict[str, nn.Module]) -> dict[str, float]:
        timed = {TEACHER: teacher, **models}
        if args.runtime == "onnx-int8":
            timed = {name: _int8(model, task, folder / name, report_args) for name, model in timed.items()}
        rounds, threads = report_args.latency_rounds, report_args.latency_threads
        if generates:
            new_tokens = generation_sizes(task, args)[1]
            medians = time_generation(timed, batch, new_tokens, rounds, threads=threads).medians()
        else:
            medians = measure_latency(timed, batch, rounds=rounds, threads=threads)
        seen.update({name: sizes[args.batch_size] for name, sizes in medians.items()})
        return dict(seen)

    return measure, seen


def _int8(model: nn.Module, task: TaskData, folder: Path, report_args: ReportArguments) -> nn.Module:
    from hf_distill.export import OnnxModel, export_student

    result = export_student(model, folder, quantize="int8-dynamic", tokenizer=task.tokenizer)
    return OnnxModel(result.quantized_path, threads=report_args.latency_threads)


class ValidationReport(TrainerCallback):
    """Scores the student on validation every ``every`` steps (and at the last) and passes the metric to
    ``report(step, value)``; stops training when it returns True (the pruner gave up)."""

    def __init__(self, task: TaskData, args: DistillationTrainingArguments, every: int, report):
        self.task, self.args, self.every, self.report = task, args, every, report
        self.last: float | None = None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every and state.global_step < state.max_steps:
            return control
        self.last = float(self.task.evaluate(model, self.task.validation, self.args)[self.task.metric_name])
        model.train()
        if self.report(state.global_step, self.last):
            control.should_training_stop = True
        return control


def short_run(
    candidate: Candidate,
    model: nn.Module,
    report,
    *,
    teacher: nn.Module,
    task: TaskData,
    training_args: DistillationTrainingArguments,
    budget_args: BudgetArguments,
    folder: Path,
) -> float:
    """A candidate's short plain-KD run (``search_steps`` steps), validated every ``search_eval_steps``."""
    args = derived_args(
        training_args, folder / candidate.name, max_steps=budget_args.search_steps, eval_strategy="no",
        save_strategy="no", report_to="none",
    )  # fmt: skip
    callback = ValidationReport(task, args, budget_args.search_eval_steps, report)
    trainer = DistillationTrainer(
        model=model, teacher_model=teacher, args=args, train_dataset=distilled_rows(task),
        data_collator=task.collator, processing_class=task.tokenizer, callbacks=[callback],
    )  # fmt: skip
    trainer.train()
    return callback.last


def run_budget(
    task: TaskData, config: RecipeConfig, *, run: Callable[..., dict | None] = run_recipe
) -> dict[str, Any] | None:
    """Steps 1-6 of the module docstring; returns the full run's report with its ``budget`` entry.

    Args:
        task (TaskData): the task's prepared data.
        config (RecipeConfig): the run's argument groups, with :class:`BudgetArguments` among its extras.
        run (Callable): the full run of the winner, ``run(task, config)``.
    """
    budget_args, training_args = config.extra(BudgetArguments), config.training
    require_optuna()  # before the teacher is fine-tuned
    check_budget_task(task, budget_args)
    run_dir = Path(training_args.output_dir)
    teacher, teacher_folder, _ = ready_teacher(config.teacher, task, training_args, run_dir / "teacher")
    if task.task == CAUSAL_LM:  # prompt and new tokens checked against the teacher before any scoring
        generation_prompts(task, teacher, budget_args)
    calibration = calibration_batches(
        task, budget_args.calibration_batches, training_args.per_device_train_batch_size
    )
    scores = layer_importance(teacher, calibration, budget_args.budget_importance)
    candidates = candidate_grid(teacher, scores, budget_args.budget_depths, budget_args.budget_widths)
    reference = float(task.evaluate(teacher, task.validation, training_args)[task.metric_name])
    with tempfile.TemporaryDirectory() as exported:
        measure, latency = latency_measurer(task, teacher, budget_args, config.report, Path(exported))
        result = search_budget(
            candidates,
            lambda c: build_candidate(teacher, c, calibration),
            measure,
            lambda c, model, report: short_run(
                c,
                model,
                report,
                teacher=teacher,
                task=task,
                training_args=training_args,
                budget_args=budget_args,
                folder=run_dir / "budget" / "runs",
            ),  # fmt: skip
            max_latency_ms=budget_args.max_latency_ms,
            min_speedup=budget_args.min_speedup,
            max_params=budget_args.max_params,
            min_retention=budget_args.min_retention,
            reference_metric=reference,
            higher_is_better=task.higher_is_better,
            warmup_steps=budget_args.search_steps // 2,
            latency_label=latency_label(task, budget_args),
        )
    winner_dir = run_dir / WINNER_FOLDER
    build_candidate(teacher, result.winner, calibration).save_pretrained(winner_dir)
    if task.tokenizer is not None:
        task.tokenizer.save_pretrained(winner_dir)
    teacher_args = config.teacher
    if teacher_folder is not None:  # the full run reuses the fine-tuned teacher
        teacher_args = dataclasses.replace(
            teacher_args, teacher_model_name_or_path=str(teacher_folder), fine_tune_teacher="never"
        )
    student_args = dataclasses.replace(
        config.student, student_init=["pretrained"], student_model_name_or_path=str(winner_dir)
    )
    report = run(task, dataclasses.replace(config, teacher=teacher_args, student=student_args))
    if report is None:  # not the main process
        return None
    budget = {**result.to_dict(), "teacher_latency_ms": latency.get("teacher"), "runtime": budget_args.runtime,
              "batch_size": budget_args.batch_size, "winner_dir": str(winner_dir),
              "teacher_fine_tuned_dir": None if teacher_folder is None else str(teacher_folder),
              "importance": budget_args.budget_importance, "layer_scores": [float(s) for s in scores]}  # fmt: skip
    budget["frontier"] = str(plot_budget_frontier(budget, task.metric_name, run_dir / FRONTIER_FILENAME))
    report["budget"] = budget
    write_report(report, run_dir)
    print(f"\nbudget: {result.why}\nfrontier: {budget['frontier']}", flush=True)
    return report
