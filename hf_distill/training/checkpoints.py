"""Checkpoints that survive a kill at any moment: what hf_distill adds to Trainer's ``checkpoint-N/`` folders.

A save (:class:`CheckpointSave`) goes, on the process that saves:

1. remove a completion marker left by an earlier save into the same folder, then write ``SAVING_NAME``;
2. Trainer's own files (model, optimizer, scheduler, scaler, RNG state, ``trainer_state.json`` last), with
   Trainer's checkpoint rotation and Hub push held back;
3. the trainer's extras (:class:`CheckpointExtra`: projections, a self-distillation teacher, ...), each written
   to ``NAME.partial`` and renamed, so a file under its final name is always whole;
4. (all processes meet, so each one's RNG state is on disk) every file is flushed to disk with ``fsync`` and
   ``MARKER_NAME`` is written (temporary name, then rename) listing each file with its size; ``SAVING_NAME``
   goes;
5. the held-back push, then rotation: only complete checkpoints count towards ``save_total_limit`` and only
   they are deleted, each renamed out of the ``checkpoint-N`` pattern before its files go, so a kill during a
   rotation never leaves a half-deleted folder that looks like a checkpoint, and the newest complete one is
   never deleted in favour of an incomplete one.

A folder is complete (:func:`checkpoint_problems`) when

* it has the marker and every file the marker lists, at the listed size; or
* it has no marker and no ``SAVING_NAME`` (written before hf_distill had markers): Trainer writes
  ``trainer_state.json`` after its other files, so that file must be there and parse, and each extra the
  trainer needs must be there and whole (``torch.save`` writes a zip archive, whose directory sits at its
  end: a file cut short has none).

``resume_from_checkpoint=True`` takes the complete checkpoint with the highest step and warns about each newer
one it skips; an explicit path to an incomplete checkpoint is refused with what is missing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

logger = logging.getLogger(__name__)

MARKER_NAME = "hf_distill_checkpoint.json"
SAVING_NAME = "hf_distill_saving.json"
TRAINER_STATE = "trainer_state.json"
PARTIAL_SUFFIX = ".partial"
# A rotated checkpoint is renamed to this prefix before its files are deleted; "_*" is also among the
# patterns Trainer's Hub push ignores.
DELETING_PREFIX = "_deleting-"
MARKER_FORMAT = 1
CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


@dataclass(frozen=True)
class CheckpointExtra:
    """Something a trainer keeps in each checkpoint beside Trainer's files.

    Attributes:
        name: its path inside ``checkpoint-N/``.
        what: what it holds, for messages ("hidden-state projections").
        without_it: what resuming without it would do ("resuming would restart them from random").
        fix: how to get a checkpoint that has it.
        module: saved here (its ``state_dict``, atomically) and restored by :func:`load_extras`; None for a
            folder the trainer's own ``save_model`` writes (it only has to be there).
    """

    name: str
    what: str
    without_it: str
    fix: str
    module: nn.Module | None = None

    def missing(self, folder: str) -> str:
        return (
            f"{os.path.join(folder, self.name)} is missing: the checkpoint holds no {self.what}, so "
            f"{self.without_it}. {self.fix}"
        )


# ---- writing ------------------------------------------------------------------------------------------


def fsync_path(path: str) -> None:
    """Flushes a file (or, where the platform allows, a folder's entries) from the page cache to the disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if os.path.isdir(path) else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # folders cannot be opened on some platforms; their entries are then flushed by the OS
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """``write(temporary_path)``, flushed to disk, then renamed to ``path``: ``path`` is never half-written."""
    partial = path + PARTIAL_SUFFIX
    write(partial)
    fsync_path(partial)
    os.replace(partial, path)
    fsync_path(os.path.dirname(path) or ".")


def save_extras(folder: str, extras: Sequence[CheckpointExtra]) -> None:
    """Each extra with a module: its ``state_dict`` to ``folder/name``, atomically."""
    for extra in extras:
        if extra.module is not None:
            state = extra.module.state_dict()
            write_atomically(os.path.join(folder, extra.name), lambda p, s=state: torch.save(s, p))


def files_of(folder: str) -> dict[str, int]:
    """Every file under ``folder`` (relative POSIX path -> size in bytes), hf_distill's bookkeeping aside."""
    root = Path(folder)
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name not in (MARKER_NAME, SAVING_NAME) and path.suffix != PARTIAL_SUFFIX:
            files[path.relative_to(root).as_posix()] = path.stat().st_size
    return files


def write_marker(folder: str, global_step: int) -> None:
    """Flushes every file of the checkpoint to disk, then writes the marker that lists them: the checkpoint is
    complete from here on, even after a power loss."""
    files = files_of(folder)
    for name in files:
        fsync_path(os.path.join(folder, name))
    marker = {"format": MARKER_FORMAT, "global_step": global_step, "files": files}

    def write(path: str) -> None:
        with open(path, "w") as f:
            json.dump(marker, f, indent=1)

    write_atomically(os.path.join(folder, MARKER_NAME), write)


class CheckpointSave:
    """One checkpoint save, around Trainer's own: :meth:`begin` before it, :meth:`finish` after it.

    Args:
        folder: ``checkpoint-N/``.
        should_save: whether this process writes (``TrainingArguments.should_save``).
        extras: the trainer's :class:`CheckpointExtra` list.
        barrier: waits for all processes (``accelerator.wait_for_everyone``).
    """

    def __init__(
        self, folder: str, should_save: bool, extras: Sequence[CheckpointExtra], barrier: Callable[[], None]
    ):
        self.folder, self.should_save, self.extras, self.barrier = folder, should_save, extras, barrier

    def begin(self, global_step: int) -> None:
        if self.should_save:
            os.makedirs(self.folder, exist_ok=True)
            # An earlier save into this folder (a run resumed from an earlier checkpoint) left its marker: it
            # goes before any file changes, so the marker can never vouch for a mix of old and new files.
            marker = os.path.join(self.folder, MARKER_NAME)
            if os.path.exists(marker):
                os.remove(marker)
            with open(os.path.join(self.folder, SAVING_NAME), "w") as f:
                json.dump({"global_step": global_step, "pid": os.getpid()}, f)
            fsync_path(os.path.join(self.folder, SAVING_NAME))
            fsync_path(self.folder)
        # No process writes its files (RNG state) into the folder before the stale marker is gone.
        self.barrier()

    def finish(self, global_step: int) -> None:
        if self.should_save:
            save_extras(self.folder, self.extras)
        # Every process's files are written before the marker vouches for them.
        self.barrier()
        if self.should_save:
            write_marker(self.folder, global_step)
            os.remove(os.path.join(self.folder, SAVING_NAME))
            fsync_path(self.folder)


# ---- checking and resuming -----------------------------------------------------------------------------


def marker_problems(folder: str) -> list[str]:
    try:
        with open(os.path.join(folder, MARKER_NAME)) as f:
            files = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return [f"its completion marker {MARKER_NAME} is unreadable ({error})"]
    problems = []
    for name, size in files.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            problems.append(f"{name} is missing (the marker lists it)")
        elif os.path.getsize(path) != size:
            problems.append(f"{name} is {os.path.getsize(path)} bytes, {size} when it was saved")
    return problems


def unmarked_problems(folder: str, extras: Sequence[CheckpointExtra]) -> list[str]:
    """A checkpoint without a marker (written before hf_distill had them), judged by its content."""
    state = os.path.join(folder, TRAINER_STATE)
    if not os.path.isfile(state):
        return [
            f"{TRAINER_STATE} is missing (Trainer writes it after its other files, so its save did not finish)"
        ]
    try:
        with open(state) as f:
            json.load(f)
    except ValueError:
        return [f"{TRAINER_STATE} is cut short (not valid JSON)"]
    return [
        f"{extra.name} is cut short (not a whole torch.save file)"
        for extra in extras
        if extra.module is not None
        and os.path.isfile(os.path.join(folder, extra.name))
        and not zipfile.is_zipfile(os.path.join(folder, extra.name))
    ]


def checkpoint_problems(folder: str, extras: Sequence[CheckpointExtra] = ()) -> list[str]:
    """Why ``folder`` cannot be resumed from by a trainer that keeps ``extras``; empty when it is complete."""
    if not os.path.isdir(folder):
        return [f"{folder} does not exist or is not a folder"]
    if os.path.isfile(os.path.join(folder, MARKER_NAME)):
        problems = marker_problems(folder)
    elif os.path.exists(os.path.join(folder, SAVING_NAME)):
        return [f"its save was interrupted ({SAVING_NAME} is still there and no {MARKER_NAME} was written)"]
    else:
        problems = unmarked_problems(folder, extras)
    return problems + [
        extra.missing(folder) for extra in extras if not os.path.exists(os.path.join(folder, extra.name))
    ]


def checkpoints_in(run_dir: str) -> list[str]:
    """The ``checkpoint-N`` folders of ``run_dir``, highest step first."""
    if not os.path.isdir(run_dir):
        return []
    found = [
        (int(m.group(1)), os.path.join(run_dir, name))
        for name in os.listdir(run_dir)
        if (m := CHECKPOINT_PATTERN.match(name)) and os.path.isdir(os.path.join(run_dir, name))
    ]
    return [path for _, path in sorted(found, reverse=True)]


def resolve_resume(
    resume_from_checkpoint: str | os.PathLike | bool | None,
    output_dir: str,
    extras: Sequence[CheckpointExtra] = (),
) -> str | bool | None:
    """What ``Trainer.train`` should resume from.

    ``True``: the complete checkpoint with the highest step in ``output_dir``, with a warning naming each newer
    one skipped and why; ``True`` itself when there is no checkpoint at all (Trainer then says so). A path: the
    path, if complete. Raises ``ValueError`` for an incomplete path, or ``True`` with only incomplete ones.
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        skipped = []
        for folder in checkpoints_in(output_dir):
            problems = checkpoint_problems(folder, extras)
            if not problems:
                if skipped:
                    logger.warning(
                        "Resuming from %s, the last complete checkpoint; skipped %s.",
                        folder,
                        "; ".join(f"{os.path.basename(f)}: {', '.join(p)}" for f, p in skipped),
                    )
                return folder
            skipped.append((folder, problems))
        if not skipped:
            return True
        raise ValueError(
            f"resume_from_checkpoint=True found no complete checkpoint in {output_dir}: "
            + "; ".join(f"{os.path.basename(f)}: {', '.join(p)}" for f, p in skipped)
            + ". Their saves were interrupted or they lack what this trainer needs; start without "
            "resume_from_checkpoint (or delete them), or pass the path of a complete checkpoint."
        )
    folder = os.fspath(resume_from_checkpoint)
    problems = checkpoint_problems(folder, extras)
    if problems:
        complete = [
            f for f in checkpoints_in(os.path.dirname(folder) or ".") if not checkpoint_problems(f, extras)
        ]
        raise ValueError(
            f"Cannot resume from {folder}: {'; '.join(problems)}. "
            + (f"The last complete checkpoint beside it is {complete[0]}; " if complete else "")
            + "resume_from_checkpoint=True picks the last complete checkpoint of output_dir."
        )
    return folder


def load_extras(folder: str, extras: Sequence[CheckpointExtra]) -> None:
    """Restores each extra with a module from ``folder`` (``FileNotFoundError`` naming what is missing)."""
    for extra in extras:
        if extra.module is None:
            continue
        path = os.path.join(folder, extra.name)
        if not os.path.isfile(path):
            raise FileNotFoundError(extra.missing(folder))
        extra.module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))


def checkpoint_step(folder: str) -> int | None:
    """The ``global_step`` in ``folder``'s ``trainer_state.json``; None without one."""
    try:
        with open(os.path.join(folder, TRAINER_STATE)) as f:
            return int(json.load(f)["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- rotation -------------------------------------------------------------------------------------------


def rotate_checkpoints(run_dir: str, save_total_limit: int | None, keep: Sequence[str | None] = ()) -> None:
    """Trainer's rotation (oldest first by modification time, as Trainer orders them) over complete
    checkpoints only: incomplete ones neither count nor go (a resumed run overwrites them when it saves that
    step again), the ``keep`` folders (the one just saved, the best one) always stay. Leftovers of a rotation
    cut short are removed first."""
    for name in os.listdir(run_dir):
        if name.startswith(DELETING_PREFIX):
            shutil.rmtree(os.path.join(run_dir, name), ignore_errors=True)
    if save_total_limit is None or save_total_limit <= 0:
        return
    protected = {os.path.abspath(k) for k in keep if k}
    complete = [c for c in sort_checkpoints(run_dir, use_mtime=True) if not checkpoint_problems(c)]
    excess = len(complete) - max(save_total_limit, len(protected & {os.path.abspath(c) for c in complete}))
    for folder in complete:
        if excess <= 0:
            break
        if os.path.abspath(folder) in protected:
            continue
        doomed = os.path.join(run_dir, DELETING_PREFIX + os.path.basename(folder))
        if os.path.exists(doomed):
            shutil.rmtree(doomed, ignore_errors=True)
        os.replace(folder, doomed)
        logger.info("Deleting older checkpoint %s (save_total_limit=%d)", folder, save_total_limit)
        shutil.rmtree(doomed, ignore_errors=True)
        excess -= 1
