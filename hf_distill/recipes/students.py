"""The recipe's students: building one of each kind (teacher layers, a smaller config, a GPT-2 over the
teacher's vocabulary, a given checkpoint) and naming it in the report.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from hf_distill.loading import load_pretrained
from hf_distill.recipes.offline import resolve_model_path
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.tasks import TaskData
from hf_distill.students.build import gpt2_student_for, student_from_config, student_from_teacher

# Block Influence is an average over tokens: a few batches of training rows settle the ranking.
CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE = 4, 16


def calibration_batches(task: TaskData, count: int, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """``count`` collated batches of the first training rows: model inputs (and labels, for a loss)."""
    keep = (*task.model_inputs, "labels")
    batches = []
    for start in range(0, min(len(task.train), count * batch_size), batch_size):
        rows = [task.train[i] for i in range(start, min(start + batch_size, len(task.train)))]
        batch = task.collator([{k: v for k, v in row.items() if k in keep} for row in rows])
        batches.append({k: v for k, v in batch.items() if k in keep})
    return batches


def build_student(
    init: str, teacher: PreTrainedModel, args: StudentArguments, task: TaskData
) -> PreTrainedModel:
    """A student of the chosen kind; random parts are seeded by the caller (``set_seed``)."""
    if init == "teacher_layers":
        # Copied layers keep the teacher's sizes, so the config overrides (sizes) are for the other kinds.
        # student_layers names them; else 'importance' ranks the teacher's layers on the first training batches.
        if args.student_layers is not None:
            return student_from_teacher(teacher, layers=list(args.student_layers))
        calibration = (
            calibration_batches(task, CALIBRATION_BATCHES, CALIBRATION_BATCH_SIZE)
            if args.student_layer_strategy == "importance"
            else None
        )
        return student_from_teacher(
            teacher,
            num_layers=args.student_num_layers,
            strategy=args.student_layer_strategy,
            calibration=calibration,
            importance_method=args.student_importance_method,
        )
    overrides = args.config_overrides()
    if init == "config":
        return student_from_config(teacher, num_hidden_layers=args.student_num_layers, **overrides)
    if init == "cnn":
        if task.new_student is None:
            raise ValueError(
                f"student_init 'cnn' builds the vision recipe's plain CNN, but this task is {task.task}; use "
                "'teacher_layers' or 'config'."
            )
        return task.new_student()
    if init == "gpt2":
        if task.task != "causal_lm":
            raise ValueError(
                f"student_init 'gpt2' builds a causal LM, but this task is {task.task}; use 'teacher_layers' "
                "or 'config' for classification tasks."
            )
        return gpt2_student_for(teacher, n_layer=args.student_num_layers, **overrides)
    path = resolve_model_path(args.student_model_name_or_path)
    return load_pretrained(
        task.auto_class.from_pretrained,
        path,
        role="student_model_name_or_path",
        dtype=torch.float32,
        **task.label_kwargs,
    )


def student_name(init: str, args: StudentArguments, kd: bool, mode: str = "kd") -> str:
    """``<init>-<layers>L-distilled`` (plain KD), ``...-<mode>`` (another distillation mode), ``...-no_kd``."""
    layers = "" if init in ("pretrained", "cnn") else f"-{args.student_num_layers}L"
    if not kd:
        return f"{init}{layers}-no_kd"
    return f"{init}{layers}-{'distilled' if mode == 'kd' else mode}"
