"""Feature terms: matching the teacher's inside, not only its predictions.

- :class:`HiddenStateTerm`: hidden states of mapped layers (DistilBERT, TinyBERT, MiniLM style), through learned
  projections where widths differ (:class:`hf_distill.terms.hidden_states.HiddenStateMatcher`);
- :class:`AttentionTerms`: attention maps and value relations of mapped layers (TinyBERT, MiniLM;
  :mod:`hf_distill.terms.attention`);
- :class:`FeatureMapTerm`: outputs of named layers of any torch model, CNN feature maps or ViT tokens (FitNets;
  :mod:`hf_distill.terms.feature_maps`), through learned 1x1-convolution projections where channels differ.

Each term is called as ``term(student, target, batch) -> (weighted value, {name: value})`` and divides its sum
over tokens by ``batch.num_tokens``, the one token count of :class:`hf_distill.terms.normalization.Normalization`
(accumulated over gradient-accumulation micro-batches in training, gathered over processes in evaluation).
"""

from __future__ import annotations

from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.batch import DistillationBatch, TeacherTarget
from hf_distill.terms.attention import (
    ValueCapture,
    attention_layer_pairs,
    attention_map_loss,
    value_relation_loss,
)
from hf_distill.terms.feature_maps import FeatureCapture, build_feature_map_matcher
from hf_distill.terms.hidden_states import HiddenStateMatcher, check_layer_map, uniform_layer_map


def _layer_pairs(args: DistillationTrainingArguments, student: nn.Module, teacher: nn.Module) -> list:
    num_s, num_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
    return check_layer_map(args.layer_map_pairs or uniform_layer_map(num_s, num_t), num_s, num_t)


