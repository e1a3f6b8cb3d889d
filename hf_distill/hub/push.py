"""Pushing a student (never its teacher) to the Hugging Face Hub, with its model card
(written by :mod:`hf_distill.hub.card`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi

from hf_distill.hub.card import may_replace_card, write_model_card
from hf_distill.hub.push_guard import (
    WEIGHT_SUFFIXES,
    check_no_teacher_content,
    check_not_a_listed_teacher,
    check_onnx_graphs,
    distillation_record,
    find_report,
    recorded_fingerprint,
    upload_weight_files,
)
from hf_distill.reports.schema import load_report
from hf_distill.reports.seed_report import seed_of_folder

logger = logging.getLogger(__name__)

__all__ = [
    "ONNX_FOLDER_PATTERN",
    "UPLOAD_IGNORE_PATTERNS",
    "check_student_folder",
    "push_student",
    "teacher_weight_files",
    "upload_ignore_patterns",
]

# The exported graphs (`hf-distill export FOLDER --output_dir FOLDER`): uploaded only when asked (--with_onnx).
ONNX_FOLDER_PATTERN = "onnx/"
# Never uploaded: Trainer checkpoints, anything of the teacher's, optimizer/scheduler/RNG states, TensorBoard
# logs, and the hidden-state projections that only serve training; ``onnx/`` unless the push asks for it.
# Patterns are fnmatch-ed against paths relative to the folder (``*`` also matches ``/``), a trailing ``/``
# means "everything under".
UPLOAD_IGNORE_PATTERNS = (
    "checkpoint-*/",
    "*/checkpoint-*/",
    "teacher*",
    "*/teacher*",
    "runs/",
    "*/runs/",
    "optimizer.*",
    "*/optimizer.*",
    "scheduler.*",
    "*/scheduler.*",
    "scaler.pt",
    "rng_state*",
    "distillation_modules.pt",
    "feature_map_projections.pt",
    ONNX_FOLDER_PATTERN,
)


def upload_ignore_patterns(with_onnx: bool = False) -> tuple[str, ...]:
    """:data:`UPLOAD_IGNORE_PATTERNS`, less ``onnx/`` when the exported graphs go up beside the safetensors."""
    return tuple(p for p in UPLOAD_IGNORE_PATTERNS if not (with_onnx and p == ONNX_FOLDER_PATTERN))


# ---- pushing ----------------------------------------------------------------------------------------------


def teacher_weight_files(folder: Path) -> list[str]:
    """Weight files under ``folder`` whose path has a part named ``teacher*`` (case-insensitive).

    The paths are relative to ``folder``, in POSIX form and sorted; a push refuses a folder that has any.
    """
    found = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if (
            path.is_file()
            and path.name.lower().endswith(WEIGHT_SUFFIXES)
            and any(part.lower().startswith("teacher") for part in relative.parts)
        ):
            found.append(relative.as_posix())
    return found


def check_student_folder(folder: str | Path, *, with_onnx: bool = False) -> Path:
    """Checks that ``folder`` is a student saved by hf_distill and holds nothing of its teacher's.

    Decided by content (see :mod:`hf_distill.hub.push_guard`): the folder is not a teacher that the run's
    ``report.json`` lists, its ``config.json`` carries the student's ``distillation`` record, and the weight
    files the push would upload do not hold the teacher whose fingerprint that record carries (or, for a
    student saved before fingerprints were recorded, the teacher read from its local folder). A weight file
    under a path part named ``teacher*`` is refused too. A folder with teacher weights is refused rather than
    filtered: it usually means the wrong folder was passed, and the teacher's license may not allow
    re-publishing its weights. With ``with_onnx`` the folder must hold ``onnx/model.onnx``, and the ONNX graphs
    are checked like the weights (:mod:`hf_distill.hub.onnx_graphs`; rules 4 and 5 of the guard).

    Args:
        folder (str | Path): the student's folder.
        with_onnx (bool): whether ``onnx/`` goes up too.

    Returns:
        Path: ``folder``.

    Raises:
        ValueError: naming the folder and what is wrong.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"{folder} is not a folder: pass the folder that save_pretrained wrote for the student."
        )
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"{folder} has no config.json, so it is not a saved model: pass the folder that "
            "save_pretrained (or the DistillationTrainer's save_model) wrote for the student."
        )
    weights = [
        p.name
        for p in folder.iterdir()
        if p.is_file()
        and p.name.endswith((".safetensors", ".bin"))
        and not p.name.lower().startswith("teacher")
    ]
    if not weights:
        raise ValueError(
            f"{folder} has a config.json but no weights (model.safetensors or pytorch_model.bin): "
            "save the student with save_pretrained before pushing."
        )
    if with_onnx and not (folder / ONNX_FOLDER_PATTERN / "model.onnx").is_file():
        raise ValueError(
            f"{folder} has no onnx/model.onnx to upload (--with_onnx): export the student into its own folder "
            f"first, `hf-distill export {folder} --output_dir {folder} [--quantize int8-dynamic]`, or push "
            "without --with_onnx."
        )
    check_not_a_listed_teacher(folder)
    record = distillation_record(folder)
    teacher = teacher_weight_files(folder)
    if teacher:
        shown = ", ".join(teacher[:3]) + (f" and {len(teacher) - 3} more" if len(teacher) > 3 else "")
        raise ValueError(
            f"{folder} holds what looks like teacher weights ({shown}); hf_distill never uploads a teacher. "
            "Push the student's own folder, or move the teacher's files out of it."
        )
    fingerprint, source = recorded_fingerprint(folder, record)
    files = upload_weight_files(folder, upload_ignore_patterns(with_onnx))
    check_no_teacher_content(folder, files, fingerprint, source=source)
    check_onnx_graphs(folder, files, fingerprint, source=source)
    return folder


