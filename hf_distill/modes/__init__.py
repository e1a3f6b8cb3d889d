"""Advanced distillation modes, one per module: attention matching (used by the base trainer), several
teachers, self-distillation, mutual learning, on-policy / sequence-level distillation for causal LMs, and
multi-task distillation (one encoder, a head and a teacher per task).

The trainers are imported on first use: the base trainer imports ``modes.attention``, so importing the
trainer subclasses here eagerly would be circular.
"""

from importlib import import_module

_EXPORTS = {
    "MultiTeacherDistillationTrainer": "multi_teacher",
    "MultiTeacherTrainingArguments": "multi_teacher",
    "MultiTaskCollator": "multi_task",
    "MultiTaskDataset": "multi_task",
    "MultiTaskDistillationTrainer": "multi_task",
    "MultiTaskStudent": "multi_task",
    "TaskBatchSampler": "multi_task",
    "MutualLearningTrainer": "mutual",
    "OnPolicyDistillationTrainer": "on_policy",
    "OnPolicyDistillationTrainingArguments": "on_policy",
    "PromptCompletionCollator": "on_policy",
    "tokenize_prompt_completion": "on_policy",
    "generate_teacher_completions": "sequence_kd",
    "SelfDistillationTrainer": "self_distillation",
    "SelfDistillationTrainingArguments": "self_distillation",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
