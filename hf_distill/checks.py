"""Set-up checks of a distillation run: arguments, models, tokenizers and data, before any work is done.

Each refusal is written once here and raised by the trainer (and the modes) at construction, with what is
wrong, why it matters, and how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from torch import nn

from .arguments import DistillationTrainingArguments
from .model_kind import (
    CAUSAL_LM,
    GENERIC,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    detect_task,
    output_vocab_size,
)
from .token_alignment import require_offsets

logger = logging.getLogger(__name__)
SPLITS = ("train_dataset", "eval_dataset")


def check_trainer_inputs(args: Any, model: nn.Module | None, datasets: dict[str, Any]) -> None:
    """The arguments class, the student, and non-empty datasets."""
    if not isinstance(args, DistillationTrainingArguments):
        raise TypeError(
            f"DistillationTrainer needs DistillationTrainingArguments, got {type(args).__name__}; build "
            "the arguments with hf_distill.DistillationTrainingArguments(...) so the distillation knobs exist."
        )
    if model is None:
        raise ValueError("DistillationTrainer needs a student `model`; build one with hf_distill.student.")
    for split in SPLITS:
        dataset = datasets.get(split)
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(
                f"The {split} is empty, so there is nothing to distill on; check the split name and any "
                "filtering (e.g. max_length or label filters) that produced it."
            )


def check_cache_replaces_teacher(cached: Sequence[str | None], has_eval_dataset: bool) -> None:
    """Without ``teacher_model``, the datasets' cached teacher outputs must stand in for every teacher call.
    ``cached``: the cache kind of the train and eval datasets (:func:`hf_distill.teacher_cache.cached_teacher_kind`)."""
    if not cached[0]:
        raise ValueError(
            "DistillationTrainer needs a `teacher_model` (a model, or a path / Hub id of a fine-tuned one), or "
            "a train_dataset that carries the teacher's outputs (hf-distill cache-teacher / "
            "hf_distill.teacher_cache.cache_teacher_outputs)."
        )
    if has_eval_dataset and not cached[1]:
        raise ValueError(
            "No teacher_model is given and the train_dataset carries cached teacher outputs, but the "
            "eval_dataset does not, so evaluation would have no teacher; cache the eval split too, or pass "
            "teacher_model."
        )


def refuse_features_from_cache(args: DistillationTrainingArguments, where: str, has_teacher: bool) -> None:
    """Cached teacher outputs hold logits only: refuse feature terms on data that carries them."""
    asked = {
        name: getattr(args, name)
        for name in ("hidden_state_weight", "attention_weight", "value_relation_weight")
        if getattr(args, name) > 0
    }
    if not asked:
        return
    knobs = ", ".join(f"{name}={value}" for name, value in asked.items())
    fix = "train those batches with the live teacher" if has_teacher else "pass teacher_model"
    raise ValueError(
        f"{where} carries cached teacher outputs, which hold no teacher hidden states, attention maps or values, "
        f"but {knobs} match them{'' if has_teacher else ', and no teacher_model is given'}; set "
        f"{' and '.join(asked)} to 0, or {fix}."
    )


def check_kd_implementation(args: DistillationTrainingArguments, task: str) -> None:
    if task != CAUSAL_LM and args.kd_loss_implementation in ("chunked", "fused"):
        raise ValueError(
            f"kd_loss_implementation={args.kd_loss_implementation!r} is for causal LMs (it avoids the full "
            f"vocabulary logits), but the student is a {task} model; use 'auto' or 'plain'."
        )


def is_default_label_map(id2label: dict | None) -> bool:
    return not id2label or all(str(v) == f"LABEL_{k}" for k, v in id2label.items())


def check_tokenizers(tokenizer: Any, teacher_tokenizer: Any, cross_tokenizer_loss: str | None = None) -> None:
    """Same vocabulary (``cross_tokenizer_loss`` None), or both tokenizers given and fast (offsets) for a
    cross-tokenizer loss."""
    if cross_tokenizer_loss is not None:
        for given, who, argument in (
            (teacher_tokenizer, "teacher", "teacher_processing_class"),
            (tokenizer, "student", "processing_class"),
        ):
            if given is None:
                raise ValueError(
                    f"cross_tokenizer_loss={cross_tokenizer_loss!r} needs the {who}'s tokenizer as {argument}: "
                    "each text is tokenized by both tokenizers and their vocabularies are mapped onto each other. "
                    f"Pass DistillationTrainer(..., {argument}=AutoTokenizer.from_pretrained(<the {who}>))."
                )
            require_offsets(given, who)
        return
    if teacher_tokenizer is not None and tokenizer is not None and hasattr(tokenizer, "get_vocab"):
        if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(
                "The teacher's tokenizer and the student's tokenizer have different vocabularies, so the "
                "same token id means different text to each and their distributions cannot be compared. "
                "Give the student the teacher's tokenizer (e.g. build it with hf_distill.student), or set "
                "cross_tokenizer_loss='aligned' (or 'uld') to distil across tokenizers."
            )


def check_label_spaces(student: nn.Module, teacher: nn.Module) -> None:
    """Classifiers must share the label set, in the same order."""
    student_config, teacher_config = getattr(student, "config", None), getattr(teacher, "config", None)
    if not student_config or not teacher_config:
        return
    if student_config.num_labels != teacher_config.num_labels:
        raise ValueError(
            f"The student has num_labels={student_config.num_labels} but the teacher has "
            f"num_labels={teacher_config.num_labels}; distillation compares their label distributions, "
            "so build the student with the teacher's num_labels, id2label and label2id."
        )
    s_map, t_map = student_config.id2label, teacher_config.id2label
    if not is_default_label_map(s_map) and not is_default_label_map(t_map) and s_map != t_map:
        raise ValueError(
            f"The student's label map {s_map} differs from the teacher's {t_map}: the same class index "
            "would mean different labels. Copy the teacher's id2label / label2id into the student."
        )
    problem_type = getattr(student_config, "problem_type", None)
    if problem_type in ("regression", "multi_label_classification"):
        raise ValueError(
            f"problem_type={problem_type!r} is not supported yet: the losses compare softmax "
            "distributions over classes. Use single-label classification."
        )


def shared_vocab_size(student: nn.Module, teacher: nn.Module, tokenizer: Any) -> int | None:
    """The logits both causal LMs share: None when their output sizes agree, the tokenizer's size when they
    differ only by padding rows beyond it; otherwise refused."""
    student_vocab, teacher_vocab = output_vocab_size(student), output_vocab_size(teacher)
    if student_vocab is None or teacher_vocab is None or student_vocab == teacher_vocab:
        return None
    real_vocab = len(tokenizer) if tokenizer is not None and hasattr(tokenizer, "__len__") else None
    if real_vocab is not None and real_vocab <= min(student_vocab, teacher_vocab):
        logger.info(
            "Student vocab %d and teacher vocab %d differ only by padding beyond the tokenizer's %d tokens; "
            "comparing the first %d logits.",
            student_vocab,
            teacher_vocab,
            real_vocab,
            real_vocab,
        )
        return real_vocab
    raise ValueError(
        f"The student's vocabulary has {student_vocab} entries and the teacher's {teacher_vocab}, "
        f"and the tokenizer ({real_vocab if real_vocab is not None else 'not given'} tokens) does "
        "not explain the difference as padding. Teacher and student must share a tokenizer; pass "
        "processing_class=tokenizer if one of the models only pads its embedding matrix."
    )


def check_compatibility(
    task: str, student: nn.Module, teacher: nn.Module | None, tokenizer: Any, teacher_tokenizer: Any
) -> int | None:
    """Checks before any work that the two models can be compared; returns the vocab size to slice to.
    Without a teacher (cached outputs) the cache's width is checked against the student's per batch."""
    check_tokenizers(tokenizer, teacher_tokenizer)
    if teacher is None:
        return None
    teacher_task = detect_task(teacher)
    if task != GENERIC and teacher_task != GENERIC and teacher_task != task:
        raise ValueError(
            f"The student is a {task} model ({type(student).__name__}) but the teacher is a "
            f"{teacher_task} model ({type(teacher).__name__}); both need the same kind of head."
        )
    if task in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION):
        check_label_spaces(student, teacher)
    if task == CAUSAL_LM:
        return shared_vocab_size(student, teacher, tokenizer)
    return None


def check_feature_terms(
    args: DistillationTrainingArguments, student: nn.Module, teacher: nn.Module | None
) -> None:
    """Hidden-state and attention matching need Transformers models (depth, width, attention maps)."""
    if args.hidden_state_weight > 0 and (
        getattr(student, "config", None) is None or getattr(teacher, "config", None) is None
    ):
        raise ValueError(
            "hidden_state_weight > 0 needs models with a Transformers config (to know their depth and "
            "width and to ask for output_hidden_states); set hidden_state_weight=0 for plain modules."
        )
    if not args.matches_attention:
        return
    s_config, t_config = getattr(student, "config", None), getattr(teacher, "config", None)
    if s_config is None or t_config is None:
        raise ValueError(
            "attention_weight / value_relation_weight > 0 needs models with a Transformers config (to know "
            "their depth and attention); set both to 0 for plain modules."
        )
    if args.attention_weight > 0:
        for who, config in (("student", s_config), ("teacher", t_config)):
            implementation = getattr(config, "_attn_implementation", None)
            if implementation not in (None, "eager"):
                raise ValueError(
                    f"attention_weight > 0 needs the attention maps, but the {who} uses "
                    f"attn_implementation={implementation!r}, which does not return them. Load it with "
                    "from_pretrained(..., attn_implementation='eager') or call "
                    "model.set_attn_implementation('eager') before building the trainer."
                )
        dropout = getattr(s_config, "attention_probs_dropout_prob", getattr(s_config, "attention_dropout", 0))
        if dropout:
            logger.warning(
                "The student's attention dropout is %s: its attention maps are returned after dropout, so the "
                "attention loss compares dropped maps. Build the student with attention dropout 0 for exact "
                "matching.",
                dropout,
            )