class HiddenStateTerm:
    """``hidden_state_weight * loss_hidden``: the per-token matching loss summed over mapped layers."""

    def __init__(self, matcher: nn.Module, weight: float):
        self.matcher, self.weight = matcher, weight
        self.output_kwargs = {"output_hidden_states": True}

    def __call__(
        self, student: Any, target: TeacherTarget, batch: DistillationBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student_hidden = getattr(student.outputs, "hidden_states", None)
        teacher_hidden = getattr(target.outputs, "hidden_states", None)
        for who, hidden in (("student", student_hidden), ("teacher", teacher_hidden)):
            if hidden is None:
                raise ValueError(
                    f"hidden_state_weight > 0 but the {who} returned no hidden_states when called with "
                    "output_hidden_states=True; use a model that supports it, or set hidden_state_weight=0."
                )
        total = self.matcher(student_hidden, teacher_hidden, batch.attention_mask)
        value = total / batch.num_tokens.to(total.device)
        return self.weight * value, {"loss_hidden": value}


class AttentionTerms:
    """``attention_weight * loss_attention + value_relation_weight * loss_value_relation``: per-token means
    over mapped layers' summed KL divergences."""

    def __init__(self, pairs: list[tuple[int, int]], args: DistillationTrainingArguments, captures: Any):
        self.pairs, self.args, self.captures = pairs, args, captures
        self.output_kwargs = {"output_attentions": True} if args.attention_weight > 0 else {}

    def __call__(
        self, student: Any, target: TeacherTarget, batch: DistillationBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args, mask, parts, total = self.args, batch.attention_mask, {}, 0.0
        if args.attention_weight > 0:
            student_maps = getattr(student.outputs, "attentions", None)
            teacher_maps = getattr(target.outputs, "attentions", None)
            if not student_maps or not teacher_maps:
                raise ValueError(
                    "attention_weight > 0 but the models returned no attentions with output_attentions=True; "
                    "load them with attn_implementation='eager', or set attention_weight=0."
                )
            value = sum(attention_map_loss(student_maps[s], teacher_maps[t], mask) for s, t in self.pairs)
            parts["loss_attention"] = value / batch.num_tokens.to(value.device)
            total = total + args.attention_weight * parts["loss_attention"]
        if args.value_relation_weight > 0:
            student_values, teacher_values = (capture.take() for capture in self.captures)
            value = sum(
                value_relation_loss(student_values[s], teacher_values[t], args.value_relation_heads, mask)
                for s, t in self.pairs
            )
            parts["loss_value_relation"] = value / batch.num_tokens.to(value.device)
            total = total + args.value_relation_weight * parts["loss_value_relation"]
        return total, parts


class FeatureMapTerm:
    """``feature_map_weight * loss_feature_map``: the per-example feature-map loss summed over mapped layers,
    divided by ``batch.num_tokens`` (for image batches, the examples; :mod:`hf_distill.terms.normalization`)."""

    def __init__(self, matcher: nn.Module, weight: float, captures: tuple[FeatureCapture, FeatureCapture]):
        self.matcher, self.weight, self.captures = matcher, weight, captures
        self.output_kwargs: dict[str, bool] = {}  # forward hooks capture the maps

    def __call__(
        self, student: Any, target: TeacherTarget, batch: DistillationBatch
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        student_maps, teacher_maps = (capture.take() for capture in self.captures)
        total = self.matcher(student_maps, teacher_maps)
        value = total / batch.num_tokens.to(total.device)
        return self.weight * value, {"loss_feature_map": value}


def place_trainable(
    module: nn.Module, args: DistillationTrainingArguments, accelerator: Accelerator
) -> nn.Module:
    """A module trained beside the student, on the run's device; wrapped for gradient averaging when several
    processes train."""
    module.to(args.device)
    if accelerator.num_processes > 1 and len(list(module.parameters())) > 0:
        module = accelerator.prepare_model(module)
    return module


def build_feature_map_term(
    args: DistillationTrainingArguments, student: nn.Module, teacher: nn.Module, accelerator: Accelerator
) -> FeatureMapTerm:
    """The feature-map term over ``args.feature_layers``, its hooks on the unwrapped models."""
    student, teacher = accelerator.unwrap_model(student), accelerator.unwrap_model(teacher)
    pairs = args.feature_layer_pairs
    matcher: nn.Module = build_feature_map_matcher(pairs, student, teacher)
    captures = (
        FeatureCapture(student, [s for s, _ in pairs], "student"),
        FeatureCapture(teacher, [t for _, t in pairs], "teacher"),
    )
    return FeatureMapTerm(place_trainable(matcher, args, accelerator), args.feature_map_weight, captures)


def build_hidden_matcher(
    args: DistillationTrainingArguments, student: nn.Module, teacher: nn.Module, accelerator: Accelerator
) -> nn.Module:
    """The projections of hidden-state matching, on the run's device; wrapped for gradient averaging when
    several processes train (they are trained with the student but are not part of it)."""
    matcher = HiddenStateMatcher(
        _layer_pairs(args, student, teacher),
        student.config.hidden_size,
        teacher.config.hidden_size,
        args.hidden_state_loss,
    )
    return place_trainable(matcher, args, accelerator)


def build_feature_terms(
    args: DistillationTrainingArguments,
    student: nn.Module,
    teacher: nn.Module | None,
    accelerator: Accelerator,
) -> tuple[nn.Module | None, list]:
    """The feature terms the arguments ask for (models already checked by
    :func:`hf_distill.checks.check_feature_terms`), and the hidden-state matcher (None without one)."""
    terms, matcher = [], None
    if args.hidden_state_weight > 0:
        matcher = build_hidden_matcher(args, student, teacher, accelerator)
        terms.append(HiddenStateTerm(matcher, args.hidden_state_weight))
    if args.matches_attention:
        pairs = attention_layer_pairs(_layer_pairs(args, student, teacher))
        captures = None
        if args.value_relation_weight > 0:
            captures = (
                ValueCapture(accelerator.unwrap_model(student)),
                ValueCapture(accelerator.unwrap_model(teacher)),
            )
        terms.append(AttentionTerms(pairs, args, captures))
    if args.feature_map_weight > 0:
        terms.append(build_feature_map_term(args, student, teacher, accelerator))
    return matcher, terms


def feature_map_matcher(terms: list) -> nn.Module | None:
    """The projections of the feature-map term among ``terms`` (None without one)."""
    return next((term.matcher for term in terms if isinstance(term, FeatureMapTerm)), None)
