"""How every term is normalised, in one place.

Logit terms divide by ``num_items_in_batch`` (Trainer's count of label positions over all gradient-accumulation
micro-batches, and over all processes with ``average_tokens_across_devices``). Rows of a transfer set (rows
whose labels are all -100, see :func:`hf_distill.batch.transfer_positions`) add KD positions that Trainer does not count: the KD
term divides by the label positions plus those (:meth:`Normalization.num_kd_items`, counted over the same
micro-batches and processes), the task term by the label positions alone. Feature terms divide by the
attended tokens counted the same way (:meth:`Normalization.num_tokens`). Where the count spans processes, each
process's loss is a partial sum and DDP averages gradients, so the loss is multiplied by the number of
processes (:meth:`Normalization.scale_loss`), as Trainer does.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from transformers import TrainingArguments

# Transfer positions are a property of the batch (computed once there); the step counts here read them too.
from hf_distill.batch import transfer_positions


def attended_tokens(batch: Any) -> torch.Tensor | None:
    """Tokens that feature terms average over: attended positions, or all of ``input_ids``; for image batches
    (``pixel_values`` and no tokens) each example counts once."""
    if not hasattr(batch, "keys"):
        return None
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].sum()
    if batch.get("input_ids") is not None:
        return torch.tensor(batch["input_ids"].numel())
    # Image batches (pixel_values, or a plain module's own input name) have no tokens: each example counts once.
    tensors = [value for value in batch.values() if isinstance(value, torch.Tensor) and value.dim() > 0]
    return torch.tensor(tensors[0].shape[0]) if tensors else None


class Normalization:
    """Token counts and process scaling for one trainer."""

    def __init__(self, accelerator: Accelerator, args: TrainingArguments):
        self.accelerator, self.args = accelerator, args
        self.accumulated_tokens: torch.Tensor | None = None
        self.accumulated_transfer: torch.Tensor | None = None

    def scales_by_processes(self, has_num_items: bool) -> bool:
        """Whether the loss is multiplied by the number of processes: each process's terms are then partial
        sums over a count taken on all processes."""
        return (
            has_num_items and self.args.average_tokens_across_devices and self.accelerator.num_processes > 1
        )

    def scale_loss(self, loss: torch.Tensor, num_items_in_batch: Any) -> torch.Tensor:
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            # The divisor counts items on all processes, and DDP averages gradients: undo that average.
            return loss * self.accelerator.num_processes
        return loss

    def count_accumulated_tokens(self, batch_samples: list, device: torch.device) -> None:
        """Attended tokens over the micro-batches of one optimizer step (and all processes when Trainer counts
        ``num_items_in_batch`` over them), so accumulation does not change a feature term."""
        counts = [attended_tokens(b) for b in batch_samples]
        if not counts or any(c is None for c in counts):
            self.accumulated_tokens = None
            return
        count = sum(counts).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        self.accumulated_tokens = count

    def count_accumulated_transfer(self, batch_samples: list, shifted: bool, device: torch.device) -> None:
        """Transfer positions (:func:`transfer_positions`) over the micro-batches of one optimizer step, counted
        over the processes exactly when Trainer counts ``num_items_in_batch`` over them."""
        counts = []
        for batch in batch_samples:
            labels = batch.get("labels") if hasattr(batch, "get") else None
            positions = transfer_positions(labels, batch.get("attention_mask"), shifted=shifted)
            counts.append(None if positions is None else positions.sum())
        if not counts or any(c is None for c in counts):
            self.accumulated_transfer = None
            return
        count = sum(counts).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        self.accumulated_transfer = count

    def num_kd_items(
        self, num_items_in_batch: Any, transfer: torch.Tensor | None, training: bool
    ) -> torch.Tensor | None:
        """The denominator of the KD term: ``num_items_in_batch`` (label positions) plus the transfer
        positions, both over the accumulated batch; None when Trainer gave no count (the terms then divide by
        this micro-batch's own counts) or no row lacks labels. ``transfer``: this micro-batch's transfer
        positions."""
        if num_items_in_batch is None or transfer is None:
            return None
        if training and self.accumulated_transfer is not None:
            extra = self.accumulated_transfer
        else:
            extra = transfer.sum()
            if not training and self.scales_by_processes(True):
                extra = self.accelerator.gather(extra.to(self.args.device).reshape(1)).sum()
        if not bool(extra > 0):
            return None  # no transfer row anywhere in the step: the KD term divides by num_items_in_batch
        return torch.as_tensor(num_items_in_batch, device=extra.device) + extra

    def num_tokens(self, model_inputs: dict[str, Any], training: bool, accumulated: bool) -> torch.Tensor:
        """The denominator of every feature term on this batch (at least 1).

        ``accumulated``: the logit terms are divided by counts over the whole accumulated batch, so these are
        too; in evaluation, where Trainer counts ``num_items_in_batch`` over all processes and the loss is
        multiplied by their number, the per-process token count is gathered the same way.
        """
        if accumulated and training and self.accumulated_tokens is not None:
            count = self.accumulated_tokens
        else:
            count = attended_tokens(model_inputs)
            if accumulated and not training and self.scales_by_processes(True):
                count = self.accelerator.gather(count.to(self.args.device).reshape(1)).sum()
        return count.clamp_min(1)
