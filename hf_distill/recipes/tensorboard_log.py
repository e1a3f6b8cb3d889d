"""TensorBoard for the recipes, on by default when it is installed (``pip install "hf_distill[tensorboard]"``).

Every Trainer run of a recipe (the teacher's fine-tune, each student, each baseline) writes its curves under
its own folder, ``<output_dir>/teacher/runs/`` and ``<output_dir>/students/<name>/runs/`` (Trainer's
``TensorBoardCallback``): the loss and, for a distilled student, each part of it (``train/loss_kd``,
``train/loss_task``, ``train/loss_hidden``, ...) as its own curve. At the end :func:`log_scorecard` adds the
teacher-vs-student comparison under ``<output_dir>/scorecard/``: each model's test metrics, size, latency and
retention as scalars of one run per model (so TensorBoard shows them side by side), and the comparison table
as text. ``tensorboard --logdir <output_dir>`` shows it all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers.integrations import is_tensorboard_available

from hf_distill.reports.format import comparison_table, markdown_table

SCORECARD_DIR = "scorecard"
# A model's report entry: the numbers that are compared between teacher and students.
_SCALAR_KEYS = (
    "parameters",
    "size_bytes",
    "latency_ms_b1",
    "latency_ms_b32",
    "retention",
    "speedup_b1",
    "speedup_b32",
)


def default_report_to() -> str:
    """``"tensorboard"`` when it is installed, else ``"none"``: the recipes' default ``report_to``."""
    return "tensorboard" if is_tensorboard_available() else "none"


def scorecard_scalars(entry: dict[str, Any]) -> dict[str, float]:
    """A report entry's test metrics (``test/<metric>``) and size / speed numbers (``model/<key>``)."""
    scalars = {f"test/{name}": float(value) for name, value in (entry.get("metrics") or {}).items()}
    scalars.update({f"model/{key}": float(entry[key]) for key in _SCALAR_KEYS if entry.get(key) is not None})
    return scalars


def log_scorecard(report: dict[str, Any], run_dir: Path, report_to: Sequence[str] | str) -> Path | None:
    """Writes the teacher-vs-student scorecard of ``report`` for TensorBoard when ``report_to`` holds it;
    returns its folder (None when TensorBoard is not asked for)."""
    if "tensorboard" not in report_to:
        return None
    from torch.utils.tensorboard import SummaryWriter

    folder = Path(run_dir) / SCORECARD_DIR
    models = {"teacher": report["teacher"], **{s["name"]: s for s in report["students"]}}
    for name, entry in models.items():
        with SummaryWriter(log_dir=str(folder / name)) as writer:
            for tag, value in scorecard_scalars(entry).items():
                writer.add_scalar(tag, value, global_step=0)
    header, rows = comparison_table(report)
    with SummaryWriter(log_dir=str(folder)) as writer:
        writer.add_text("scorecard", markdown_table(header, rows), global_step=0)
    return folder