def _student_name_for(report: dict, folder: Path) -> str | None:
    """The student of ``report`` saved in ``folder``: by output_dir (its own or one seed's), then by folder
    name."""
    students = report.get("students") or []
    if not students:
        return "distilled"  # a partial report: the card describes the run's distilled student
    for student in students:
        output_dir = student.get("output_dir")
        if output_dir and Path(output_dir).resolve() == folder.resolve():
            return student.get("name")
        if seed_of_folder(report, student.get("name"), folder) is not None:
            return student.get("name")
    for student in students:
        if student.get("output_dir") and Path(student["output_dir"]).name == folder.name:
            return student.get("name")
    names = [s.get("name") for s in students]
    return folder.name if folder.name in names else None


def push_student(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload distilled student (hf_distill)",
    api: HfApi | None = None,
    with_onnx: bool = False,
    **card_kwargs: Any,
) -> str:
    """Creates ``repo_id`` (if needed) and uploads the student saved in ``folder``; returns the commit URL.

    Before uploading, the model card is (re)written from the ``report.json`` found in ``folder`` or its
    parent, unless ``README.md`` was written by hand (it is kept, with a warning). ``card_kwargs`` go to
    :func:`render_model_card` (``license``, ``language``, ``tags``, ...). Checkpoints, teacher files,
    optimizer states and ``runs/`` are never uploaded (``UPLOAD_IGNORE_PATTERNS``); ``onnx/`` (the graphs
    ``hf-distill export FOLDER --output_dir FOLDER`` writes, the Hub's and transformers.js' layout) goes up
    beside the safetensors only with ``with_onnx``.

    Args:
        folder (str | Path): the student's folder (saved with ``save_pretrained``).
        repo_id (str): the Hub repository, created when missing.
        token (str | None): a Hub token; None uses the logged-in one.
        private (bool | None): the new repository's visibility.
        commit_message (str): the upload's commit message.
        api (HfApi | None): the client to use (a new ``HfApi(token=token)`` when None).
        with_onnx (bool): upload ``onnx/`` too (``model.onnx``, ``model_quantized.onnx``, ``export.json``).

    Returns:
        str: the commit URL.

    Raises:
        ValueError: when ``folder`` is not a saved student or holds teacher weights (:func:`check_student_folder`).
    """
    folder = check_student_folder(folder, with_onnx=with_onnx)
    report_path = find_report(folder)
    readme = folder / "README.md"
    if report_path is not None and not may_replace_card(readme):
        logger.warning("%s was written by hand; keeping it instead of generating a model card.", readme)
    elif report_path is not None:
        report = load_report(report_path, partial=True)
        student_name = _student_name_for(report, folder)
        if student_name is None:
            logger.warning(
                "%s lists no student saved in %s; pushing without generating a model card.",
                report_path,
                folder,
            )
        else:
            write_model_card(folder, report, student_name=student_name, repo_id=repo_id, **card_kwargs)

    api = api if api is not None else HfApi(token=token)
    api.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=commit_message,
        ignore_patterns=list(upload_ignore_patterns(with_onnx)),
        token=token,
    )
    return str(getattr(commit, "commit_url", None) or commit)
