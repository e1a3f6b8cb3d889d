"""Deep mutual learning (Zhang et al., 2018): two students teach each other and both are trained.

For students ``a`` and ``b`` with logits ``z_a``, ``z_b`` on the same batch,

    loss_a = (1 - alpha) * CE(z_a, y) + alpha * D(z_a, stopgrad(z_b))
    loss_b = (1 - alpha) * CE(z_b, y) + alpha * D(z_b, stopgrad(z_a))

with ``D`` the configured distillation loss (KL at temperature ``T`` by default). One optimizer steps on
``loss_a + loss_b``: each peer's prediction is detached where it serves as a target, so the gradient of the
sum with respect to ``a``'s parameters is exactly that of ``loss_a`` (and likewise for ``b``), i.e. the two
updates of the paper taken simultaneously. The students are saved to ``student_a/`` and ``student_b/`` of
every checkpoint and of ``save_model``'s folder, each loadable with ``from_pretrained``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from hf_distill.arguments import FEATURE_WEIGHTS, DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget, require_labels
from hf_distill.checks import check_separate_models
from hf_distill.terms.logits import PlainLogitTerms
from hf_distill.trainer import DistillationTrainer
from hf_distill.training.checkpoints import CheckpointExtra

STUDENT_A, STUDENT_B = "student_a", "student_b"


class MutualLearningTrainer(DistillationTrainer):
    """Trains ``model`` and ``peer_model`` together, each distilling the other's detached predictions.

    Args:
        model: the first student.
        peer_model: the second student (same task head and label space / vocabulary; any size).
        args: :class:`~hf_distill.DistillationTrainingArguments` (``alpha``, ``temperature``,
            ``distillation_loss`` apply to both students).
        **kwargs: as for :class:`~hf_distill.DistillationTrainer`, without ``teacher_model``.

    Logs ``loss_task_a``, ``loss_kd_a``, ``loss_task_b`` and ``loss_kd_b``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        peer_model: nn.Module | None = None,
        args: DistillationTrainingArguments | None = None,
        **kwargs: Any,
    ):
        if peer_model is None:
            raise ValueError(
                "MutualLearningTrainer needs `peer_model`, the second student that learns alongside."
            )
        if "teacher_model" in kwargs:
            raise ValueError(
                "MutualLearningTrainer has no fixed teacher: each student teaches the other. Pass the second "
                "student as peer_model instead of teacher_model."
            )
        if model is not None:
            check_separate_models(model, peer_model, role="peer_model", trained=True)
        if args is not None and any(getattr(args, name, 0) for name in FEATURE_WEIGHTS):
            raise ValueError(
                "hidden_state_weight, attention_weight and value_relation_weight are not supported by "
                "MutualLearningTrainer (the two students' layers have no teacher side to match); set them to 0."
            )
        if args is not None and getattr(args, "load_best_model_at_end", False):
            raise ValueError(
                "load_best_model_at_end is not supported by MutualLearningTrainer: checkpoints hold two students "
                "in subfolders. Pick the best checkpoint from the logged metrics and load its student_a/ or student_b/."
            )
        super().__init__(model=model, teacher_model=peer_model, args=args, **kwargs)
        self.peer = self.teacher

    def build_logit_terms(self, model: nn.Module) -> PlainLogitTerms:
        # Each student is the other's target, so both need their full logits.
        return PlainLogitTerms(self.head_kind, self.args, self.vocab_size)

    def prepare_teacher_model(self, teacher: nn.Module) -> nn.Module:
        # The peer is a second student: trainable, placed and (with several processes) wrapped like the first.
        teacher.requires_grad_(True)
        teacher.train()
        if self.accelerator.num_processes > 1:
            return self.accelerator.prepare_model(teacher)
        return teacher.to(self.args.device)

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        params = [p for p in self.accelerator.unwrap_model(self.peer).parameters() if p.requires_grad]
        if not any(p is params[0] for group in optimizer.param_groups for p in group["params"]):
            no_decay = [p for p in params if p.dim() < 2]
            decay = [p for p in params if p.dim() >= 2]
            optimizer.add_param_group({"params": decay, "weight_decay": self.args.weight_decay})
            optimizer.add_param_group({"params": no_decay, "weight_decay": 0.0})
            if self.args.max_grad_norm:
                # Trainer clips only the first student's gradients (model.parameters()). Unclipped, the peer
                # takes large steps, its predictions swing, and the first student, which learns from them,
                # follows: on Rotten Tomatoes both ended worse than without a peer. Clip it the same way.
                def clip_peer(*_):
                    torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)

                optimizer.register_step_pre_hook(clip_peer)
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        batch = DistillationBatch.from_inputs(
            inputs, num_items_in_batch=num_items_in_batch, global_step=self.state.global_step
        )
        require_labels(batch.labels, self.args.alpha, teacher="the peer")
        # The peer follows the first student between training (dropout on) and evaluation.
        self.peer.train(model.training)
        student_a = self.logit_terms.run_student(model, batch.model_inputs, {})
        with torch.set_grad_enabled(model.training):
            student_b = self.logit_terms.run_student(self.peer, batch.model_inputs, {})
        # Each student learns from the other's detached prediction, with the base trainer's terms and masking.
        loss_a, parts_a = self.logit_terms(
            student_a, TeacherTarget(TargetKind.PEER, logits=student_b.logits.detach()), batch
        )
        loss_b, parts_b = self.logit_terms(
            student_b, TeacherTarget(TargetKind.PEER, logits=student_a.logits.detach()), batch
        )
        parts = {**{f"{k}_a": v for k, v in parts_a.items()}, **{f"{k}_b": v for k, v in parts_b.items()}}
        self.record_loss_parts(parts, num_items_in_batch)
        loss = self.normalization.scale_loss(loss_a + loss_b, num_items_in_batch)
        return (loss, {"logits": student_a.logits}) if return_outputs else loss

    # ---- saving both students -------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        super()._save(os.path.join(output_dir, STUDENT_A), state_dict=state_dict)
        peer = self.accelerator.unwrap_model(self.peer)
        if self.args.should_save:
            if isinstance(peer, PreTrainedModel):
                peer.save_pretrained(os.path.join(output_dir, STUDENT_B))
            else:
                os.makedirs(os.path.join(output_dir, STUDENT_B), exist_ok=True)
                torch.save(peer.state_dict(), os.path.join(output_dir, STUDENT_B, "pytorch_model.bin"))
            if self.processing_class is not None:
                self.processing_class.save_pretrained(os.path.join(output_dir, STUDENT_B))

    def checkpoint_extras(self) -> list[CheckpointExtra]:
        # Both folders are written by save_model, before Trainer's trainer_state.json and the marker.
        return super().checkpoint_extras() + [
            CheckpointExtra(
                folder,
                f"{which} student ({folder}/)",
                "the two students cannot be restored",
                "Resume from a checkpoint written by MutualLearningTrainer.",
            )
            for folder, which in ((STUDENT_A, "first"), (STUDENT_B, "second"))
        ]

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        folder_a = os.path.join(resume_from_checkpoint, STUDENT_A)
        folder_b = os.path.join(resume_from_checkpoint, STUDENT_B)
        if not (os.path.isdir(folder_a) and os.path.isdir(folder_b)):
            raise FileNotFoundError(
                f"{resume_from_checkpoint} has no {STUDENT_A}/ and {STUDENT_B}/ folders: it was not written by "
                "MutualLearningTrainer, so the two students cannot be restored. Resume from one of its checkpoints."
            )
        super()._load_from_checkpoint(folder_a, model)
        peer = self.accelerator.unwrap_model(self.peer)
        # A fresh load of the same class gives the saved weights whatever the serialisation format.
        if isinstance(peer, PreTrainedModel):
            state = type(peer).from_pretrained(folder_b).state_dict()
        else:
            state = torch.load(
                os.path.join(folder_b, "pytorch_model.bin"), map_location="cpu", weights_only=True
            )
        peer.load_state_dict(state)
