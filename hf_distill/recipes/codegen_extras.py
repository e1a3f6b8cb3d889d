"""What the codegen recipe adds to a run's report (``hf-distill train codegen``, which ``recipes/codegen.py``
runs): students with their own tokenizer (``--student_tokenizer``, :mod:`.cross_tokenizer`) with held-out
bits per byte of every model, then greedy completions of held-out functions (``--generation_prompts``,
:mod:`.generation_eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_distill.recipes.cross_tokenizer import add_cross_tokenizer_students, bits_per_byte_table
from hf_distill.recipes.generation_eval import write_generation_eval
from hf_distill.recipes.report_json import write_report


def finish_codegen_report(
    report: dict[str, Any] | None,
    teacher_args: Any,
    student_args: Any,
    data_args: Any,
    report_args: Any,
    training_args: Any,
) -> dict[str, Any] | None:
    """Adds the cross-tokenizer students and the generation evaluation the arguments ask for to ``report`` (None
    on processes other than the main one: nothing to add), rewrites ``report.json`` and prints their tables."""
    if report is None:
        return None
    if student_args.student_tokenizer:
        report = add_cross_tokenizer_students(report, teacher_args, student_args, data_args, training_args)
        write_report(report, Path(training_args.output_dir))
        print(f"\n{bits_per_byte_table(report)}\n", flush=True)
    if report_args.generation_prompts:
        report = write_generation_eval(report, teacher_args, data_args, report_args, training_args)
    return report
