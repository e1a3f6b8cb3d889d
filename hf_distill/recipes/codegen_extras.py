"""What the codegen recipe adds to a run's report (``hf-distill train codegen``, which ``recipes/codegen.py``
runs): students with their own tokenizer (``--student_tokenizer``, :mod:`.cross_tokenizer`) with held-out
bits per byte of every model, then greedy completions of held-out functions (``--generation_prompts``,
:mod:`.generation_eval`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_distill.recipes.arguments import RecipeConfig
from hf_distill.recipes.cross_tokenizer import add_cross_tokenizer_students, bits_per_byte_table
from hf_distill.recipes.generation_eval import write_generation_eval
from hf_distill.recipes.report_json import write_report


def finish_codegen_report(report: dict[str, Any] | None, config: RecipeConfig) -> dict[str, Any] | None:
    """Adds the cross-tokenizer students and the generation evaluation ``config`` asks for to ``report`` (None
    on processes other than the main one: nothing to add), rewrites ``report.json`` and prints their tables.

    Args:
        report (dict | None): the run's report (:func:`~.run.run_recipe`), None off the main process.
        config (RecipeConfig): the run's argument groups (``student_tokenizer``, ``generation_prompts``, ...).

    Returns:
        dict | None: the report with ``cross_tokenizer`` and ``generation`` where asked for.
    """
    if report is None:
        return None
    if config.student.student_tokenizer:
        report = add_cross_tokenizer_students(report, config)
        write_report(report, Path(config.training.output_dir))
        print(f"\n{bits_per_byte_table(report)}\n", flush=True)
    if config.report.generation_prompts:
        report = write_generation_eval(report, config)
    return report
