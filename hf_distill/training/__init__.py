"""What a training run rests on besides the losses: checkpoints that survive a kill (``checkpoints``),
torchvision-style tuple batches (``tuple_batches``), ragged rows padded into tensors (``padding``),
the teacher's placement under DDP / DeepSpeed / FSDP (``placement``), task preprocessing (``preprocessing``)
and the metrics a Trainer's ``compute_metrics`` calls (``metrics``)."""

from hf_distill.training.metrics import accuracy_f1, agreement, perplexity, seqeval_metrics
from hf_distill.training.preprocessing import (
    chunk_for_causal_lm,
    tokenize_and_align_labels,
    tokenize_for_classification,
)
from hf_distill.training.tuple_batches import TupleCollator

__all__ = [
    "TupleCollator",
    "accuracy_f1",
    "agreement",
    "chunk_for_causal_lm",
    "perplexity",
    "seqeval_metrics",
    "tokenize_and_align_labels",
    "tokenize_for_classification",
]
