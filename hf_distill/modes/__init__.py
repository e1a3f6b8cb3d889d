"""Advanced distillation modes, one per module, each built on the core's public interfaces: several teachers,
self-distillation, mutual learning, on-policy / sequence-level distillation for causal LMs, and multi-task
distillation (one encoder, a head and a teacher per task)."""

from hf_distill.modes.multi_task import (
    MultiTaskCollator,
    MultiTaskDataset,
    MultiTaskDistillationTrainer,
    MultiTaskStudent,
    TaskBatchSampler,
)
from hf_distill.modes.multi_teacher import MultiTeacherDistillationTrainer, MultiTeacherTrainingArguments
from hf_distill.modes.mutual import MutualLearningTrainer
from hf_distill.modes.on_policy import (
    OnPolicyDistillationTrainer,
    OnPolicyDistillationTrainingArguments,
    PromptCompletionCollator,
    tokenize_prompt_completion,
)
from hf_distill.modes.self_distillation import SelfDistillationTrainer, SelfDistillationTrainingArguments
from hf_distill.modes.sequence_kd import generate_teacher_completions

__all__ = [
    "MultiTaskCollator",
    "MultiTaskDataset",
    "MultiTaskDistillationTrainer",
    "MultiTaskStudent",
    "MultiTeacherDistillationTrainer",
    "MultiTeacherTrainingArguments",
    "MutualLearningTrainer",
    "OnPolicyDistillationTrainer",
    "OnPolicyDistillationTrainingArguments",
    "PromptCompletionCollator",
    "SelfDistillationTrainer",
    "SelfDistillationTrainingArguments",
    "TaskBatchSampler",
    "generate_teacher_completions",
    "tokenize_prompt_completion",
]
