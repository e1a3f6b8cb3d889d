"""One seed's view of a multi-seed report: what the model saved under ``students/<name>/seed-<s>/`` scored.

A run with several seeds reports each student's ``metric`` as the mean over its seeds (the scorecard's
number), with every seed's own score in the student's ``seeds`` list. A seed's folder holds that seed's weights
alone, so what describes it (its model card) must state that seed's score as the model's, and the mean over
seeds beside it as what it is. :func:`seed_report` gives the report as seen from one seed: every student's
``metric``, ``metrics``, ``output_dir`` and ``retention`` become those of its run under that seed (the teacher
is trained once and stays); the ``scorecard`` entries, over all seeds, are kept as they are.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hf_distill.reports.format import is_number


def seed_runs(student: dict[str, Any]) -> list[dict[str, Any]]:
    """A student's per-seed records (``seed``, ``output_dir``, ``metric``, ``metrics``) when it was trained
    under several seeds, else an empty list (one seed: its entry is that seed's own)."""
    runs = student.get("seeds") or []
    return runs if len(runs) > 1 else []


def seed_of_folder(report: dict[str, Any], student_name: str, folder: str | Path) -> int | None:
    """The seed whose weights ``student_name`` saved in ``folder`` (matched by resolved path, then by the
    ``seed-<s>`` folder name under the student's folder), or None for a single-seed run or another folder."""
    folder = Path(folder)
    student = next((s for s in report.get("students") or [] if s.get("name") == student_name), {})
    runs = seed_runs(student)
    for run in runs:
        if run.get("output_dir") and Path(run["output_dir"]).resolve() == folder.resolve():
            return run["seed"]
    for run in runs:
        saved = Path(run.get("output_dir") or "")
        if saved.name == folder.name and saved.parent.name == folder.parent.name:
            return run["seed"]
    return None


def seed_report(report: dict[str, Any], seed: int) -> dict[str, Any]:
    """A copy of ``report`` as seen from ``seed``: each student trained under several seeds gets that seed's
    ``metric``, ``metrics``, ``output_dir`` and ``retention``; ``report["seed"]`` names the seed.

    Args:
        report: a ``report.json`` with per-seed records (``students[i].seeds``).
        seed: one of the run's seeds.

    Returns:
        The new report; ``report`` itself is left unchanged.

    Raises:
        ValueError: when no student was trained under several seeds, or ``seed`` is not one of them.
    """
    seen = copy.deepcopy(report)
    teacher_metric = (seen.get("teacher") or {}).get("metric")
    found = []
    for student in seen.get("students") or []:
        runs = {run.get("seed"): run for run in seed_runs(student)}
        found.extend(runs)
        if seed not in runs:
            continue
        run = runs[seed]
        student.update(metric=run["metric"], output_dir=run["output_dir"])
        if run.get("metrics"):
            student["metrics"] = run["metrics"]
        student["retention"] = _retention(run["metric"], teacher_metric, report.get("higher_is_better"))
    if seed not in found:
        seeds = sorted(set(found))
        raise ValueError(
            f"seed {seed!r} is not among the seeds the report's students were trained with ({seeds or 'none'}"
            "): a seed's view needs a multi-seed run (--seeds 1,2,3); pass one of its seeds."
        )
    seen["seed"] = seed
    return seen


def _retention(metric: float, teacher_metric: Any, higher_is_better: Any) -> float | None:
    """As the report's: student / teacher, or teacher / student when lower is better."""
    if not (is_number(teacher_metric) and is_number(metric)):
        return None
    numerator, denominator = (metric, teacher_metric) if higher_is_better else (teacher_metric, metric)
    return float(numerator / denominator) if denominator else float("nan")
