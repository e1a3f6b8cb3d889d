"""The model card a ``DistillationTrainer`` writes into every folder it saves, and the checks before a push.

While training, the trainer knows part of what ``report.json`` holds (see :mod:`hf_distill.reports.report`): the
teacher and its revision, how the student was initialised (``config.distillation``, written by
:mod:`hf_distill.students.build`), the distillation settings, the data sizes and the latest evaluation. Given an
evaluation set, it also measures the teacher's metric on it and both models' latency
(:mod:`hf_distill.hub.card_measures`), hence retention and speed-up, for the card of a final save
(``save_model``, ``push_to_hub``), not for each checkpoint's. This module builds that partial report and
renders it with :func:`hf_distill.hub.card.render_model_card`; what is not measured reads "not measured".

The card's YAML front matter also carries the run's settings under ``distillation`` (temperature, alpha,
loss, hidden-state matching, teacher and revision), so tools reading the Hub metadata see how the model was
made without parsing the Markdown.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from torch import nn
from transformers import PreTrainedModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_distill.hub.card import may_replace_card, render_model_card
from hf_distill.hub.card_measures import (
    TASK_LOSS,
    latency_batches,
    ratio,
    side_by_side_latency_ms,
    teacher_metrics,
)
from hf_distill.hub.push import teacher_weight_files
from hf_distill.hub.push_guard import check_no_teacher_content, model_fingerprint, upload_weight_files
from hf_distill.model_kind import CAUSAL_LM
from hf_distill.students.build import count_parameters
from hf_distill.terms.diagnostics import DIAGNOSTIC_NAMES

logger = logging.getLogger(__name__)

STUDENT_NAME = "distilled"
# Evaluation log keys that are bookkeeping, not quality metrics.
_NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "step")
# Metrics for which a smaller value is better; any other name is taken as higher-is-better.
_LOWER_IS_BETTER = ("loss", "loss_task", "perplexity")
# Dataset builder names that say how a dataset was read, not what it is.
_GENERIC_BUILDERS = ("csv", "json", "parquet", "text", "arrow", "generator", "pandas", "imagefolder")
# What Trainer's push_to_hub leaves out of output_dir (transformers.Trainer.push_to_hub, _push_from_checkpoint).
TRAINER_UPLOAD_IGNORE = ("_*", f"{PREFIX_CHECKPOINT_DIR}-*")


def _unwrap(model: nn.Module) -> nn.Module:
    # A teacher placed by DeepSpeed / DDP is wrapped; its config and name live on `.module`.
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return model


def plain_module_class(model: nn.Module) -> str | None:
    """The import path of a model that is not a transformers ``PreTrainedModel`` (a plain ``nn.Module``
    such as a small CNN), whose card must say how to load its state dict; None for a transformers model."""
    if isinstance(model, PreTrainedModel):
        return None
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def describe_init(provenance: dict | None) -> str | None:
    """How the student was initialised, from the ``config.distillation`` that :mod:`hf_distill.students.build` writes.

    ``{"init": "teacher_layers", "layers": [0, 2]}`` reads ``"teacher layers [0, 2]"``; a random student
    names the tensors copied from the teacher; None when the student carries no provenance.
    """
    if not provenance:
        return None
    init = provenance.get("init")
    if init == "teacher_layers":
        return f"teacher layers {provenance.get('layers')}"
    if init == "random" and provenance.get("architecture") == "gpt2":
        return "random GPT-2 over the teacher's vocabulary"
    if init == "random":
        copied = provenance.get("copied") or []
        return "random" + (f", {' and '.join(copied)} copied from the teacher" if copied else "")
    return str(init) if init else None


def _latest_eval(log_history: list[dict]) -> dict[str, float]:
    """The metrics of the last evaluation in ``log_history``, without the ``eval_`` prefix."""
    for entry in reversed(log_history):
        metrics = {
            key[len("eval_") :]: value
            for key, value in entry.items()
            if key.startswith("eval_")
            and isinstance(value, int | float)
            and not key.endswith(_NOT_METRICS)
            and math.isfinite(value)
        }
        if metrics:
            return metrics
    return {}


def _main_metric(metrics: dict[str, float], args: Any) -> tuple[str | None, bool | None]:
    """The metric the card reports and whether higher is better: ``metric_for_best_model`` when set, else
    the first task metric of the evaluation (e.g. accuracy), else the evaluation loss."""
    if not metrics:
        return None, None
    wanted = getattr(args, "metric_for_best_model", None)
    if wanted:
        name = wanted[len("eval_") :] if wanted.startswith("eval_") else wanted
        if name in metrics:
            greater = getattr(args, "greater_is_better", None)
            return name, bool(greater) if greater is not None else not name.endswith(_LOWER_IS_BETTER)
    # The logged loss parts (loss_kd, loss_task, ...) describe the objective, not the task; without a task
    # metric, the task cross-entropy (loss_task) compares with the teacher's where the objective would not.
    # The teacher diagnostics describe the teacher's target beside the student, not the task either.
    task_metrics = [
        n for n in metrics if n != "loss" and not n.startswith("loss_") and n not in DIAGNOSTIC_NAMES
    ]
    name = task_metrics[0] if task_metrics else (TASK_LOSS if TASK_LOSS in metrics else "loss")
    if name not in metrics:
        return None, None
    return name, not name.endswith(_LOWER_IS_BETTER)


def _dataset_name(dataset: Any) -> str | None:
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    return None if not name or name in _GENERIC_BUILDERS else str(name)


def _size(dataset: Any) -> int | None:
    if dataset is None or isinstance(dataset, dict):  # a dict of evaluation sets has no single size
        return None
    try:
        return len(dataset)
    except TypeError:  # an iterable dataset
        return None


def _weight_bytes(folder: Path) -> int | None:
    """Bytes of the model weights saved directly in ``folder`` (shards included). Checkpoint subfolders and
    the optimizer, scheduler and projection files beside the weights in a checkpoint are not the model."""
    if not folder.is_dir():
        return None
    sizes = [
        p.stat().st_size
        for p in folder.iterdir()
        if p.is_file()
        and (
            (p.name.startswith("model") and p.name.endswith(".safetensors"))
            or (p.name.startswith("pytorch_model") and p.name.endswith(".bin"))
        )
    ]
    # None when Trainer has not copied the weights in yet (a checkpoint push writes the card first).
    return sum(sizes) if sizes else None


def _teacher_size_bytes(teacher: nn.Module) -> int | None:
    """Bytes of the teacher's weights: its folder's weight files when it was loaded from a local folder,
    else the bytes of its distinct tensors, which is what safetensors would store (tied tensors once)."""
    folder = Path(getattr(teacher, "name_or_path", "") or "")
    if str(folder) and folder.is_dir() and _weight_bytes(folder) is not None:
        return _weight_bytes(folder)
    seen: set[int] = set()
    total = 0
    for tensor in teacher.state_dict().values():
        if tensor.data_ptr() not in seen:
            seen.add(tensor.data_ptr())
            total += tensor.numel() * tensor.element_size()
    return total or None


class CardMeasures:
    """The teacher's metrics and both models' latency (:mod:`hf_distill.hub.card_measures`) for the card, when
    the trainer has one evaluation set, a live teacher and one process.

    The teacher's metrics are measured once per evaluation set (the teacher does not change during training);
    the latency, side by side with the student, once per training step: a push writes the card of the folder
    it just saved again, and must not time both models twice.

    Attributes:
        runs: how many times both models were timed (each run is ``SIDE_BY_SIDE_ROUNDS`` rounds).
    """

    def __init__(self) -> None:
        self.teacher_measured: dict[str, Any] | None = None
        self.latest: tuple[int, dict[str, Any]] | None = None
        self.runs = 0

    def __call__(self, trainer: Any, teacher: nn.Module | None, student: nn.Module) -> dict[str, Any]:
        """The measures for a card of ``student`` at the trainer's step; {} where nothing can be measured.

        Args:
            trainer: the trainer (its ``eval_dataset``, ``args``, ``state`` and eval dataloader are used).
            teacher: the unwrapped teacher, or None.
            student: the unwrapped student.

        Returns:
            ``teacher_metrics``, ``teacher_latency`` and ``student_latency`` (ms by batch size), or {}.
        """
        dataset = trainer.eval_dataset
        if dataset is None or isinstance(dataset, dict) or teacher is None or trainer.args.world_size != 1:
            return {}
        step = trainer.state.global_step
        if self.latest is not None and self.latest[0] == step:
            return self.latest[1]
        if self.teacher_measured is None or self.teacher_measured["dataset"] is not dataset:
            self.teacher_measured = {
                "dataset": dataset,
                "batches": latency_batches(trainer),
                "metrics": teacher_metrics(trainer, teacher, causal=trainer.head_kind == CAUSAL_LM),
            }
        latency = side_by_side_latency_ms(
            {"teacher": teacher, "student": student}, self.teacher_measured["batches"]
        )
        self.runs += 1
        measured = {
            "teacher_metrics": self.teacher_measured["metrics"],
            "teacher_latency": latency["teacher"],
            "student_latency": latency["student"],
        }
        self.latest = (step, measured)
        return measured


def _with_measures(report: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    """Fills the teacher's metric and latency, and the student's latency, retention and speed-ups."""
    if not measured:
        return report
    teacher, student = report["teacher"], report["students"][0]
    metric_name = report["metric_name"]
    teacher["metric"] = measured["teacher_metrics"].get(metric_name) if metric_name else None
    teacher["metrics"] = measured["teacher_metrics"]
    for size, value in measured["teacher_latency"].items():
        teacher[f"latency_ms_b{size}"] = value
        student[f"latency_ms_b{size}"] = measured["student_latency"][size]
        student[f"speedup_b{size}"] = ratio(value, measured["student_latency"][size])
    if report["higher_is_better"] is not None:
        pair = (student["metric"], teacher["metric"])
        student["retention"] = ratio(*pair) if report["higher_is_better"] else ratio(*reversed(pair))
    return report


def trainer_report(trainer: Any, output_dir: str | Path, *, measure: bool = True) -> dict[str, Any]:
    """The partial ``report.json`` a :class:`~hf_distill.DistillationTrainer` knows about the student it saves
    in ``output_dir``: teacher name, revision (``config._commit_hash``), parameters and size; the student's
    initialisation, parameters, size on disk and latest evaluation metrics; settings; data sizes; and, with
    ``measure`` and an evaluation set, the teacher's metric, both latencies, retention and speed-ups
    (``trainer.card_measures``, a :class:`CardMeasures`)."""
    args = trainer.args
    teacher = _unwrap(trainer.card_teacher())
    student = _unwrap(trainer.accelerator.unwrap_model(trainer.model))
    teacher_config = getattr(teacher, "config", None)
    student_config = getattr(student, "config", None)
    output_dir = Path(output_dir)

    metrics = _latest_eval(trainer.state.log_history)
    metric_name, higher_is_better = _main_metric(metrics, args)
    student_entry = {
        "name": STUDENT_NAME,
        "kind": "distilled",
        "init": describe_init(getattr(student_config, "distillation", None)),
        "output_dir": str(output_dir),
        "metric": metrics.get(metric_name) if metric_name else None,
        "metrics": metrics,
        "parameters": count_parameters(student),
        "size_bytes": _weight_bytes(output_dir),
        "global_step": trainer.state.global_step,
    }
    distillation = {
        "distillation_loss": args.distillation_loss,
        "temperature": args.temperature,
        "alpha": args.alpha,
        "hidden_state_weight": args.hidden_state_weight,
        "hidden_state_loss": args.hidden_state_loss,
        "hidden_layer_map": args.hidden_layer_map,
    }
    # Only the knobs that change this run's objective: the card's "Other settings" line lists them.
    if "jsd" in args.distillation_loss:
        distillation["jsd_beta"] = args.jsd_beta
    if "skew" in args.distillation_loss:
        distillation["skew_lambda"] = args.skew_lambda
    for name in ("attention_weight", "value_relation_weight"):
        if getattr(args, name, 0):
            distillation[name] = getattr(args, name)
    report = {
        "task": trainer.head_kind,
        "metric_name": metric_name,
        "higher_is_better": higher_is_better,
        # A run on cached teacher outputs has no teacher model to describe.
        "teacher": {
            "name_or_path": getattr(teacher, "name_or_path", None) or None,
            "revision": getattr(teacher_config, "_commit_hash", None),
            "parameters": count_parameters(teacher) if teacher is not None else None,
            "size_bytes": _teacher_size_bytes(teacher) if teacher is not None else None,
        },
        "students": [student_entry],
        "distillation": distillation,
        "data": {
            "dataset": _dataset_name(trainer.train_dataset),
            "train_size": _size(trainer.train_dataset),
            "validation_size": _size(trainer.eval_dataset),
        },
    }
    return _with_measures(report, trainer.card_measures(trainer, teacher, student) if measure else {})


def record_teacher(student: nn.Module, teacher: nn.Module | None) -> dict[str, Any] | None:
    """Writes the teacher's name and fingerprint (:func:`hf_distill.hub.push_guard.model_fingerprint`) into the
    student's ``config.distillation``, creating the record for a student built outside
    :mod:`hf_distill.students.build`; returns the fingerprint. Every folder the student is saved into then says, by
    content, which teacher must never be uploaded beside it. Call it before the teacher is cast or sharded."""
    teacher = _unwrap(teacher) if teacher is not None else None
    fingerprint = model_fingerprint(teacher) if teacher is not None else None
    config = getattr(student, "config", None)
    if config is not None:
        record = dict(getattr(config, "distillation", None) or {})
        if teacher is not None:
            record.setdefault("teacher", getattr(teacher, "name_or_path", None) or None)
        # A run on cached outputs keeps the fingerprint of a teacher recorded earlier, if any.
        if fingerprint is not None or "teacher_fingerprint" not in record:
            record["teacher_fingerprint"] = fingerprint
        config.distillation = record
    return fingerprint


def check_no_teacher_files(
    folder: str | Path, teacher: nn.Module | None, fingerprint: dict[str, Any] | None = None
) -> None:
    """Refuses a folder that is about to be uploaded when it holds teacher weights.

    Three signs: a weight file under a path part named ``teacher*`` (the rule of :func:`hf_distill.hub.push.push_student`),
    the teacher's own local folder (``teacher.name_or_path``) lying inside ``folder``, or weight files that
    Trainer's push would upload holding every tensor of the teacher's ``fingerprint`` (by content, whatever
    their names).

    Raises:
        ValueError: naming what was found and how to fix it.
    """
    folder = Path(folder)
    found = teacher_weight_files(folder) if folder.is_dir() else []
    source = Path(getattr(_unwrap(teacher), "name_or_path", "") or "") if teacher is not None else Path()
    if str(source) not in ("", ".") and source.is_dir() and folder.is_dir():
        source, root = source.resolve(), folder.resolve()
        if source != root and root in source.parents:
            found.append(source.relative_to(root).as_posix() + "/")
    if found:
        raise ValueError(
            f"{folder} holds teacher weights ({', '.join(found[:3])}), and push_to_hub uploads that whole "
            "folder; hf_distill never uploads a teacher. Save the teacher outside the trainer's output_dir, "
            "or push the student's own folder with `hf-distill push`."
        )
    if folder.is_dir():
        files = upload_weight_files(folder, TRAINER_UPLOAD_IGNORE)
        check_no_teacher_content(folder, files, fingerprint, source="the trainer's teacher")


def _measured_numbers(report: dict[str, Any]) -> dict[str, Any]:
    """The card's numbers in its front matter, for ``hf-distill report`` to read back (None: not measured)."""
    teacher, student = report["teacher"], report["students"][0]
    keys = ("metric", "parameters", "size_bytes", "latency_ms_b1", "latency_ms_b32")
    return {
        **{f"teacher_{k}": teacher.get(k) for k in keys},
        **{f"student_{k}": student.get(k) for k in keys[1:]},
        "retention": student.get("retention"),
        "speedup_b1": student.get("speedup_b1"),
        "speedup_b32": student.get("speedup_b32"),
    }


