"""``DistillationTrainer``: a ``transformers.Trainer`` that learns from a frozen teacher."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    Trainer,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .arguments import DistillationTrainingArguments
from .chunked import (
    forward_with_last_hidden,
    fused_linear_distillation_loss,
    lm_head_of,
    resolve_implementation,
)
from .distributed import prepare_teacher
from .hidden_states import HiddenStateMatcher, check_layer_map, uniform_layer_map
from .losses import distillation_loss, task_cross_entropy
from .modes.attention import (
    ValueCapture,
    attention_layer_pairs,
    attention_map_loss,
    value_relation_loss,
)
from .teacher_cache import (
    CACHE_COLUMNS,
    TEACHER_LOGITS,
    TEMPERATURE,
    TOPK_LOGITS,
    TeacherCacheCollator,
    cached_teacher_kind,
    check_cache_matches,
    topk_chunks,
    topk_distillation_loss,
)
from .trainer_card import check_no_teacher_files, write_trainer_card

logger = logging.getLogger(__name__)

CAUSAL_LM, TOKEN_CLASSIFICATION, SEQUENCE_CLASSIFICATION, GENERIC = (
    "causal_lm",
    "token_classification",
    "sequence_classification",
    "generic",
)
_AUTO_CLASS = {
    CAUSAL_LM: AutoModelForCausalLM,
    TOKEN_CLASSIFICATION: AutoModelForTokenClassification,
    SEQUENCE_CLASSIFICATION: AutoModelForSequenceClassification,
}
# The projection heads of hidden-state matching live beside the student in each checkpoint.
DISTILLATION_MODULES_NAME = "distillation_modules.pt"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def detect_task(model: nn.Module) -> str:
    """The task a model's head serves, from its class name; ``generic`` for any other module returning logits."""
    name = type(model).__name__
    if name.endswith("ForCausalLM") or name.endswith("LMHeadModel"):
        return CAUSAL_LM
    if name.endswith("ForTokenClassification"):
        return TOKEN_CLASSIFICATION
    if name.endswith("ForSequenceClassification"):
        return SEQUENCE_CLASSIFICATION
    return GENERIC


def _logits_of(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, dict) or hasattr(outputs, "logits"):
        return outputs["logits"]
    if isinstance(outputs, (tuple, list)):
        return outputs[0]
    raise TypeError(
        f"The model returned {type(outputs).__name__}; distillation needs logits: return a tensor, a tuple "
        "whose first item is the logits, or an output with a `logits` field."
    )


def _output_vocab_size(model: nn.Module) -> int | None:
    get = getattr(model, "get_output_embeddings", None)
    embeddings = get() if callable(get) else None
    if embeddings is not None and hasattr(embeddings, "weight"):
        return embeddings.weight.shape[0]
    config = getattr(model, "config", None)
    return getattr(config, "vocab_size", None)


