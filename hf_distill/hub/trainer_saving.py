"""The save path every hf_distill trainer shares: checkpoints that are complete or skipped, the model card in
every folder the student is saved into, and a Hub push that refuses any teacher's weights before the repo
exists.

:class:`StudentSaving` sits before ``transformers.Trainer`` in a trainer's bases
(``class DistillationTrainer(StudentSaving, Trainer)``). The trainer says what it guards and keeps through
four hooks: :meth:`~StudentSaving.guarded_teachers` (each teacher with its fingerprint),
:meth:`~StudentSaving.card_teacher` (the teacher the card describes),
:meth:`~StudentSaving.checkpoint_extras` (files beside Trainer's in each checkpoint) and
:meth:`~StudentSaving.resuming_from` (state to restore from a checkpoint's folder). The card names the
trainer's ``head_kind`` (the student's head, or ``"multi_task"``) as the run's task.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from hf_distill.hub.trainer_card import CardMeasures, check_no_teacher_files, write_trainer_card
from hf_distill.training.checkpoints import (
    CheckpointExtra,
    CheckpointSave,
    load_extras,
    resolve_resume,
    rotate_checkpoints,
)

logger = logging.getLogger(__name__)


class StudentSaving:
    """Overrides of ``transformers.Trainer``'s save, resume and push methods; see the module docstring.

    Attributes:
        card_measures: the card's teacher metric and latencies, measured at the final save
            (:class:`hf_distill.hub.trainer_card.CardMeasures`).
        hub_repo_allowed: whether the push folder was checked, so the Hub repo may be created.
        held_back_pushes: during a checkpoint save, the pushes Trainer asked for, made once it is complete;
            None outside one.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        # Set before Trainer's constructor, which calls init_hf_repo when push_to_hub is set.
        self.card_measures = CardMeasures()
        self.hub_repo_allowed = False
        self.held_back_pushes: list[str] | None = None
        super().__init__(*args, **kwargs)

    # ---- hooks ---------------------------------------------------------------------------------------------

    def guarded_teachers(self) -> list[tuple[nn.Module | None, dict | None]]:
        """Each teacher whose weights must never be uploaded, with its fingerprint
        (:func:`hf_distill.hub.push_guard.model_fingerprint`, taken before it was cast or sharded)."""
        raise NotImplementedError(f"{type(self).__name__} must say which teachers its push guards.")

    def card_teacher(self) -> nn.Module | None:
        """The teacher the model card names and measures; None for none (a run on cached outputs)."""
        return None

    def checkpoint_extras(self) -> list[CheckpointExtra]:
        """What each checkpoint keeps beside Trainer's files; a trainer adds its own to ``super()``'s list, and
        :mod:`hf_distill.training.checkpoints` writes them atomically, checks them on resume and restores them."""
        return []

    def resuming_from(self, folder: str) -> None:
        """Called with the checkpoint a run resumes from, before ``Trainer.train`` loads it."""

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any):
        """``Trainer.train``; ``resume_from_checkpoint=True`` skips incomplete checkpoints (a save cut short by a
        kill) with a warning, and a path to an incomplete one is refused, naming what is missing."""
        resume = resolve_resume(resume_from_checkpoint, self.args.output_dir, self.checkpoint_extras())
        if isinstance(resume, str):
            self.resuming_from(resume)
        return super().train(resume, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        run_dir = self._get_output_dir(trial=trial)
        folder = os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        save = CheckpointSave(
            folder, self.args.should_save, self.checkpoint_extras(), self.accelerator.wait_for_everyone
        )
        save.begin(self.state.global_step)
        # Trainer rotates and pushes at the end of its save, before the extras and the marker exist: hold both
        # back until the checkpoint is complete.
        limit, self.args.save_total_limit, self.held_back_pushes = self.args.save_total_limit, None, []
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit, pushes, self.held_back_pushes = limit, self.held_back_pushes, None
        save.finish(self.state.global_step)
        for pushed in pushes:
            self._push_from_checkpoint(pushed)
        if self.args.should_save:
            rotate_checkpoints(run_dir, limit, keep=(folder, self.state.best_model_checkpoint))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        load_extras(resume_from_checkpoint, self.checkpoint_extras())

    # ---- model card and push_to_hub (trainer_card.py) ----------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        # Every folder the student is saved into gets its card; the measurements (a latency run of both
        # models) only where the student is final, not in each checkpoint.
        if self.args.should_save:
            write_trainer_card(
                self,
                output_dir or self.args.output_dir,
                repo_id=self.args.hub_model_id,
                measure=self.held_back_pushes is None,
            )

    def init_hf_repo(self, token: str | None = None, private: bool | None = None) -> None:
        """Creates the Hub repo, once a push has checked the folder it uploads. Trainer calls this from its
        constructor when ``push_to_hub`` is set, before anything is known of that folder: a refused push must
        leave nothing on the Hub, not even an empty repo."""
        if self.hub_repo_allowed:
            super().init_hf_repo(token=token, private=private)

    def check_push_folder(self) -> None:
        """Refuses (``ValueError``) an ``output_dir`` holding any guarded teacher's weights, by name or by
        content (:func:`hf_distill.hub.trainer_card.check_no_teacher_files`); then allows creating the repo."""
        for teacher, fingerprint in self.guarded_teachers():
            check_no_teacher_files(self.args.output_dir, teacher, fingerprint)
        self.hub_repo_allowed = True

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ):
        """``Trainer.push_to_hub`` after checking ``output_dir`` for teacher weights: check, then create the
        repo, then save, write hf_distill's card (checked again, now with the saved student) and upload.
        Every process checks, so all of them raise together rather than some waiting in the save."""
        self.check_push_folder()
        if self.hub_model_id is None:
            token = token if token is not None else self.args.hub_token
            self.init_hf_repo(token=token, private=private)
        return super().push_to_hub(commit_message, blocking, token, revision, private, **kwargs)

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, **kwargs) -> None:
        """Called by ``Trainer.push_to_hub`` right before it uploads ``output_dir``: writes hf_distill's card
        instead of Trainer's, and refuses (``ValueError``) a folder holding teacher weights before any upload.
        Trainer's ``finetuned_from`` / ``tasks`` / ``dataset*`` arguments have no place in that card."""
        if not self.is_world_process_zero():
            return
        ignored = sorted(k for k, v in kwargs.items() if v is not None)
        if ignored:
            logger.warning(
                "create_model_card ignores %s: the hf_distill card takes them from the run.", ignored
            )
        for teacher, fingerprint in self.guarded_teachers():
            check_no_teacher_files(self.args.output_dir, teacher, fingerprint)
        tags = [tags] if isinstance(tags, str) else tags
        write_trainer_card(
            self,
            self.args.output_dir,
            repo_id=self.hub_model_id,
            measure=True,
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Inside _save_checkpoint the push waits until the checkpoint is complete (see there).
        if self.held_back_pushes is not None:
            self.held_back_pushes.append(checkpoint_folder)
            return
        # Checkpoint pushes (hub_strategy "every_save", "checkpoint") upload output_dir without creating a card.
        if self.is_world_process_zero() and self.args.hub_strategy != "end":
            self.check_push_folder()
            if self.hub_model_id is None:
                self.init_hf_repo()
            write_trainer_card(self, self.args.output_dir, repo_id=self.hub_model_id, measure=False)
        super()._push_from_checkpoint(checkpoint_folder)