def write_trainer_card(
    trainer: Any,
    output_dir: str | Path,
    *,
    repo_id: str | None = None,
    measure: bool = True,
    **card_kwargs: Any,
) -> Path | None:
    """Writes the model card of the student saved in ``output_dir`` and returns its path.

    A ``README.md`` written by hand (without the marker of hf_distill's or Trainer's generated cards) is kept,
    with a warning, and None is returned.

    Args:
        trainer: the trainer that saved the student (a :class:`hf_distill.hub.trainer_saving.StudentSaving`).
        output_dir: the student's folder.
        repo_id: the Hub repo the card names in its usage snippet.
        measure: whether the card carries the teacher's metric and both latencies (see :class:`CardMeasures`);
            a checkpoint's card does not, its numbers read "not measured".
        **card_kwargs: for :func:`hf_distill.hub.card.render_model_card` (``license``, ``language``, ``tags``,
            ``model_name``).

    Returns:
        The card's path, or None when a hand-written card was kept.
    """
    output_dir = Path(output_dir)
    readme = output_dir / "README.md"
    if not may_replace_card(readme):
        logger.warning("%s was written by hand; keeping it instead of writing the model card.", readme)
        return None
    report = trainer_report(trainer, output_dir, measure=measure)
    student = _unwrap(trainer.accelerator.unwrap_model(trainer.model))
    config = getattr(student, "config", None)
    card = ModelCard(
        render_model_card(
            report,
            STUDENT_NAME,
            repo_id=repo_id,
            student_config=config.to_dict() if config is not None else None,
            student_class=plain_module_class(student),
            **card_kwargs,
        )
    )
    card.data.distillation = {
        "teacher": report["teacher"]["name_or_path"],
        "teacher_revision": report["teacher"]["revision"],
        "student_init": report["students"][0]["init"],
        # What `hf-distill report <output_dir>` reads back when no recipe wrote a report.json.
        "task": report["task"],
        "metric_name": report["metric_name"],
        "higher_is_better": report["higher_is_better"],
        "student_metric": report["students"][0]["metric"],
        **report["distillation"],
        "measured": _measured_numbers(report),
        "data": report["data"],
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a checkpoint push may be uploading this folder in the background, and must
    # read the old card or the new one, never half of one. Trainer's uploads skip names starting with "_".
    partial = output_dir / "_README.md.partial"
    partial.write_text(str(card), encoding="utf-8")
    partial.replace(readme)
    return readme
