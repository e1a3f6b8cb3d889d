"""Self-distillation: the teacher is a slowly moving copy of the student itself.

Two teachers are offered:

* ``"ema"`` (mean teacher, Tarvainen & Valpola 2017; the momentum teachers of BYOL / DINO): after every
  optimizer step ``theta_teacher <- decay * theta_teacher + (1 - decay) * theta_student`` for every
  parameter, and floating-point buffers follow the same rule. ``decay = 0`` makes the teacher the student of
  the previous step.
* ``"snapshot"`` (born-again networks, Furlanello et al. 2018, in its online form): the teacher is a frozen
  copy of the student, replaced by the current student every ``snapshot_steps`` optimizer steps.

Both start as a copy of the student, so the distillation term is 0 at step 0 and grows as the student moves
away from its own past; a task loss (``alpha < 1``) is what moves it. The teacher's state is saved in each
checkpoint (``self_distillation_teacher.pt``, written and restored by :mod:`hf_distill.training.checkpoints` like every
extra) so that resuming continues the same average.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.trainer import DistillationTrainer
from hf_distill.training.checkpoints import CheckpointExtra

SELF_TEACHERS = ("ema", "snapshot")
SELF_TEACHER_NAME = "self_distillation_teacher.pt"


@dataclass
class SelfDistillationTrainingArguments(DistillationTrainingArguments):
    """:class:`DistillationTrainingArguments` plus the kind of self-teacher and its update rate."""

    self_teacher: str = field(
        default="ema",
        metadata={
            "help": f"The teacher, one of {SELF_TEACHERS}: an EMA of the student or a periodic snapshot."
        },
    )
    ema_decay: float = field(
        default=0.999,
        metadata={
            "help": "EMA decay in [0, 1): teacher <- decay * teacher + (1 - decay) * student per step."
        },
    )
    snapshot_steps: int = field(
        default=100,
        metadata={
            "help": "With self_teacher='snapshot': copy the student into the teacher every N optimizer steps."
        },
    )

    def check_fields(self) -> None:
        if self.self_teacher not in SELF_TEACHERS:
            raise ValueError(
                f"self_teacher {self.self_teacher!r} is unknown; choose 'ema' (a moving average of the student) "
                "or 'snapshot' (a copy refreshed every snapshot_steps)."
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(
                f"ema_decay must be in [0, 1), got {self.ema_decay}: at 1 the teacher never moves. Typical values "
                "are 0.99-0.9999 (closer to 1 averages over more steps)."
            )
        if self.snapshot_steps < 1:
            raise ValueError(
                f"snapshot_steps must be >= 1, got {self.snapshot_steps}: it is the number of optimizer steps "
                "between two copies of the student into the teacher."
            )
        super().check_fields()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """``teacher <- decay * teacher + (1 - decay) * student`` for parameters and floating buffers; integer
    buffers (e.g. position ids, batch-norm counters) are copied."""
    student_state = dict(student.named_parameters())
    student_state.update(dict(student.named_buffers()))
    for name, tensor in list(teacher.named_parameters()) + list(teacher.named_buffers()):
        source = student_state[name].detach().to(device=tensor.device, dtype=tensor.dtype)
        if tensor.is_floating_point():
            tensor.lerp_(source, 1.0 - decay)
        else:
            tensor.copy_(source)


class _SelfTeacherCallback(TrainerCallback):
    """Moves the teacher after each optimizer step (``on_step_end`` runs right after ``optimizer.step()``)."""

    def __init__(self, trainer: SelfDistillationTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.update_teacher(state.global_step)


class SelfDistillationTrainer(DistillationTrainer):
    """Trains ``model`` against an EMA or a periodic snapshot of itself.

    Args:
        model: the student (and, through the copy, its own teacher).
        args: :class:`SelfDistillationTrainingArguments`.
        **kwargs: as for :class:`~hf_distill.DistillationTrainer`, without ``teacher_model``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: SelfDistillationTrainingArguments | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = SelfDistillationTrainingArguments(output_dir="tmp_trainer", report_to="none")
        if not isinstance(args, SelfDistillationTrainingArguments):
            raise TypeError(
                f"SelfDistillationTrainer needs SelfDistillationTrainingArguments, got {type(args).__name__}; "
                "they add self_teacher, ema_decay and snapshot_steps."
            )
        if "teacher_model" in kwargs:
            raise ValueError(
                "SelfDistillationTrainer builds its teacher from the student; do not pass teacher_model "
                "(use DistillationTrainer to learn from a separate teacher)."
            )
        if model is None:
            raise ValueError("SelfDistillationTrainer needs a `model`, the student that teaches itself.")
        teacher = copy.deepcopy(model)
        super().__init__(model=model, teacher_model=teacher, args=args, **kwargs)
        self.add_callback(_SelfTeacherCallback(self))

    def _teacher_module(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.teacher)

    def update_teacher(self, global_step: int) -> None:
        student = self.accelerator.unwrap_model(self.model)
        if self.args.self_teacher == "ema":
            ema_update(self._teacher_module(), student, self.args.ema_decay)
        elif global_step % self.args.snapshot_steps == 0:
            ema_update(self._teacher_module(), student, 0.0)

    def checkpoint_extras(self) -> list[CheckpointExtra]:
        return super().checkpoint_extras() + [
            CheckpointExtra(
                SELF_TEACHER_NAME,
                "self-distillation teacher",
                "resuming would restart the teacher from the current student",
                "Resume from a checkpoint written by SelfDistillationTrainer.",
                self._teacher_module(),
            )
        ]