def align_for_distillation(
    task: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    attention_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Pairs each prediction with its target: ``(student, teacher, labels, mask)`` for the losses.

    Causal LMs are shifted (position t predicts token t+1, so the last prediction and the first label go).
    Without labels, token-level positions are masked by the attention mask; with labels, by ``labels != -100``
    (``mask`` is then None).
    """
    mask = None
    if task == CAUSAL_LM:
        student_logits, teacher_logits = student_logits[:, :-1], teacher_logits[:, :-1]
        if labels is not None:
            labels = labels[:, 1:]
        elif attention_mask is not None:
            mask = attention_mask[:, 1:].bool()
    elif labels is None and attention_mask is not None and student_logits.dim() == 3:
        mask = attention_mask.bool()
    return student_logits, teacher_logits, labels, mask


def _attended_tokens(batch: Any) -> torch.Tensor | None:
    """Tokens that hidden-state matching averages over: attended positions, or all of ``input_ids``."""
    if not hasattr(batch, "keys"):
        return None
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].sum()
    if batch.get("input_ids") is not None:
        return torch.tensor(batch["input_ids"].numel())
    return None


def _is_default_label_map(id2label: dict | None) -> bool:
    return not id2label or all(str(v) == f"LABEL_{k}" for k, v in id2label.items())


class DistillationTrainer(Trainer):
    """Trains ``model`` (the student) to match ``teacher_model`` while also fitting the task labels.

    Args:
        model: the student, a ``PreTrainedModel`` or any ``nn.Module`` returning logits.
        teacher_model: a model, or a path / Hub id loaded with the Auto class of the student's task; None
            when the train (and eval) dataset carry the teacher's cached outputs (:mod:`hf_distill.teacher_cache`).
        args: :class:`DistillationTrainingArguments`.
        teacher_processing_class: the teacher's tokenizer, when it may differ from the student's; the two
            must have the same vocabulary.
        teacher_model_init_kwargs: keyword arguments for ``from_pretrained`` when ``teacher_model`` is a string.
        **kwargs: everything ``transformers.Trainer`` takes (datasets, collator, processing_class, ...).

    The teacher runs in eval mode under ``torch.no_grad`` on the student's device and is never saved. The
    loss ``(1 - alpha) * task + alpha * kd + hidden_state_weight * hidden`` is logged in parts as
    ``loss_task``, ``loss_kd`` and ``loss_hidden``.
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        teacher_model: nn.Module | str | None = None,
        args: DistillationTrainingArguments | None = None,
        *,
        teacher_processing_class: Any = None,
        teacher_model_init_kwargs: dict | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = DistillationTrainingArguments(output_dir="tmp_trainer", report_to="none")
        if not isinstance(args, DistillationTrainingArguments):
            raise TypeError(
                f"DistillationTrainer needs DistillationTrainingArguments, got {type(args).__name__}; build "
                "the arguments with hf_distill.DistillationTrainingArguments(...) so the distillation knobs exist."
            )
        if model is None:
            raise ValueError(
                "DistillationTrainer needs a student `model`; build one with hf_distill.student."
            )
        cached = [
            cached_teacher_kind(getattr(kwargs.get(split), "column_names", None) or ())
            for split in ("train_dataset", "eval_dataset")
        ]
        if teacher_model is None:
            self._check_cache_replaces_teacher(args, cached, kwargs.get("eval_dataset"))
        for split in ("train_dataset", "eval_dataset"):
            dataset = kwargs.get(split)
            if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
                raise ValueError(
                    f"The {split} is empty, so there is nothing to distill on; check the split name and any "
                    "filtering (e.g. max_length or label filters) that produced it."
                )
        self.task = detect_task(model)
        if isinstance(teacher_model, str):
            teacher_model = self._load_teacher(teacher_model, teacher_model_init_kwargs or {})
        if args.label_names is None and not isinstance(model, PreTrainedModel):
            # A plain module's forward has no `labels` argument, so Trainer would drop the column.
            args.label_names = ["labels"]

        self._vocab_size = self._check_compatibility(
            model, teacher_model, kwargs.get("processing_class"), teacher_processing_class
        )
        # ---- large-vocabulary loss and cached teacher outputs (chunked.py, teacher_cache.py) ----
        if self.task != CAUSAL_LM and args.kd_loss_implementation in ("chunked", "fused"):
            raise ValueError(
                f"kd_loss_implementation={args.kd_loss_implementation!r} is for causal LMs (it avoids the full "
                f"vocabulary logits), but the student is a {self.task} model; use 'auto' or 'plain'."
            )
        self._kd_implementation = (
            resolve_implementation(
                args.kd_loss_implementation, model, self._vocab_size or _output_vocab_size(model)
            )
            if self.task == CAUSAL_LM
            else "plain"
        )
        if any(cached) and args.hidden_state_weight > 0:
            raise ValueError(
                "The dataset carries cached teacher outputs, which hold no teacher hidden states, but "
                f"hidden_state_weight={args.hidden_state_weight}; set it to 0 or train with the live teacher."
            )
        # ---- end ----
        super().__init__(model=model, args=args, **kwargs)
        if any(cached):
            # Cache columns of variable length (NER) must be padded along with input_ids.
            padding_side = getattr(kwargs.get("processing_class"), "padding_side", "right")
            self.data_collator = TeacherCacheCollator(self.data_collator, padding_side=padding_side)

        # We normalise every term by num_items_in_batch ourselves; Trainer then neither divides by the
        # accumulation steps again nor skips counting items.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = self.task == CAUSAL_LM
        # No teacher when every batch carries its outputs (checked above): it is never loaded, so its memory
        # is free for the student.
        self.teacher = self._prepare_teacher(teacher_model) if teacher_model is not None else None
        self.hidden_matcher = self._build_hidden_matcher(model, self.teacher)
        self.attention_pairs = self._build_attention_matching(model, self.teacher)
        self._num_tokens_in_batch: torch.Tensor | None = None
        self._loss_parts: dict[str, dict[str, list[torch.Tensor]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._loss_parts_last_step = 0
        self._resumed_from_step = 0

    # ---- set-up ---------------------------------------------------------------------------------------

    def _load_teacher(self, name_or_path: str, init_kwargs: dict) -> nn.Module:
        auto_class = _AUTO_CLASS.get(self.task)
        if auto_class is None:
            raise ValueError(
                f"teacher_model is the string {name_or_path!r}, but the student has no Transformers task head "
                "(causal LM, token or sequence classification) to pick a loader from; pass the teacher as a model."
            )
        return auto_class.from_pretrained(name_or_path, **init_kwargs)

    @staticmethod
    def _check_cache_replaces_teacher(
        args: DistillationTrainingArguments, cached: list, eval_dataset: Any
    ) -> None:
        """Without ``teacher_model`` the datasets' cached teacher outputs must stand in for every teacher call."""
        if not cached[0]:
            raise ValueError(
                "DistillationTrainer needs a `teacher_model` (a model, or a path / Hub id of a fine-tuned one), or "
                "a train_dataset that carries the teacher's outputs (hf-distill cache-teacher / "
                "hf_distill.teacher_cache.cache_teacher_outputs)."
            )
        if eval_dataset is not None and not cached[1]:
            raise ValueError(
                "No teacher_model is given and the train_dataset carries cached teacher outputs, but the "
                "eval_dataset does not, so evaluation would have no teacher; cache the eval split too, or pass "
                "teacher_model."
            )
        if args.matches_attention:
            raise ValueError(
                "attention_weight / value_relation_weight > 0 match the teacher's attention, which a cache does "
                "not hold, and no teacher_model is given; set them to 0 or pass teacher_model."
            )

    def _check_compatibility(
        self, student: nn.Module, teacher: nn.Module | None, tokenizer: Any, teacher_tokenizer: Any
    ) -> int | None:
        """Checks before any work that the two models can be compared; returns the vocab size to slice to.
        Without a teacher (cached outputs) the cache's width is checked against the student's per batch."""
        if teacher_tokenizer is not None and tokenizer is not None and hasattr(tokenizer, "get_vocab"):
            if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
                raise ValueError(
                    "The teacher's tokenizer and the student's tokenizer have different vocabularies, so the "
                    "same token id means different text to each and their distributions cannot be compared. "
                    "Give the student the teacher's tokenizer (e.g. build it with hf_distill.student)."
                )
        if teacher is None:
            return None
        teacher_task = detect_task(teacher)
        if self.task != GENERIC and teacher_task != GENERIC and teacher_task != self.task:
            raise ValueError(
                f"The student is a {self.task} model ({type(student).__name__}) but the teacher is a "
                f"{teacher_task} model ({type(teacher).__name__}); both need the same kind of head."
            )
        student_config = getattr(student, "config", None)
        teacher_config = getattr(teacher, "config", None)
        if self.task in (SEQUENCE_CLASSIFICATION, TOKEN_CLASSIFICATION) and student_config and teacher_config:
            if student_config.num_labels != teacher_config.num_labels:
                raise ValueError(
                    f"The student has num_labels={student_config.num_labels} but the teacher has "
                    f"num_labels={teacher_config.num_labels}; distillation compares their label distributions, "
                    "so build the student with the teacher's num_labels, id2label and label2id."
                )
            s_map, t_map = student_config.id2label, teacher_config.id2label
            if not _is_default_label_map(s_map) and not _is_default_label_map(t_map) and s_map != t_map:
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
        if self.task == CAUSAL_LM:
            student_vocab, teacher_vocab = _output_vocab_size(student), _output_vocab_size(teacher)
            if student_vocab is not None and teacher_vocab is not None and student_vocab != teacher_vocab:
                real_vocab = (
                    len(tokenizer) if tokenizer is not None and hasattr(tokenizer, "__len__") else None
                )
                if real_vocab is not None and real_vocab <= min(student_vocab, teacher_vocab):
                    logger.info(
                        "Student vocab %d and teacher vocab %d differ only by padding beyond the tokenizer's %d "
                        "tokens; comparing the first %d logits.",
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
        return None

    def _prepare_teacher(self, teacher: nn.Module) -> nn.Module:
        teacher.eval()
        teacher.requires_grad_(False)
        if self.args.teacher_dtype is not None:
            teacher.to(_DTYPES[self.args.teacher_dtype])
        # Placed for the backend without being wrapped for training: replicated under DDP, an inference engine
        # under DeepSpeed (sharded with ZeRO-3), sharded with the run's plugin under FSDP (see distributed.py).
        return prepare_teacher(self.accelerator, teacher)

    def _build_hidden_matcher(self, student: nn.Module, teacher: nn.Module) -> nn.Module | None:
        if self.args.hidden_state_weight == 0:
            return None
        s_config, t_config = getattr(student, "config", None), getattr(teacher, "config", None)
        if s_config is None or t_config is None:
            raise ValueError(
                "hidden_state_weight > 0 needs models with a Transformers config (to know their depth and "
                "width and to ask for output_hidden_states); set hidden_state_weight=0 for plain modules."
            )
        num_s, num_t = s_config.num_hidden_layers, t_config.num_hidden_layers
        pairs = self.args.layer_map_pairs or uniform_layer_map(num_s, num_t)
        check_layer_map(pairs, num_s, num_t)
        matcher = HiddenStateMatcher(
            pairs, s_config.hidden_size, t_config.hidden_size, self.args.hidden_state_loss
        )
        matcher.to(self.args.device)
        if self.accelerator.num_processes > 1 and len(list(matcher.parameters())) > 0:
            # Projection gradients must be averaged across processes like the student's.
            matcher = self.accelerator.prepare_model(matcher)
        return matcher

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        if self.hidden_matcher is not None:
            params = [p for p in self.hidden_matcher.parameters() if p.requires_grad]
            if params and not any(p is params[0] for g in optimizer.param_groups for p in g["params"]):
                optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    # ---- the loss -------------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.hidden_matcher is not None:
            # Trainer zeroes only the student's gradients after each optimizer step; without this the
            # projections would step with the running sum of all past gradients.
            self.hidden_matcher.zero_grad(set_to_none=True)
        # Hidden-state matching is normalised by the attended tokens over the whole accumulated batch, the
        # way num_items_in_batch normalises the logit losses, so accumulation does not change the loss.
        counts = [_attended_tokens(b) for b in batch_samples]
        matching = self.hidden_matcher is not None or self.attention_pairs is not None
        if matching and counts and all(c is not None for c in counts):
            count = sum(counts).to(device)
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                count = self.accelerator.gather(count).sum()
            self._num_tokens_in_batch = count
        else:
            self._num_tokens_in_batch = None
        return batch_samples, num_items_in_batch

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # The model's forward does not take the cache columns, but compute_loss reads them: keep them.
        self._signature_columns += [c for c in CACHE_COLUMNS if c not in self._signature_columns]

    def _teacher_outputs(self, model_inputs: dict[str, Any], need_hidden: bool) -> Any:
        self._require_teacher()
        with torch.no_grad():
            return self.teacher(**model_inputs, **self._output_kwargs(need_hidden))

    def _require_teacher(self) -> None:
        if self.teacher is None:
            raise ValueError(
                "This batch carries no cached teacher outputs and the trainer has no teacher_model: every "
                "dataset it trains or evaluates on must be cached (cache_teacher_outputs), or pass teacher_model."
            )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        args = self.args
        labels = inputs.get("labels")
        cache = {k: v for k, v in inputs.items() if k in CACHE_COLUMNS}
        model_inputs = {k: v for k, v in inputs.items() if k != "labels" and k not in cache}
        need_hidden = self.hidden_matcher is not None
        if labels is None and args.alpha < 1.0:
            raise ValueError(
                f"The batch has no `labels`, but alpha={args.alpha} gives the task loss weight "
                f"{1 - args.alpha:.2f}. Add labels to the dataset, or set alpha=1.0 to learn from the teacher only."
            )
        if cache:
            self._check_teacher_cache(cache, model_inputs, need_hidden)
        need_attention = self.attention_pairs is not None
        if cache and need_attention:
            raise ValueError(
                "The batch carries cached teacher outputs, which hold no attention maps or values, but "
                "attention_weight or value_relation_weight is > 0; set them to 0 or train with the live teacher."
            )
        chunked = (
            self._kd_implementation != "plain"
            and not return_outputs
            and not need_hidden
            and not need_attention
        )
        if self.task == CAUSAL_LM and (chunked or TOPK_LOGITS in cache):
            loss, parts, outputs = self._causal_lm_loss(
                model, model_inputs, labels, cache, num_items_in_batch, chunked
            )
            if args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as below
            self._record_loss_parts(parts, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

        # The teacher runs first: under no_grad it frees its activations as it goes, so the step's peak is the
        # student's saved activations alone, not those plus the teacher's working memory, and the student
        # reuses the teacher's freed blocks (BERT-base shapes, CPU: 1.037x -> 1.004x TextBrewer's step).
        if TEACHER_LOGITS in cache:
            teacher_outputs = {"logits": cache[TEACHER_LOGITS]}
        else:
            teacher_outputs = self._teacher_outputs(model_inputs, need_hidden)
        student_outputs = model(**model_inputs, **self._output_kwargs(need_hidden))
        student_logits, teacher_logits = _logits_of(student_outputs), _logits_of(teacher_outputs)
        if TEACHER_LOGITS in cache and teacher_logits.shape[-1] != student_logits.shape[-1]:
            raise ValueError(
                f"The cached teacher logits have {teacher_logits.shape[-1]} classes but the student has "
                f"{student_logits.shape[-1]}; the cache was made by a teacher with another label set. Re-cache "
                "with the teacher of this student's labels."
            )
        if self._vocab_size is not None:
            student_logits = student_logits[..., : self._vocab_size]
            teacher_logits = teacher_logits[..., : self._vocab_size]
        if args.check_teacher_finite and not torch.isfinite(teacher_logits).all():
            raise FloatingPointError(
                f"The teacher's logits hold NaN or inf at global step {self.state.global_step} (batch shape "
                f"{tuple(teacher_logits.shape)}); the distillation target is broken. Check the teacher in "
                "float32 (teacher_dtype), its weights, and the batch's inputs."
            )

        attention_mask = model_inputs.get("attention_mask")
        kd_student, kd_teacher, kd_labels, mask = align_for_distillation(
            self.task, student_logits, teacher_logits, labels, attention_mask
        )
        if kd_labels is not None and kd_labels.shape != kd_student.shape[:-1]:
            raise ValueError(
                f"labels have shape {tuple(kd_labels.shape)} but the logits {tuple(kd_student.shape)}; "
                "for token classification pad labels with -100 to the input length (DataCollatorForTokenClassification)."
            )

        loss_kd = distillation_loss(
            kd_student,
            kd_teacher,
            labels=kd_labels if mask is None else None,
            mask=mask,
            num_items_in_batch=num_items_in_batch,
            **args.kd_loss_kwargs,
        )
        loss = args.alpha * loss_kd
        parts = {"loss_kd": loss_kd}
        if args.alpha < 1.0:
            loss_task = task_cross_entropy(kd_student, kd_labels, num_items_in_batch=num_items_in_batch)
            loss = loss + (1.0 - args.alpha) * loss_task
            parts["loss_task"] = loss_task
        if need_hidden:
            loss_hidden = self._hidden_loss(
                student_outputs, teacher_outputs, attention_mask, accumulated=num_items_in_batch is not None
            )
            loss = loss + args.hidden_state_weight * loss_hidden
            parts["loss_hidden"] = loss_hidden
        if self.attention_pairs is not None:
            weighted, attention_parts = self._attention_losses(
                student_outputs, teacher_outputs, attention_mask, accumulated=num_items_in_batch is not None
            )
            loss = loss + weighted
            parts.update(attention_parts)

        if args.average_tokens_across_devices and num_items_in_batch is not None:
            # The divisor counts items on all processes, and DDP averages gradients: undo that average.
            loss = loss * self.accelerator.num_processes
        self._record_loss_parts(parts, num_items_in_batch)
        if return_outputs:
            return loss, {"logits": student_logits}
        return loss

    # ---- cached teacher outputs and the large-vocabulary loss ------------------------------------------------

    def _check_teacher_cache(self, cache: dict[str, Any], model_inputs: dict[str, Any], need_hidden: bool):
        if need_hidden:
            raise ValueError(
                "The batch carries cached teacher outputs, which hold no teacher hidden states, but "
                "hidden_state_weight > 0; set it to 0 or train with the live teacher."
            )
        check_cache_matches({**model_inputs, **cache})
        if TEMPERATURE in cache:
            cached_temperature = float(torch.as_tensor(cache[TEMPERATURE]).reshape(-1)[0])
            if abs(cached_temperature - self.args.temperature) > 1e-6:
                raise ValueError(
                    f"The top-k teacher cache was computed at temperature {cached_temperature}, but training uses "
                    f"temperature={self.args.temperature}: the cached tail mass depends on it. Re-cache at "
                    f"temperature {self.args.temperature} or train at {cached_temperature}."
                )

    def _causal_lm_loss(self, model, model_inputs, labels, cache, num_items_in_batch, chunked: bool):
        """The causal-LM loss computed chunk by chunk from the last hidden states (``chunked``), or from full
        student logits against a cached top-k teacher. Returns ``(loss, parts, outputs)``."""
        args = self.args
        alpha = args.alpha
        attention_mask = model_inputs.get("attention_mask")
        kd_labels = labels[:, 1:] if labels is not None else None
        mask = attention_mask[:, 1:].bool() if labels is None and attention_mask is not None else None
        kd_kwargs = args.kd_loss_kwargs
        topk = None
        if TOPK_LOGITS in cache:
            topk = [cache[c][:, :-1] for c in (TOPK_LOGITS, "teacher_topk_indices", "teacher_tail_logit")]
        if not chunked:
            student_logits = _logits_of(model(**model_inputs))
            if self._vocab_size is not None:
                student_logits = student_logits[..., : self._vocab_size]
            kd_student = student_logits[:, :-1]
            loss_kd = topk_distillation_loss(
                kd_student,
                *topk,
                labels=kd_labels,
                mask=mask,
                num_items_in_batch=num_items_in_batch,
                **kd_kwargs,
            )
            parts = {"loss_kd": loss_kd}
            loss = alpha * loss_kd
            if alpha < 1.0:
                parts["loss_task"] = task_cross_entropy(
                    kd_student, kd_labels, num_items_in_batch=num_items_in_batch
                )
                loss = loss + (1.0 - alpha) * parts["loss_task"]
            return loss, parts, {"logits": student_logits}

        unwrapped = self.accelerator.unwrap_model(model)
        _, hidden = forward_with_last_hidden(model, unwrapped, model_inputs)
        head = unwrapped.get_output_embeddings()
        vocab = self._vocab_size or head.weight.shape[0]
        bias = None if head.bias is None else head.bias[:vocab]
        if topk is not None:
            source = {"kd_chunk_fn": topk_chunks(*topk, **kd_kwargs)}
        elif TEACHER_LOGITS in cache:
            source = {"teacher_logits": cache[TEACHER_LOGITS][:, :-1, :vocab]}
        else:
            self._require_teacher()
            teacher = self.accelerator.unwrap_model(self.teacher)
            with torch.no_grad():
                if isinstance(lm_head_of(teacher), str):  # the teacher's logits cannot be skipped: use them
                    source = {
                        "teacher_logits": _logits_of(self._teacher_outputs(model_inputs, False))[
                            :, :-1, :vocab
                        ]
                    }
                else:
                    _, teacher_hidden = forward_with_last_hidden(self.teacher, teacher, model_inputs)
                    teacher_head = teacher.get_output_embeddings()
                    source = {
                        "teacher_hidden": teacher_hidden[:, :-1],
                        "teacher_weight": teacher_head.weight[:vocab],
                        "teacher_bias": None if teacher_head.bias is None else teacher_head.bias[:vocab],
                    }
        result = fused_linear_distillation_loss(
            hidden[:, :-1],
            head.weight[:vocab],
            bias,
            **source,
            labels=kd_labels,
            mask=mask,
            kd_weight=alpha,
            task_weight=1.0 - alpha,
            num_items_in_batch=num_items_in_batch,
            chunk_size=args.kd_chunk_size,
            implementation=self._kd_implementation,
            check_teacher_finite=args.check_teacher_finite,
            **kd_kwargs,
        )
        parts = {"loss_kd": result.loss_kd}
        if alpha < 1.0:
            parts["loss_task"] = result.loss_task
        return result.loss, parts, None

    def _hidden_loss(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        attention_mask: torch.Tensor | None,
        accumulated: bool,
    ) -> torch.Tensor:
        # `accumulated`: the other terms are divided by counts over the whole accumulated batch, so this one
        # must be too; otherwise Trainer divides the micro-batch means by the accumulation steps.
        student_hidden = getattr(student_outputs, "hidden_states", None)
        teacher_hidden = getattr(teacher_outputs, "hidden_states", None)
        for who, hidden in (("student", student_hidden), ("teacher", teacher_hidden)):
            if hidden is None:
                raise ValueError(
                    f"hidden_state_weight > 0 but the {who} returned no hidden_states when called with "
                    "output_hidden_states=True; use a model that supports it, or set hidden_state_weight=0."
                )
        total = self.hidden_matcher(student_hidden, teacher_hidden, attention_mask)
        if accumulated and self.model.training and self._num_tokens_in_batch is not None:
            denominator = self._num_tokens_in_batch
        elif attention_mask is not None:
            denominator = attention_mask.sum()
        else:
            denominator = torch.tensor(student_hidden[0].shape[0] * student_hidden[0].shape[1])
        denominator = denominator.to(total.device)
        if accumulated and not self.model.training and self._loss_scaled_by_processes(True):
            # Evaluation counts num_items_in_batch over all processes and compute_loss multiplies the loss by
            # their number; a per-process token count here would make this term num_processes times too big.
            denominator = self.accelerator.gather(denominator.reshape(1)).sum()
        return total / denominator.clamp_min(1)

    # ---- attention-map and value-relation matching (modes/attention.py) ----------------------------------

    def _output_kwargs(self, need_hidden: bool) -> dict[str, bool]:
        kwargs = {"output_hidden_states": True} if need_hidden else {}
        if self.args.attention_weight > 0:
            kwargs["output_attentions"] = True
        return kwargs

    def _build_attention_matching(
        self, student: nn.Module, teacher: nn.Module
    ) -> list[tuple[int, int]] | None:
        """Checks the models and returns pairs of indices into ``attentions``; None when the terms are off."""
        args = self.args
        if not args.matches_attention:
            return None
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
            dropout = getattr(
                s_config, "attention_probs_dropout_prob", getattr(s_config, "attention_dropout", 0)
            )
            if dropout:
                logger.warning(
                    "The student's attention dropout is %s: its attention maps are returned after dropout, so the "
                    "attention loss compares dropped maps. Build the student with attention dropout 0 for exact "
                    "matching.",
                    dropout,
                )
        num_s, num_t = s_config.num_hidden_layers, t_config.num_hidden_layers
        pairs = check_layer_map(args.layer_map_pairs or uniform_layer_map(num_s, num_t), num_s, num_t)
        pairs = attention_layer_pairs(pairs)
        self._value_captures = None
        if args.value_relation_weight > 0:
            self._value_captures = (
                ValueCapture(self.accelerator.unwrap_model(student)),
                ValueCapture(self.accelerator.unwrap_model(teacher)),
            )
        return pairs

    def _attention_losses(
        self,
        student_outputs: Any,
        teacher_outputs: Any,
        attention_mask: torch.Tensor | None,
        accumulated: bool,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``attention_weight * loss_attention + value_relation_weight * loss_value_relation`` and the parts,
        each a per-token mean over mapped layers' summed KL, normalised like hidden-state matching."""
        args = self.args
        if accumulated and self.model.training and self._num_tokens_in_batch is not None:
            denominator = self._num_tokens_in_batch
        elif attention_mask is not None:
            denominator = attention_mask.sum()
        else:
            logits = _logits_of(student_outputs)
            denominator = torch.tensor(logits.shape[0] * logits.shape[1])
        total, parts = 0.0, {}
        if args.attention_weight > 0:
            student_maps = getattr(student_outputs, "attentions", None)
            teacher_maps = getattr(teacher_outputs, "attentions", None)
            if not student_maps or not teacher_maps:
                raise ValueError(
                    "attention_weight > 0 but the models returned no attentions with output_attentions=True; "
                    "load them with attn_implementation='eager', or set attention_weight=0."
                )
            value = sum(
                attention_map_loss(student_maps[s], teacher_maps[t], attention_mask)
                for s, t in self.attention_pairs
            )
            parts["loss_attention"] = value / denominator.to(value.device).clamp_min(1)
            total = total + args.attention_weight * parts["loss_attention"]
        if args.value_relation_weight > 0:
            student_values, teacher_values = (capture.take() for capture in self._value_captures)
            value = sum(
                value_relation_loss(
                    student_values[s], teacher_values[t], args.value_relation_heads, attention_mask
                )
                for s, t in self.attention_pairs
            )
            parts["loss_value_relation"] = value / denominator.to(value.device).clamp_min(1)
            total = total + args.value_relation_weight * parts["loss_value_relation"]
        return total, parts

    # ---- logging --------------------------------------------------------------------------------------

    def _loss_scaled_by_processes(self, has_num_items: bool) -> bool:
        """Whether compute_loss multiplies the loss by the number of processes (as Trainer does): each
        process's terms are then partial sums over a count taken on all processes."""
        return (
            has_num_items and self.args.average_tokens_across_devices and self.accelerator.num_processes > 1
        )

    def _record_loss_parts(self, parts: dict[str, torch.Tensor], num_items_in_batch: Any) -> None:
        mode = "train" if self.model.training else "eval"
        scale = 1.0
        if mode == "train" and num_items_in_batch is None:
            # Unscaled micro-batch means: Trainer divides the loss by the accumulation steps, so do we.
            scale = 1.0 / getattr(self, "current_gradient_accumulation_steps", 1)
        if self._loss_scaled_by_processes(num_items_in_batch is not None):
            # Scaled like the loss: log()'s mean over processes then gives the global value, not 1/num_processes.
            scale = float(self.accelerator.num_processes)
        for name, value in parts.items():
            self._loss_parts[mode][name].append(value.detach() * scale)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        parts = self._loss_parts[mode]
        if parts and (mode == "eval" or "loss" in logs):
            if mode == "train":
                # The parts of one optimizer step sum to that step's loss; average over logged steps.
                # After a resume the first window starts at the checkpoint's step, not at 0.
                self._loss_parts_last_step = max(self._loss_parts_last_step, self._resumed_from_step)
                steps = max(self.state.global_step - self._loss_parts_last_step, 1)
                self._loss_parts_last_step = self.state.global_step
            for name, values in parts.items():
                total = torch.stack(values).sum()
                total = nested_gather(total, self.args.parallel_mode).mean().item()
                value = total / steps if mode == "train" else total / len(values)
                logs[f"eval_{name}" if mode == "eval" else name] = value
            parts.clear()
        super().log(logs, start_time)

    # ---- checkpoints ----------------------------------------------------------------------------------

    def _unwrapped_matcher(self) -> nn.Module | None:
        if self.hidden_matcher is None:
            return None
        return self.accelerator.unwrap_model(self.hidden_matcher)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        matcher = self._unwrapped_matcher()
        if matcher is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            torch.save(matcher.state_dict(), os.path.join(folder, DISTILLATION_MODULES_NAME))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        state_file = os.path.join(resume_from_checkpoint, TRAINER_STATE_NAME)
        if os.path.isfile(state_file):
            self._resumed_from_step = TrainerState.load_from_json(state_file).global_step
        matcher = self._unwrapped_matcher()
        path = os.path.join(resume_from_checkpoint, DISTILLATION_MODULES_NAME)
        if matcher is not None:
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} is missing: the checkpoint has no hidden-state projections, so resuming would "
                    "restart them from random. Resume from a checkpoint written with hidden_state_weight > 0."
                )
            matcher.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))

    # ---- model card and push_to_hub (trainer_card.py) ----------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        super()._save(output_dir, state_dict)
        # Every folder the student is saved into (save_model, each checkpoint) gets its model card.
        if self.args.should_save:
            write_trainer_card(self, output_dir or self.args.output_dir, repo_id=self.args.hub_model_id)

    def create_model_card(self, language=None, license=None, tags=None, model_name=None, **kwargs) -> None:
        """Called by ``Trainer.push_to_hub`` right before it uploads ``output_dir``: writes hf_distill's card
        instead of Trainer's, and refuses (``ValueError``) a folder holding teacher weights before any upload.
        Trainer's ``finetuned_from`` / ``tasks`` / ``dataset*`` arguments have no place in that card."""
        if not self.is_world_process_zero():
            return
        ignored = sorted(k for k, v in kwargs.items() if v is not None)
        if ignored:
            logger.warning(
                "create_model_card ignores %s: the hf_distill card takes them from the run.", ignored
            )
        check_no_teacher_files(self.args.output_dir, self.teacher)
        tags = [tags] if isinstance(tags, str) else tags
        write_trainer_card(
            self,
            self.args.output_dir,
            repo_id=self.hub_model_id,
            language=language,
            license=license,
            tags=tags,
            model_name=model_name,
        )

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        # Checkpoint pushes (hub_strategy "every_save", "checkpoint") upload output_dir without creating a card.
        if self.is_world_process_zero() and self.args.hub_strategy != "end":
            check_no_teacher_files(self.args.output_dir, self.teacher)
            write_trainer_card(self, self.args.output_dir, repo_id=self.hub_model_id)
        super()._push_from_checkpoint(checkpoint_folder)
