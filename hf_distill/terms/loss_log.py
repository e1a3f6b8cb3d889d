"""Logging the parts of the loss (``loss_kd``, ``loss_task``, ``loss_hidden``, ...) next to Trainer's ``loss``.

Parts are recorded per micro-batch, scaled like the loss Trainer logs (divided by the accumulation steps for
micro-batch means, multiplied by the process count where the loss is), and averaged per optimizer step when
Trainer logs, so the logged parts of a step add up to its logged loss. Diagnostics (the teacher's tail
mass, the top-k overlap, :mod:`hf_distill.terms.diagnostics`) are no parts of the loss: they are recorded
with :meth:`LossPartsLog.record_means` and logged as their mean over the micro-batches of the interval.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from transformers.trainer_pt_utils import nested_gather

from hf_distill.terms.normalization import Normalization


class LossPartsLog:
    """Collects named loss parts for training and evaluation and adds their means to Trainer's logs."""

    def __init__(self, normalization: Normalization):
        self.normalization = normalization
        self.parts: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.means: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self.last_step = 0
        self.resumed_from_step = 0

    def record(
        self, parts: dict[str, torch.Tensor], training: bool, num_items_in_batch: Any, accumulation_steps: int
    ) -> None:
        mode = "train" if training else "eval"
        scale = 1.0
        if training and num_items_in_batch is None:
            # Unscaled micro-batch means: Trainer divides the loss by the accumulation steps, so do we.
            scale = 1.0 / accumulation_steps
        if self.normalization.scales_by_processes(num_items_in_batch is not None):
            # Scaled like the loss: log()'s mean over processes then gives the global value, not 1/num_processes.
            scale = float(self.normalization.accelerator.num_processes)
        for name, value in parts.items():
            self.parts[mode][name].append(value.detach() * scale)

    def record_means(self, values: dict[str, torch.Tensor], training: bool) -> None:
        """Keeps this micro-batch's diagnostics (0-d tensors), logged as their plain mean over the interval."""
        for name, value in values.items():
            self.means["train" if training else "eval"][name].append(value.detach().float())

    def add_to(self, logs: dict[str, float], global_step: int, parallel_mode: Any) -> None:
        """Adds the recorded parts to ``logs`` (``eval_``-prefixed for evaluation logs) and forgets them."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        parts = self.parts[mode]
        if not parts or (mode == "train" and "loss" not in logs):
            return
        if mode == "train":
            # The parts of one optimizer step sum to that step's loss; average over logged steps.
            # After a resume the first window starts at the checkpoint's step, not at 0.
            self.last_step = max(self.last_step, self.resumed_from_step)
            steps = max(global_step - self.last_step, 1)
            self.last_step = global_step
        for name, values in parts.items():
            total = nested_gather(torch.stack(values).sum(), parallel_mode).mean().item()
            value = total / steps if mode == "train" else total / len(values)
            logs[f"eval_{name}" if mode == "eval" else name] = value
        parts.clear()
        for name, values in self.means[mode].items():
            mean = nested_gather(torch.stack(values).mean(), parallel_mode).mean().item()
            logs[f"eval_{name}" if mode == "eval" else name] = mean
        self.means[mode].clear()
