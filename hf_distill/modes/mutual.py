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

from ..arguments import DistillationTrainingArguments
from ..losses import distillation_loss, task_cross_entropy
from ..trainer import DistillationTrainer, _logits_of, align_for_distillation

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
        layer_terms = ("hidden_state_weight", "attention_weight", "value_relation_weight")
        if args is not None and any(getattr(args, name, 0) for name in layer_terms):
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

    def _prepare_teacher(self, teacher: nn.Module) -> nn.Module:
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

    def _student_terms(
        self,
        logits: torch.Tensor,
        peer_logits: torch.Tensor,
        labels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        num_items_in_batch: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(kd, task) terms of one student against its peer's detached logits, with the base trainer's masking."""
        args = self.args
        logits, peer_logits, kd_labels, mask = align_for_distillation(
            self.task, logits, peer_logits, labels, attention_mask
        )
        loss_kd = distillation_loss(
            logits,
            peer_logits.detach(),
            labels=kd_labels if mask is None else None,
            mask=mask,
            num_items_in_batch=num_items_in_batch,
            **args.kd_loss_kwargs,
        )
        loss_task = None
        if args.alpha < 1.0:
            loss_task = task_cross_entropy(logits, kd_labels, num_items_in_batch=num_items_in_batch)
        return loss_kd, loss_task

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        labels = inputs.get("labels")
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if labels is None and args.alpha < 1.0:
            raise ValueError(
                f"The batch has no `labels`, but alpha={args.alpha} gives the task loss weight "
                f"{1 - args.alpha:.2f}. Add labels to the dataset, or set alpha=1.0 to learn from the peer only."
            )
        # The peer follows the first student between training (dropout on) and evaluation.
        self.peer.train(model.training)
        logits_a = _logits_of(model(**model_inputs))
        with torch.set_grad_enabled(model.training):
            logits_b = _logits_of(self.peer(**model_inputs))
        if self._vocab_size is not None:
            logits_a, logits_b = logits_a[..., : self._vocab_size], logits_b[..., : self._vocab_size]
        attention_mask = model_inputs.get("attention_mask")
        kd_a, task_a = self._student_terms(logits_a, logits_b, labels, attention_mask, num_items_in_batch)
        kd_b, task_b = self._student_terms(logits_b, logits_a, labels, attention_mask, num_items_in_batch)
        loss = args.alpha * (kd_a + kd_b)
        parts = {"loss_kd_a": kd_a, "loss_kd_b": kd_b}
        if task_a is not None:
            loss = loss + (1.0 - args.alpha) * (task_a + task_b)
            parts.update(loss_task_a=task_a, loss_task_b=task_b)
        if args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        self._record_loss_parts(parts, num_items_in_batch)
        return (loss, {"logits": logits_a}) if return_outputs else loss

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
