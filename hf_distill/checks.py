"""Set-up checks of a distillation run: arguments, models, tokenizers and data, before any work is done.

Each refusal is written once here and raised by the trainer (and the modes) at construction, with what is
wrong, why it matters, and how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.losses.divergences import IGNORE_INDEX
from hf_distill.model_kind import (
    AUTO_CLASSES,
    CAUSAL_LM,
    GENERIC,
    SEQUENCE_CLASSIFICATION,
    TOKEN_CLASSIFICATION,
    detect_head_kind,
    output_vocab_size,
)
from hf_distill.terms.feature_maps import find_layer
from hf_distill.token_alignment import require_offsets

logger = logging.getLogger(__name__)
SPLITS = ("train_dataset", "eval_dataset")
T = TypeVar("T")


def check_trainer_inputs(args: Any, model: nn.Module | None, datasets: dict[str, Any]) -> None:
    """The arguments class, the student, and non-empty datasets."""
    if not isinstance(args, DistillationTrainingArguments):
        raise TypeError(
            f"DistillationTrainer needs DistillationTrainingArguments, got {type(args).__name__}; build "
            "the arguments with hf_distill.DistillationTrainingArguments(...) so the distillation knobs exist."
        )
    if model is None:
        raise ValueError(
            "DistillationTrainer needs a student `model`; build one with hf_distill.students.build."
        )
    for split in SPLITS:
        dataset = datasets.get(split)
        if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
            raise ValueError(
                f"The {split} is empty, so there is nothing to distill on; check the split name and any "
                "filtering (e.g. max_length or label filters) that produced it."
            )
    check_train_labels(args, datasets.get("train_dataset"), custom_collator="data_collator" in datasets)


LABEL_COLUMNS = ("labels", "label", "label_ids")


def has_label(value: Any) -> bool:
    """Whether a dataset cell holds a label: a value other than -100, or a list holding one (token labels)."""
    if isinstance(value, (list, tuple)):
        return any(has_label(v) for v in value)
    return value is not None and value != IGNORE_INDEX


def any_label(dataset: Any, column: str, block: int = 1024) -> bool:
    """Whether any row of ``column`` holds a label, read a block of rows at a time (labeled rows usually come
    first: a large training set is not read whole)."""
    return any(
        has_label(v)
        for start in range(0, len(dataset), block)
        for v in dataset[start : start + block][column]
    )


def check_train_labels(args: DistillationTrainingArguments, dataset: Any, custom_collator: bool) -> None:
    """A task term (``alpha < 1``) needs labeled rows: refuse, before training, a training set whose label
    column is all -100 (a transfer set alone), or one without a label column that no custom collator could
    fill in (``DataCollatorForLanguageModeling`` makes causal-LM labels from the inputs)."""
    names = getattr(dataset, "column_names", None)
    if args.alpha >= 1.0 or not isinstance(names, list):
        return
    columns = [c for c in (args.label_names or LABEL_COLUMNS) if c in names]
    if not columns:
        if custom_collator:
            return
        problem = f"has no label column (it has {names})"
    elif not hasattr(dataset, "__len__") or any_label(dataset, columns[0]):
        # A streamed (iterable) dataset is not read ahead: scanning it would consume it.
        return
    else:
        problem = (
            f"has no label anywhere: every value of its {columns[0]!r} column is -100 (rows without labels)"
        )
    raise ValueError(
        f"The train_dataset {problem}, but alpha={args.alpha} gives the task loss weight "
        f"{1 - args.alpha:.2f}, which would learn from nothing. Set alpha=1.0 to learn from the teacher's soft "
        "targets alone (a transfer set), or add labeled rows to the training set."
    )


def check_cache_replaces_teacher(cached: Sequence[str | None], has_eval_dataset: bool) -> None:
    """Without ``teacher_model``, the datasets' cached teacher outputs must stand in for every teacher call.
    ``cached``: the cache kind of the train and eval datasets (:func:`hf_distill.cache.build.cached_teacher_kind`)."""
    if not cached[0]:
        raise ValueError(
            "DistillationTrainer needs a `teacher_model` (a model, or a path / Hub id of a fine-tuned one), or "
            "a train_dataset that carries the teacher's outputs (hf-distill cache-teacher / "
            "hf_distill.cache.build.cache_teacher_outputs)."
        )
    if has_eval_dataset and not cached[1]:
        raise ValueError(
            "No teacher_model is given and the train_dataset carries cached teacher outputs, but the "
            "eval_dataset does not, so evaluation would have no teacher; cache the eval split too, or pass "
            "teacher_model."
        )


def refuse_features_from_cache(args: DistillationTrainingArguments, where: str, has_teacher: bool) -> None:
    """Cached teacher outputs hold logits only: refuse feature terms on data that carries them."""
    asked = args.feature_weights
    if not asked:
        return
    knobs = ", ".join(f"{name}={value}" for name, value in asked.items())
    fix = "train those batches with the live teacher" if has_teacher else "pass teacher_model"
    raise ValueError(
        f"{where} carries cached teacher outputs, which hold no teacher hidden states, attention maps or values, "
        f"but {knobs} match them{'' if has_teacher else ', and no teacher_model is given'}; set "
        f"{' and '.join(asked)} to 0, or {fix}."
    )


def check_kd_implementation(args: DistillationTrainingArguments, head_kind: str) -> None:
    if head_kind != CAUSAL_LM and args.kd_loss_implementation in ("chunked", "fused"):
        raise ValueError(
            f"kd_loss_implementation={args.kd_loss_implementation!r} is for causal LMs (it avoids the full "
            f"vocabulary logits), but the student is a {head_kind} model; use 'auto' or 'plain'."
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
                "Give the student the teacher's tokenizer (e.g. build it with hf_distill.students.build), or set "
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
    head_kind: str, student: nn.Module, teacher: nn.Module | None, tokenizer: Any, teacher_tokenizer: Any
) -> int | None:
    """Checks before any work that the two models can be compared; returns the vocab size to slice to.
    Without a teacher (cached outputs) the cache's width is checked against the student's per batch."""
    check_tokenizers(tokenizer, teacher_tokenizer)
    check_has_head(student, "student", "teacher", GENERIC if teacher is None else detect_head_kind(teacher))
    if teacher is None:
        return None
    check_has_head(teacher, "teacher", "student", head_kind)
    teacher_kind = detect_head_kind(teacher)
    if head_kind != GENERIC and teacher_kind != GENERIC and teacher_kind != head_kind:
        raise ValueError(
            f"The student is a {head_kind} model ({type(student).__name__}) but the teacher is a "
            f"{teacher_kind} model ({type(teacher).__name__}); both need the same kind of head."
        )
    if head_kind in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION):
        check_label_spaces(student, teacher)
    if head_kind == CAUSAL_LM:
        return shared_vocab_size(student, teacher, tokenizer)
    return None


def check_hidden_state_models(student: nn.Module, teacher: nn.Module | None) -> None:
    """Hidden-state matching reads ``num_hidden_layers`` and ``hidden_size`` from both configs: a plain module
    or a vision model with per-stage widths (ResNet's ``hidden_sizes``) has neither."""
    for who, model in (("student", student), ("teacher", teacher)):
        config = getattr(model, "config", None)
        missing = [k for k in ("num_hidden_layers", "hidden_size") if not hasattr(config, k)]
        if config is None or missing:
            what = (
                "is a plain module without a Transformers config"
                if config is None
                else (f"has a {type(config).__name__} without {' or '.join(missing)}")
            )
            raise ValueError(
                f"hidden_state_weight > 0 matches hidden states layer by layer, but the {who} "
                f"({type(model).__name__}) {what}, so its depth and width are unknown. For CNNs and other "
                "vision models use feature-map matching: feature_map_weight > 0 with feature_layers="
                "'student_layer:teacher_layer' (module names); or set hidden_state_weight=0."
            )


def check_feature_terms(
    args: DistillationTrainingArguments, student: nn.Module, teacher: nn.Module | None
) -> None:
    """Hidden-state and attention matching need Transformers models (depth, width, attention maps); feature-map
    matching needs layers of those names in both models."""
    if args.hidden_state_weight > 0:
        check_hidden_state_models(student, teacher)
    for student_layer, teacher_layer in args.feature_layer_pairs if args.feature_map_weight > 0 else ():
        find_layer(student, student_layer, "student")
        if teacher is not None:
            find_layer(teacher, teacher_layer, "teacher")
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


# ---- the teacher: a separate model, with a head, from a path that exists -------------------------------------


def _storage_key(tensor: torch.Tensor) -> tuple[str, int] | None:
    # Parameters share memory exactly when they live in the same storage (same device, same base address),
    # whatever their names or Parameter objects; empty and meta storages have no address to share.
    storage = tensor.untyped_storage()
    address = storage.data_ptr() if storage.nbytes() else 0
    return (str(tensor.device), address) if address else None


def shared_parameters(student: nn.Module, teacher: nn.Module) -> dict[str, str]:
    """``{student parameter name: teacher parameter name}`` for each student parameter stored in the same memory
    as a teacher parameter (the same ``Parameter``, or one built on the other's data)."""
    teacher_keys: dict[tuple[str, int], str] = {}
    for name, parameter in teacher.named_parameters(remove_duplicate=False):
        key = _storage_key(parameter)
        if key is not None:
            teacher_keys.setdefault(key, name)
    shared = {}
    for name, parameter in student.named_parameters(remove_duplicate=False):
        key = _storage_key(parameter)
        if key in teacher_keys:
            shared[name] = teacher_keys[key]
    return shared


def shared_parts(student: nn.Module, teacher: nn.Module, shared: dict[str, str]) -> list[str]:
    """The shared parts named for a person: the outermost student submodules whose parameters are all shared
    (with the teacher's name for the same module when it differs), then any other shared parameter."""
    teacher_names = {id(module): name for name, module in teacher.named_modules()}
    parts, covered = [], set()
    for name, module in student.named_modules():
        names = [f"{name}.{p}" if name else p for p, _ in module.named_parameters(remove_duplicate=False)]
        if not names or covered.issuperset(names) or not all(n in shared for n in names):
            continue
        covered.update(names)
        other = teacher_names.get(id(module))
        label = f"'{name}'" if name else "the whole model"
        parts.append(label if other is None or other == name else f"{label} (the teacher's '{other}')")
    for name in shared:
        if name not in covered:
            other = shared[name]
            parts.append(f"'{name}'" if other == name else f"'{name}' (the teacher's '{other}')")
    return parts


def check_separate_models(
    student: nn.Module, teacher: nn.Module, *, role: str = "teacher_model", trained: bool = False
) -> None:
    """Refuses a teacher that is the student, or that shares any parameter's memory with it.

    ``role`` names the argument in the message (``teacher_model``, ``teacher_models[1]``, ``peer_model``);
    ``trained``: the other model is trained too (mutual learning) instead of frozen.
    """
    if student is teacher:
        consequence = (
            "a second student trained on its own predictions: one model stepped twice per step, teaching itself"
            if trained
            else "frozen by the trainer (requires_grad=False), so nothing in the student would train and the "
            "first backward would fail with 'element 0 of tensors does not require grad'"
        )
        raise ValueError(
            f"{role} is the student itself (the same object): it would be {consequence}. Pass a separate model: "
            "a fine-tuned teacher, or copy.deepcopy(model) for a copy of its current weights "
            "(SelfDistillationTrainer keeps such a copy moving with the student)."
        )
    shared = shared_parameters(student, teacher)
    if not shared:
        return
    if trained:
        why = (
            "Both are trained as separate models, so a shared part would take both students' gradients and sit "
            "twice in the optimizer"
        )
        fix = f"build {role} from its own weights (e.g. copy.deepcopy)"
    else:
        why = (
            "The trainer freezes the teacher (requires_grad=False) and must leave it unchanged, so a shared "
            "part would silently stop training in the student"
        )
        fix = "give the student its own copy, e.g. student.bert.embeddings = copy.deepcopy(teacher.bert.embeddings)"
    raise ValueError(
        f"The student shares {len(shared)} parameter tensor(s) with {role} (the same memory): "
        f"{', '.join(shared_parts(student, teacher, shared))}. {why}. Instead, {fix}."
    )


def headless_model(model: nn.Module) -> bool:
    """A Transformers base model (``BertModel``, ``GPT2Model``): the class ``AutoModel`` loads for its model
    type, which returns hidden states and no logits."""
    if not isinstance(model, PreTrainedModel):
        return False
    names = MODEL_MAPPING_NAMES.get(getattr(model.config, "model_type", None)) or ()
    return type(model).__name__ in ((names,) if isinstance(names, str) else tuple(names))


def check_has_head(model: nn.Module, who: str, other: str, head_kind: str) -> None:
    """Refuses the ``who`` model when it has no task head; ``head_kind``, the ``other`` model's, names its Auto class."""
    if not headless_model(model):
        return
    if head_kind in AUTO_CLASSES:
        loader = f"{AUTO_CLASSES[head_kind].__name__}.from_pretrained(...), the {other}'s kind of head ({head_kind})"
    else:
        loader = "the Auto class of your task: " + ", ".join(c.__name__ for c in AUTO_CLASSES.values())
    raise ValueError(
        f"The {who} is a {type(model).__name__}, the bare {model.config.model_type} model without a task head: "
        f"it returns hidden states, not the logits that distillation compares. Load it with {loader}. A new "
        "(randomly initialised) head must be fine-tuned first, unless alpha=0 and only hidden states or "
        "attention are matched."
    )


def check_cross_tokenizer_setup(
    args: DistillationTrainingArguments,
    head_kind: str,
    tokenizer: Any,
    teacher_tokenizer: Any,
    cached: list[str | None],
) -> None:
    """Before any work: the tokenizers (both given, both fast), a causal LM, and a cross-tokenizer cache
    only with a cross-tokenizer loss."""
    if not args.cross_tokenizer_loss:
        if "cross_tokenizer" in cached:
            raise ValueError(
                "The dataset carries a cross-tokenizer teacher cache (xtok_teacher_* columns), which holds the "
                "teacher's outputs on its own tokenization, but cross_tokenizer_loss is not set; set "
                "cross_tokenizer_loss='aligned' (or 'uld') and pass teacher_processing_class."
            )
        return
    check_tokenizers(tokenizer, teacher_tokenizer, args.cross_tokenizer_loss)
    if head_kind != CAUSAL_LM:
        raise ValueError(
            f"cross_tokenizer_loss={args.cross_tokenizer_loss!r} is for causal LMs (next-token distributions "
            f"over two vocabularies), but the student is a {head_kind} model; classifiers share their label set "
            "whatever the tokenizers, so leave cross_tokenizer_loss unset."
        )
