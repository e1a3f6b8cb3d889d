"""Pure distillation losses: functions of tensors, no models, no trainer.

- ``divergences``: the per-position divergences between student and teacher distributions (forward / reverse
  KL, JSD, skew KLs, TVD, MSE, soft cross-entropy), their masking and reduction, and the task cross-entropy;
- ``topk``: the same divergences against a teacher kept as its top-k logits plus one tail bucket;
- ``cross_vocabulary``: ULD and the aligned loss between models with different tokenizers;
- ``fused``: KD from the last hidden states and the LM heads without materialising the logits.
"""

from hf_distill.losses.divergences import (
    IGNORE_INDEX,
    PER_POSITION_LOSSES,
    REDUCTIONS,
    distillation_loss,
    loss_kwargs,
    per_position_forward_kl,
    per_position_jsd,
    per_position_mse,
    per_position_reverse_kl,
    per_position_skew_forward_kl,
    per_position_skew_reverse_kl,
    per_position_soft_cross_entropy,
    per_position_tvd,
    reduce_positions,
    task_cross_entropy,
)
from hf_distill.losses.topk import topk_distillation_loss

__all__ = [
    "IGNORE_INDEX",
    "PER_POSITION_LOSSES",
    "REDUCTIONS",
    "distillation_loss",
    "loss_kwargs",
    "per_position_forward_kl",
    "per_position_jsd",
    "per_position_mse",
    "per_position_reverse_kl",
    "per_position_skew_forward_kl",
    "per_position_skew_reverse_kl",
    "per_position_soft_cross_entropy",
    "per_position_tvd",
    "reduce_positions",
    "task_cross_entropy",
    "topk_distillation_loss",
]
