"""Reading a folder written by ``DistillationTrainer`` alone (no recipe ``report.json``) as a partial report.

Such a folder holds Trainer's ``trainer_state.json`` (at its root after ``trainer.save_state()``, else in each
``checkpoint-<step>/``), whose ``log_history`` carries every logged loss part, and the model card the trainer
writes beside the weights (:mod:`hf_distill.hub.trainer_card`), whose front matter carries the run's settings
(``distillation``), the student's score (``model-index``) and, when the trainer measured them, the teacher's
numbers. What neither holds reads "not measured" in the report.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hf_distill.reports.schema import REPORT_FILENAME, validate_report

TRAINER_STATE_NAME = "trainer_state.json"
CARD_NAME = "README.md"
# The settings the card's ``distillation`` front matter carries that belong in the report's ``distillation``.
_SETTING_KEYS = (
    "distillation_loss",
    "temperature",
    "alpha",
    "hidden_state_weight",
    "hidden_state_loss",
    "hidden_layer_map",
)
# The numbers the trainer's card records under ``distillation.measured`` as ``teacher_<key>`` / ``student_<key>``.
_MEASURED = ("metric", "parameters", "size_bytes", "latency_ms_b1", "latency_ms_b32")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def find_trainer_state(folder: Path) -> Path | None:
    """``folder/trainer_state.json``, else the one of the latest ``checkpoint-<step>`` inside, else None."""
    if (folder / TRAINER_STATE_NAME).is_file():
        return folder / TRAINER_STATE_NAME
    steps = [
        (int(match.group(1)), path)
        for path in folder.iterdir()
        if path.is_dir() and (match := _CHECKPOINT.match(path.name)) and (path / TRAINER_STATE_NAME).is_file()
    ]
    return max(steps)[1] / TRAINER_STATE_NAME if steps else None


def refuse_unusable(folder: Path) -> None:
    """Raises ``FileNotFoundError`` saying what to run, for a folder with neither a report nor a state."""
    raise FileNotFoundError(
        f"{folder} holds neither {REPORT_FILENAME} (written by a recipe: `hf-distill train <task> ...`) nor "
        f"{TRAINER_STATE_NAME} (written by a Trainer in each checkpoint-<step>/, or by trainer.save_state()). "
        "Pass a recipe's run directory, or the output_dir of a DistillationTrainer run that saved a checkpoint "
        "or called trainer.save_state() after trainer.train()."
    )


def _card_metadata(folder: Path) -> dict[str, Any]:
    """The YAML front matter of the model card in ``folder`` (or beside the checkpoint), {} without one."""
    path = folder / CARD_NAME
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path).data.to_dict()
    except ValueError:  # a hand-written README without metadata the Hub can read
        return {}


def _student_score(metadata: dict[str, Any]) -> tuple[str | None, float | None]:
    """The metric name and value of the card's ``model-index`` (the student's score), if any."""
    for model in metadata.get("model-index") or []:
        for result in model.get("results") or []:
            for metric in result.get("metrics") or []:
                if isinstance(metric.get("value"), int | float):
                    return metric.get("type"), float(metric["value"])
    return None, None


def trainer_folder_report(folder: str | Path) -> dict[str, Any]:
    """The partial ``report.json`` (schema of :mod:`hf_distill.reports.schema`) of a DistillationTrainer folder.

    Raises:
        FileNotFoundError: when ``folder`` holds no ``trainer_state.json`` (:func:`refuse_unusable`).
        ValueError: when that file is not Trainer's JSON state.
    """
    folder = Path(folder)
    state_path = find_trainer_state(folder)
    if state_path is None:
        refuse_unusable(folder)
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{state_path}: not valid JSON ({error}).") from error
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise ValueError(f"{state_path}: has no 'log_history' list, so it is not a Trainer state file.")
    metadata = _card_metadata(folder) or _card_metadata(state_path.parent)
    recorded = metadata.get("distillation") or {}
    measured = recorded.get("measured") or {}
    metric_name, metric = _student_score(metadata)
    student = {
        "name": "distilled",
        "kind": "distilled",
        "init": recorded.get("student_init"),
        "output_dir": str(folder),
        "metric": metric if metric is not None else recorded.get("student_metric"),
        "global_step": state.get("global_step"),
        **{k: measured.get(f"student_{k}") for k in _MEASURED[1:]},
        **{k: measured.get(k) for k in ("retention", "speedup_b1", "speedup_b32")},
    }
    report = {
        "task": recorded.get("task"),
        "metric_name": metric_name or recorded.get("metric_name"),
        "higher_is_better": recorded.get("higher_is_better"),
        "teacher": {
            "name_or_path": recorded.get("teacher"),
            "revision": recorded.get("teacher_revision"),
            **{k: measured.get(f"teacher_{k}") for k in _MEASURED},
        },
        "students": [student],
        "distillation": {k: recorded[k] for k in _SETTING_KEYS if k in recorded},
        "data": recorded.get("data") or {},
        "log_history": {"distilled": history},
        "source": f"{state_path.relative_to(folder).as_posix()} and {CARD_NAME} (no {REPORT_FILENAME})",
    }
    return validate_report(report, str(state_path), partial=True)
