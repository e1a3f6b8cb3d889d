"""Advanced distillation modes, one per module: attention matching, several teachers, self-distillation,
mutual learning and on-policy distillation for causal LMs."""

from .multi_teacher import MultiTeacherDistillationTrainer, MultiTeacherTrainingArguments
from .mutual import MutualLearningTrainer
from .self_distillation import SelfDistillationTrainer, SelfDistillationTrainingArguments

__all__ = [
    "MultiTeacherDistillationTrainer",
    "MultiTeacherTrainingArguments",
    "MutualLearningTrainer",
    "SelfDistillationTrainer",
    "SelfDistillationTrainingArguments",
]
