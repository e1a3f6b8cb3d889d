"""``DistillationTrainer``: a ``transformers.Trainer`` that learns from a frozen teacher.

The trainer orchestrates; the work lives beside it:

- :mod:`hf_distill.checks`: set-up checks of arguments, models, tokenizers and data;
- :mod:`hf_distill.teachers`: what the teacher says about a batch, from one ``TeacherSource`` (live model, cached
  outputs, cross-tokenizer teacher, or a mode's own);
- :mod:`hf_distill.terms.logits`: the KD and task terms (plain or chunked, chosen once);
- :mod:`hf_distill.terms.features`: hidden-state and attention matching;
- :mod:`hf_distill.terms.normalization` and :mod:`hf_distill.terms.loss_log`: counts, process scaling, logged parts;
- :mod:`hf_distill.hub.trainer_saving`: the save path every trainer shares: checkpoints that survive a kill at
  any moment (:mod:`hf_distill.training.checkpoints`), the model card, the push guard.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, Trainer

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, require_labels
from hf_distill.cache.build import CACHE_COLUMNS, cached_teacher_kind
from hf_distill.cache.collator import TeacherColumnsCollator
from hf_distill.checks import (
    SPLITS,
    check_cache_replaces_teacher,
    check_compatibility,
    check_cross_tokenizer_setup,
    check_feature_terms,
    check_kd_implementation,
    check_separate_models,
    check_trainer_inputs,
    refuse_features_from_cache,
)
from hf_distill.hub.trainer_card import record_teacher
from hf_distill.hub.trainer_saving import StudentSaving
from hf_distill.loading import load_teacher_model
from hf_distill.model_kind import CAUSAL_LM, detect_head_kind
from hf_distill.teacher_routes import routes_for
from hf_distill.teachers.cross_tokenizer import cross_tokenizer_source
from hf_distill.teachers.routed import RouteColumnCollator
from hf_distill.teachers.served import (
    ServedTeacher,
    check_served_setup,
    is_served_teacher,
    served_teacher_for,
)
from hf_distill.teachers.sources import CachedOrLiveTeacher, CachedTeacher, LiveTeacher, TeacherSource
from hf_distill.terms.cross_tokenizer import CrossTokenizerLogitTerms
from hf_distill.terms.diagnostics import DIAGNOSTIC_NAMES, diagnostics_due
from hf_distill.terms.features import build_feature_terms, feature_map_matcher
from hf_distill.terms.logits import ChunkedLogitTerms, LogitTerms
from hf_distill.terms.logits import build_logit_terms as choose_logit_terms
from hf_distill.terms.loss_log import LossPartsLog
from hf_distill.terms.normalization import Normalization
from hf_distill.training.checkpoints import CheckpointExtra, checkpoint_step
from hf_distill.training.placement import prepare_teacher
from hf_distill.training.tuple_batches import tuple_collator_for

logger = logging.getLogger(__name__)

# The projection heads of hidden-state matching live beside the student in each checkpoint.
DISTILLATION_MODULES_NAME = "distillation_modules.pt"
# The 1x1-convolution projections of feature-map matching, likewise.
FEATURE_MAP_MODULES_NAME = "feature_map_projections.pt"
TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class DistillationTrainer(StudentSaving, Trainer):
    """Trains ``model`` (the student) to match ``teacher_model`` while also fitting the task labels.

    Args:
        model: the student, a ``PreTrainedModel`` or any ``nn.Module`` returning logits.
        teacher_model: a model with a task head that shares no parameter with the student, or a local folder /
            Hub id loaded with the Auto class of the student's task; an ``http(s)://HOST:PORT/v1`` URL of a
            server of the teacher's top-k log-probabilities (causal LM, :mod:`hf_distill.teachers.served`);
            None when the train (and eval) dataset carry the teacher's cached outputs
            (:mod:`hf_distill.cache.build`).
        args: :class:`DistillationTrainingArguments`.
        teacher_processing_class: the teacher's tokenizer, when it may differ from the student's; the two
            must have the same vocabulary unless ``args.cross_tokenizer_loss`` is set
            (:mod:`hf_distill.teachers.cross_tokenizer`).
        teacher_model_init_kwargs: keyword arguments for ``from_pretrained`` when ``teacher_model`` is a string.
        teachers: name -> teacher (what ``teacher_model`` takes, or a teacher source), with
            ``args.teacher_route_column`` naming each row's teacher (:mod:`hf_distill.teacher_routes`).
        **kwargs: everything ``transformers.Trainer`` takes (datasets, collator, processing_class, ...).

    The teacher runs in eval mode under ``torch.no_grad`` on the student's device and is never saved. The
    loss ``(1 - alpha) * task + alpha * kd + hidden_state_weight * hidden (+ attention terms)`` is logged in
    parts as ``loss_task``, ``loss_kd``, ``loss_hidden`` (``loss_attention``, ``loss_value_relation``).
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        teacher_model: nn.Module | str | None = None,
        args: DistillationTrainingArguments | None = None,
        *,
        teacher_processing_class: Any = None,
        teacher_model_init_kwargs: dict | None = None,
        teachers: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if args is None:
            args = DistillationTrainingArguments(output_dir="tmp_trainer", report_to="none")
        check_trainer_inputs(args, model, kwargs)
        self.routes = routes_for(args, teachers, teacher_model, kwargs, model, teacher_model_init_kwargs)
        cached = [cached_teacher_kind(getattr(kwargs.get(s), "column_names", None) or ()) for s in SPLITS]
        served_url = teacher_model if is_served_teacher(teacher_model) else None
        if served_url is not None:
            teacher_model = None  # the teacher lives on its server: nothing is loaded here
        if teacher_model is None and served_url is None and self.routes is None:
            check_cache_replaces_teacher(cached, kwargs.get("eval_dataset") is not None)
        if any(cached):
            refuse_features_from_cache(args, "The dataset", has_teacher=teacher_model is not None)
        # The student's head kind (hf_distill.model_kind), not the recipe's task nor a multi-task head.
        self.head_kind = detect_head_kind(model)
        if served_url is not None:
            check_served_setup(args, self.head_kind, args.cross_tokenizer_loss is not None)
        check_kd_implementation(args, self.head_kind)
        if isinstance(teacher_model, str):
            teacher_model = load_teacher_model(self.head_kind, teacher_model, teacher_model_init_kwargs or {})
        if teacher_model is not None:
            check_separate_models(model, teacher_model)
        if args.label_names is None and not isinstance(model, PreTrainedModel):
            # A plain module's forward has no `labels` argument, so Trainer would drop the column.
            args.label_names = ["labels"]
        tokenizer = kwargs.get("processing_class")
        check_cross_tokenizer_setup(args, self.head_kind, tokenizer, teacher_processing_class, cached)
        cross = args.cross_tokenizer_loss is not None
        self.vocab_size = (
            None
            if cross
            else self.shared_vocab_size(model, teacher_model, tokenizer, teacher_processing_class)
        )
        check_feature_terms(args, model, teacher_model)
        self.served_teacher: ServedTeacher | None = None
        if served_url is not None:
            self.served_teacher = served_teacher_for(served_url, args, model, tokenizer)
        # Taken before the teacher is cast or sharded; every saved student carries it (see push_to_hub).
        self.teacher_fingerprint = record_teacher(model, teacher_model)
        tuple_collator = tuple_collator_for(kwargs, {"student": model, "teacher": teacher_model})
        if tuple_collator is not None:  # torchvision-style (image, label) items
            kwargs["data_collator"] = tuple_collator
        super().__init__(model=model, args=args, **kwargs)
        if any(cached) or cross:
            # Cache columns of variable length (NER) must be padded along with input_ids; the text and teacher
            # positions of cross-tokenizer batches are batched beside them.
            self.data_collator = TeacherColumnsCollator(
                self.data_collator, getattr(tokenizer, "padding_side", "right")
            )
        if self.routes is not None:  # outermost: takes the route column out before any padding
            self.data_collator = RouteColumnCollator(self.data_collator, self.routes.column)
        # Every term is normalised by num_items_in_batch here; Trainer then neither divides by the
        # accumulation steps again nor skips counting items.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = self.head_kind == CAUSAL_LM
        # A mode plugs in here: its own logit terms, its own teacher source (hooks below).
        self.logit_terms = self.build_logit_terms(model)
        # No teacher when every batch carries its outputs (checked above): it is never loaded.
        self.teacher = self.prepare_teacher_model(teacher_model) if teacher_model is not None else None
        self.teacher_source = self.build_teacher_source(
            model, teacher_model, tokenizer, teacher_processing_class
        )
        self.hidden_matcher, self.feature_terms = build_feature_terms(
            args, model, self.teacher, self.accelerator
        )
        self.feature_map_matcher = feature_map_matcher(self.feature_terms)
        self.normalization = Normalization(self.accelerator, args)
        self.loss_log = LossPartsLog(self.normalization)
        self.eval_wants_logits = True

    # ---- set-up ---------------------------------------------------------------------------------------

    def prepare_teacher_model(self, teacher: nn.Module) -> nn.Module:
        """Eval mode, no gradients, the configured dtype, and placed for the backend without being wrapped
        for training: replicated under DDP, an inference engine under DeepSpeed (sharded with ZeRO-3), sharded
        with the run's plugin under FSDP (see :mod:`hf_distill.training.placement`)."""
        teacher.eval()
        teacher.requires_grad_(False)
        if self.args.teacher_dtype is not None:
            teacher.to(TEACHER_DTYPES[self.args.teacher_dtype])
        return prepare_teacher(self.accelerator, teacher)

    def shared_vocab_size(
        self, model: nn.Module, teacher_model: nn.Module | None, tokenizer: Any, teacher_tokenizer: Any
    ) -> int | None:
        """Hook: the output rows the student and its teacher(s) share, after checking that they may be compared
        (:func:`hf_distill.checks.check_compatibility`); None for a classification head. A mode with several
        teachers checks each."""
        if self.routes is not None:
            return self.routes.shared_vocab_size(self.head_kind, model, tokenizer)
        return check_compatibility(self.head_kind, model, teacher_model, tokenizer, teacher_tokenizer)

    def build_logit_terms(self, model: nn.Module) -> LogitTerms | CrossTokenizerLogitTerms:
        """Hook: the KD and task terms (plain, fused or chunked, chosen once; cross-vocabulary with
        ``cross_tokenizer_loss``). Runs before the teacher is placed."""
        if self.args.cross_tokenizer_loss is not None:
            return CrossTokenizerLogitTerms(self.args)
        unwrap = self.accelerator.unwrap_model
        return choose_logit_terms(self.head_kind, self.args, model, self.vocab_size, unwrap)

    def build_teacher_source(
        self, model: nn.Module, teacher_model: nn.Module | None, tokenizer: Any, teacher_tokenizer: Any
    ) -> TeacherSource:
        """Hook: what the teacher says about each batch (a :class:`~hf_distill.teachers.sources.TeacherSource`):
        the cache a batch carries, else the placed teacher (``self.teacher``, possibly None); the cross-tokenizer
        teacher with ``cross_tokenizer_loss``; each row's own teacher with ``teachers`` (routes)."""
        if self.routes is not None:
            unwrap = self.accelerator.unwrap_model
            return self.routes.source(self.prepare_teacher_model, unwrap, model, tokenizer, self.vocab_size)
        if self.args.cross_tokenizer_loss is not None:
            return cross_tokenizer_source(
                self.args, self.teacher, teacher_model, model, tokenizer, teacher_tokenizer
            )
        cached = CachedTeacher(self.args.temperature, self.vocab_size)
        live = self.served_teacher if self.served_teacher is not None else self.live_teacher()
        return CachedOrLiveTeacher(live, cached)

    def live_teacher(self) -> LiveTeacher | None:
        """The teacher model as a source; it hands the chunked KD loss its last hidden state and head."""
        if self.teacher is None:
            return None
        as_hidden = isinstance(self.logit_terms, ChunkedLogitTerms)
        return LiveTeacher(
            self.teacher, self.accelerator.unwrap_model(self.teacher), self.vocab_size, as_hidden
        )

    @property
    def task(self) -> str:
        """The student's head kind under its old name (:attr:`head_kind`); "task" also names a recipe, a
        multi-task head and the hard-label loss, so the attribute says which it is."""
        warnings.warn(
            "DistillationTrainer.task is deprecated: it is the student's head kind, read trainer.head_kind.",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.head_kind

    @property
    def teacher_signal(self) -> TeacherSource:
        """The teacher source under its old name (:attr:`teacher_source`)."""
        return self.teacher_source

    @property
    def kd_implementation(self) -> str:
        """``"plain"``, ``"fused"`` or ``"chunked"``: the KD loss used in training and evaluation."""
        return self.logit_terms.implementation

    @property
    def output_kwargs(self) -> dict[str, bool]:
        """What both models must return for the feature terms (hidden states, attention maps)."""
        kwargs: dict[str, bool] = {}
        for term in self.feature_terms:
            kwargs.update(term.output_kwargs)
        return kwargs

    def distillation_modules(self) -> nn.Module | None:
        """The trainable modules that are not the student (hidden-state projections), unwrapped; None if none."""
        return None if self.hidden_matcher is None else self.accelerator.unwrap_model(self.hidden_matcher)

    def trained_beside(self) -> list[nn.Module]:
        """The modules trained with the student but not part of it (hidden-state and feature-map projections)."""
        return [m for m in (self.hidden_matcher, self.feature_map_matcher) if m is not None]

    def create_optimizer(self, model=None):
        optimizer = super().create_optimizer(model)
        for module in self.trained_beside():
            params = [p for p in module.parameters() if p.requires_grad]
            if params and not any(p is params[0] for g in optimizer.param_groups for p in g["params"]):
                optimizer.add_param_group({"params": params, "weight_decay": 0.0})
        return optimizer

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        # The model's forward does not take the cache columns, but the teacher source reads them: keep them.
        kept = [*CACHE_COLUMNS, *([self.routes.column] if self.routes is not None else [])]
        self._signature_columns += [c for c in kept if c not in self._signature_columns]

    # ---- the loss -------------------------------------------------------------------------------------

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        if self.served_teacher is not None:
            # The served teacher's requests for the next batches go out while this step runs.
            epoch_iterator = self.served_teacher.look_ahead(epoch_iterator)
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        for module in self.trained_beside():
            # Trainer zeroes only the student's gradients after each optimizer step; without this the
            # projections would step with the running sum of all past gradients.
            module.zero_grad(set_to_none=True)
        if self.feature_terms:
            self.normalization.count_accumulated_tokens(batch_samples, device)
        self.normalization.count_accumulated_transfer(batch_samples, self.head_kind == CAUSAL_LM, device)
        return batch_samples, num_items_in_batch

    def distillation_batch(self, inputs: dict[str, Any], num_items_in_batch: Any) -> DistillationBatch:
        """The batch as the terms see it, checked: labels where the task term needs them, no feature terms on
        cached teacher outputs; with the counts that normalise the terms (its transfer positions, computed here
        once, are kept on the batch for the logit terms)."""
        batch = DistillationBatch.from_inputs(
            inputs, num_items_in_batch=num_items_in_batch, global_step=self.state.global_step
        )
        require_labels(batch.labels, self.args.alpha)
        batch.measure_diagnostics = diagnostics_due(self.args, self.state, self.model.training)
        transfer = batch.transfer_positions(shifted=self.head_kind == CAUSAL_LM)
        batch.num_kd_items = self.normalization.num_kd_items(
            num_items_in_batch, transfer, self.model.training
        )
        if batch.cache:
            refuse_features_from_cache(self.args, "The batch", has_teacher=self.teacher is not None)
        if self.feature_terms:
            accumulated = num_items_in_batch is not None
            batch.num_tokens = self.normalization.num_tokens(
                batch.model_inputs, self.model.training, accumulated
            )
        return batch

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        batch = self.distillation_batch(inputs, num_items_in_batch)
        # The teacher runs first: under no_grad it frees its activations as it goes, so the step's peak is the
        # student's saved activations alone, not those plus the teacher's working memory, and the student
        # reuses the teacher's freed blocks (benchmarks/README.md, bench_peers.py, measures the step).
        target = self.teacher_source(batch, self.output_kwargs)
        student = self.logit_terms.run_student(model, batch.model_inputs, self.output_kwargs)
        loss, parts = self.logit_terms(student, target, batch)
        # The logit terms measure the teacher's target at the KD positions they use (terms.diagnostics).
        self.loss_log.record_means(
            {n: parts.pop(n) for n in DIAGNOSTIC_NAMES if n in parts}, self.model.training
        )
        for term in self.feature_terms:
            weighted, term_parts = term(student, target, batch)
            loss, parts = loss + weighted, {**parts, **term_parts}
        self.record_loss_parts(parts, num_items_in_batch)
        loss = self.normalization.scale_loss(loss, num_items_in_batch)
        if not return_outputs:
            return loss
        return loss, student.prediction_outputs() if self.eval_wants_logits else {}

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # On the chunked path the student's full logits exist only if evaluation asks for them.
        self.eval_wants_logits = not prediction_loss_only
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        finally:
            self.eval_wants_logits = True

    # ---- logging --------------------------------------------------------------------------------------

    def record_loss_parts(self, parts: dict[str, torch.Tensor], num_items_in_batch: Any) -> None:
        """Keeps the named parts of this micro-batch's loss for the next log (see :mod:`hf_distill.terms.loss_log`)."""
        steps = getattr(self, "current_gradient_accumulation_steps", 1)
        self.loss_log.record(parts, self.model.training, num_items_in_batch, steps)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        self.loss_log.add_to(logs, self.state.global_step, self.args.parallel_mode)
        super().log(logs, start_time)

    # ---- checkpoints (the save path: hub/trainer_saving.py, training/checkpoints.py) --------------------

    def checkpoint_extras(self) -> list[CheckpointExtra]:
        extras, unwrap = super().checkpoint_extras(), self.accelerator.unwrap_model
        kept = (
            (
                self.hidden_matcher,
                DISTILLATION_MODULES_NAME,
                "hidden-state projections",
                "hidden_state_weight",
            ),
            (
                self.feature_map_matcher,
                FEATURE_MAP_MODULES_NAME,
                "feature-map projections",
                "feature_map_weight",
            ),
        )
        for module, name, what, knob in kept:
            if module is not None:
                fix = f"Resume from a checkpoint written with {knob} > 0."
                extras.append(
                    CheckpointExtra(
                        name, what, "resuming would restart them from random", fix, unwrap(module)
                    )
                )
        return extras

    def resuming_from(self, folder: str) -> None:
        self.loss_log.resumed_from_step = checkpoint_step(folder) or 0

    # ---- what the save path guards and describes (hub/trainer_saving.py) -------------------------------

    def guarded_teachers(self) -> list[tuple[nn.Module | None, dict | None]]:
        routed = self.routes.fingerprints if self.routes is not None else []
        return [(self.teacher, self.teacher_fingerprint), *routed]

    def card_teacher(self) -> nn.Module | None:
        return self.teacher
