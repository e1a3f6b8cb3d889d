"""How every term is normalised, in one place.

Logit terms divide by ``num_items_in_batch`` (Trainer's count of label positions over all gradient-accumulation
micro-batches, and over all processes with ``average_tokens_across_devices``). Feature terms divide by the
attended tokens counted the same way (:meth:`Normalization.num_tokens`). Where the count spans processes, each
process's loss is a partial sum and DDP averages gradients, so the loss is multiplied by the number of
processes (:meth:`Normalization.scale_loss`), as Trainer does.
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from transformers import TrainingArguments


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
