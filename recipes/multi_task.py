"""Distil sentiment and NER into one student encoder with a head per task, and compare it with one distilled
student per task and with the same multi-task student trained without teachers.

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/multi_task.py --config recipes/configs/multi_task.yaml

Offline defaults: Rotten Tomatoes snippets and WNUT-16 tweets, all-MiniLM-L6-v2 fine-tuned once per task as the
teachers, a 3-layer encoder cut from MiniLM-L6 as the student. Writes ``<output_dir>/multi_task_report.json``
and prints each model's score on each task's test split and its parameters.
"""

from __future__ import annotations

from hf_distill import DistillationTrainingArguments
from hf_distill.recipes.arguments import RecipeConfig, ReportArguments, TeacherArguments
from hf_distill.recipes.config import parse_args_with_config
from hf_distill.recipes.console import default_pin_memory
from hf_distill.recipes.data_arguments import DataArguments
from hf_distill.recipes.multi_task import MultiTaskArguments, prepare_tasks, run_multi_task_recipe
from hf_distill.recipes.run import end_process_group
from hf_distill.recipes.student_arguments import StudentArguments
from hf_distill.recipes.teacher import teacher_tokenizer
from hf_distill.recipes.tensorboard_log import default_report_to

ARGUMENTS = (MultiTaskArguments, TeacherArguments, StudentArguments, DataArguments, ReportArguments,
             DistillationTrainingArguments)  # fmt: skip


def main(argv: list[str] | None = None) -> dict | None:
    config = RecipeConfig.from_groups(
        parse_args_with_config(
            ARGUMENTS,
            argv,
            defaults={"report_to": default_report_to(), "dataloader_pin_memory": default_pin_memory()},
        )
    )
    tokenizer = teacher_tokenizer(config.teacher)
    with config.training.main_process_first(desc="tokenizing"):
        tasks = prepare_tasks(config.extra(MultiTaskArguments).tasks, config.data, tokenizer)
    report = run_multi_task_recipe(tasks, config)
    end_process_group()
    return report


if __name__ == "__main__":
    main()
