"""The schema of ``report.json``, the file a recipe writes into its run directory, and its validation.

A run directory written by the recipes holds ``report.json``::

    {"task": str, "metric_name": str, "higher_is_better": bool,
     "teacher": {"name_or_path", "revision", "metric", "parameters", "size_bytes",
                 "latency_ms_b1", "latency_ms_b32"},
     "students": [{"name", "kind", "init", "output_dir", "metric", "parameters", "size_bytes",
                   "latency_ms_b1", "latency_ms_b32", "retention", "speedup_b1", "speedup_b32"}, ...],
     "distillation": {"distillation_loss", "temperature", "alpha", "hidden_state_weight",
                      "hidden_state_loss", "hidden_layer_map"},
     "data": {"dataset", "train_size", "validation_size", "test_size"},
     "log_history": {"<student name>": [Trainer ``state.log_history`` entries]},
     "scorecard": {"metric_name", "seeds": [int], "test_examples", "confidence_level",
                   "models": {"<model>": {"mean", "interval": [low, high], "per_seed": [float]}},
                   "comparisons": [{"distilled", "baseline", "difference", "interval", "per_seed",
                                    "verdict"}]}}

``scorecard`` (optional; :mod:`hf_distill.reports.scorecard`) holds each model's mean over seeds with its 95%
interval and, per distilled student, the paired difference KD - no-KD with its interval and verdict line;
each student entry then also holds its own ``scorecard`` (mean, interval, ``versus_no_kd``) and ``seeds``
(every seed's folder and metric), with ``metric`` the mean over seeds; ``log_history``, latency, size and
parameters are those of the first seed's models.

Optional keys written by the recipes: per model ``latency`` (``{"b1": {"median_ms", "q25_ms", "q75_ms",
"iqr_ms", "rounds", "threads", "samples_ms"}, ...}``) and per student ``speedup`` (``{"b1": {"median", "q25",
"q75", "ratios", "reliable", "why"}, ...}``); ``latency_measurement`` (timer, rounds, threads, device, CPU
share, ``cpu_busy``, ``per``: what a sample's ms are for, "forward" or "generated token"); ``teacher_check`` (:mod:`hf_distill.recipes.teacher_check`); ``data.eval_coverage``
(NER: sentences scored through windows, words and entities left unscored); ``deployment`` (``--export
onnx``, :mod:`hf_distill.recipes.deployment`): ``{"quantize", "seeds", "latency_measurement", "rows": [{"model",
"runtime", "precision", "metric", "interval", "per_seed", "versus_pytorch", "size_bytes", "latency_ms_b1",
...}]}``; with several seeds a student's ``metric`` is the mean over its seeds, ``per_seed`` each seed's, and
``versus_pytorch`` the paired difference pooled over them; latency and size are the first seed's
(``latency_measurement.timed_seed``).

``retention`` is student metric / teacher metric, or teacher / student when lower is better (perplexity),
so 100 % always means "as good as the teacher". ``speedup_b*`` is teacher latency / student latency.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

REPORT_FILENAME = "report.json"

# Expected type of each key: "str", "int", "float" (int accepted), "bool", "str?" (str or null).
TEACHER_SCHEMA = {
    "name_or_path": "str",
    "revision": "str?",
    "metric": "float",
    "parameters": "int",
    "size_bytes": "int",
    "latency_ms_b1": "float",
    "latency_ms_b32": "float",
}
STUDENT_SCHEMA = {
    "name": "str",
    "kind": "str",
    "init": "str",
    "output_dir": "str",
    "metric": "float",
    "parameters": "int",
    "size_bytes": "int",
    "latency_ms_b1": "float",
    "latency_ms_b32": "float",
    "retention": "float",
    "speedup_b1": "float",
    "speedup_b32": "float",
}
DISTILLATION_SCHEMA = {
    "distillation_loss": "str",
    "temperature": "float",
    "alpha": "float",
    "hidden_state_weight": "float",
    "hidden_state_loss": "str",
    "hidden_layer_map": "str",
}
DEPLOYMENT_ROW_SCHEMA = {
    "model": "str",
    "runtime": "str",
    "precision": "str",
    "metric": "float",
    "size_bytes": "int",
    "latency_ms_b1": "float",
    "latency_ms_b32": "float",
    "retention": "float",
    "speedup_b1": "float",
    "speedup_b32": "float",
}
# Checked when present: reports written before ``--seeds`` pooled the deployment rows lack them.
DEPLOYMENT_ROW_OPTIONAL = {"interval": "interval", "per_seed": "numbers"}
DEPLOYMENT_OPTIONAL = {"seeds": "integers"}
DATA_SCHEMA = {"dataset": "str", "train_size": "int", "validation_size": "int", "test_size": "int"}
TOP_LEVEL_SCHEMA = {"task": "str", "metric_name": "str", "higher_is_better": "bool"}
SCORECARD_SCHEMA = {
    "metric_name": "str",
    "seeds": "list",
    "test_examples": "int",
    "confidence_level": "float",
}
INTERVAL_SCHEMA = {"interval": "interval", "per_seed": "list"}
COMPARISON_SCHEMA = {"distilled": "str", "baseline": "str", "difference": "float", "verdict": "str"}

_TYPE_WORDS = {
    "str": "a string",
    "str?": "a string or null",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
    "interval": "a list [low, high] of two numbers, low <= high",
    "numbers": "a non-empty list of finite numbers",
    "integers": "a list of integers",
}


def _has_type(value: Any, expected: str) -> bool:
    if expected == "str?":
        return value is None or isinstance(value, str)
    if expected == "str":
        return isinstance(value, str)
    if expected == "bool":
        return isinstance(value, bool)
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "dict":
        return isinstance(value, dict)
    if expected == "list":
        return isinstance(value, list)
    if expected == "numbers":
        numbers = isinstance(value, list) and all(_has_type(v, "float") for v in value)
        return numbers and bool(value) and all(math.isfinite(v) for v in value)
    if expected == "integers":
        return isinstance(value, list) and all(_has_type(v, "int") for v in value)
    if expected == "interval":
        numbers = isinstance(value, list) and len(value) == 2 and all(_has_type(v, "float") for v in value)
        return numbers and value[0] <= value[1]
    raise AssertionError(expected)  # a typo in the schemas above, not user input


class _Checker:
    """Walks a report and raises ``ValueError`` naming the key path and the file on the first problem."""

    def __init__(self, source: str, partial: bool):
        self.source = source
        self.partial = partial

    def key(self, mapping: dict, key: str, expected: str, where: str) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in mapping:
            if self.partial:
                return None
            raise ValueError(f"{self.source}: missing key '{path}' (expected {_TYPE_WORDS[expected]}).")
        value = mapping[key]
        # A partial report (written while training) may hold null for what is not measured yet.
        if value is None and self.partial:
            return None
        if not _has_type(value, expected):
            raise ValueError(
                f"{self.source}: key '{path}' must be {_TYPE_WORDS[expected]}, "
                f"got {type(value).__name__} ({value!r:.60})."
            )
        return value

    def optional(self, mapping: dict, key: str, expected: str, where: str) -> Any:
        """:meth:`key` for a key a report may leave out."""
        return self.key(mapping, key, expected, where) if key in mapping else None

    def section(self, mapping: dict, key: str, schema: dict[str, str], where: str = "") -> None:
        section = self.key(mapping, key, "dict", where)
        if section is not None:
            path = f"{where}.{key}" if where else key
            for name, expected in schema.items():
                self.key(section, name, expected, path)


def validate_report(report: Any, source: str = "report", *, partial: bool = False) -> dict:
    """Checks ``report`` against the ``report.json`` schema and returns it unchanged.

    With ``partial=True`` (a report written during training) keys may be missing or null, but those
    present must have the right type. Extra keys are allowed everywhere.

    Raises:
        ValueError: naming ``source`` and the first missing or ill-typed key, e.g. ``'students[1].metric'``.
    """
    if not isinstance(report, dict):
        raise ValueError(f"{source}: a report must be a JSON object, got {type(report).__name__}.")
    check = _Checker(source, partial)
    for key, expected in TOP_LEVEL_SCHEMA.items():
        check.key(report, key, expected, "")
    check.section(report, "teacher", TEACHER_SCHEMA)
    check.section(report, "distillation", DISTILLATION_SCHEMA)
    check.section(report, "data", DATA_SCHEMA)
    students = check.key(report, "students", "list", "")
    names = []
    for index, student in enumerate(students or []):
        where = f"students[{index}]"
        if not isinstance(student, dict):
            raise ValueError(f"{source}: '{where}' must be an object, got {type(student).__name__}.")
        for name, expected in STUDENT_SCHEMA.items():
            check.key(student, name, expected, where)
        names.append(student.get("name"))
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"{source}: student names must be unique (log_history is keyed by them); repeated: {duplicates}."
        )
    if "scorecard" in report:
        _check_scorecard(check, report)
    if "deployment" in report:
        deployment = check.key(report, "deployment", "dict", "") or {}
        for name, expected in DEPLOYMENT_OPTIONAL.items():
            check.optional(deployment, name, expected, "deployment")
        for index, row in enumerate(check.key(deployment, "rows", "list", "deployment") or []):
            for name, expected in DEPLOYMENT_ROW_SCHEMA.items():
                check.key(row, name, expected, f"deployment.rows[{index}]")
            for name, expected in DEPLOYMENT_ROW_OPTIONAL.items():
                check.optional(row, name, expected, f"deployment.rows[{index}]")
    histories = check.key(report, "log_history", "dict", "")
    for name, entries in (histories or {}).items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(
                f"{source}: 'log_history.{name}' must be a list of objects (Trainer log entries)."
            )
    return report


def _check_scorecard(check: _Checker, report: dict) -> None:
    """The optional ``scorecard``: its keys, each model's mean and interval, each comparison."""
    check.section(report, "scorecard", SCORECARD_SCHEMA)
    scorecard = report["scorecard"] if isinstance(report["scorecard"], dict) else {}
    for name, model in (check.key(scorecard, "models", "dict", "scorecard") or {}).items():
        check.key(model, "mean", "float", f"scorecard.models.{name}")
        for key, expected in INTERVAL_SCHEMA.items():
            check.key(model, key, expected, f"scorecard.models.{name}")
    for index, comparison in enumerate(check.key(scorecard, "comparisons", "list", "scorecard") or []):
        for key, expected in {**COMPARISON_SCHEMA, **INTERVAL_SCHEMA}.items():
            check.key(comparison, key, expected, f"scorecard.comparisons[{index}]")


def load_report(path: str | Path, *, partial: bool = False) -> dict:
    """Reads and validates ``report.json``, so a report with a missing or ill-typed key fails here, named,
    instead of deep inside a card or a plot.

    Args:
        path (str | Path): the ``report.json`` file, or the run directory that holds it.
        partial (bool): accept a report written during training: keys may be missing or null, but those
            present must have the right type. Default False (every key of the schema required).

    Returns:
        dict: the report, unchanged.

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not JSON, or a key is missing or has the wrong type (named with the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pass a run directory written by a recipe (it holds {REPORT_FILENAME})."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    return validate_report(report, str(path), partial=partial)
