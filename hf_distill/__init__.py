"""hf_distill: knowledge distillation for Hugging Face Transformers."""

from .arguments import DistillationTrainingArguments
from .losses import PER_POSITION_LOSSES, distillation_loss, task_cross_entropy
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = [
    "PER_POSITION_LOSSES",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "__version__",
    "distillation_loss",
    "task_cross_entropy",
]
