"""Feature-map matching between named layers of any two torch models (FitNets, Romero et al. 2015).

A layer is named as in ``model.named_modules()`` (``"conv.2"`` in a plain CNN, ``"resnet.encoder.stages.1"`` in
``ResNetForImageClassification``, ``"vit.encoder.layer.3"`` in ViT); its output is captured with a forward hook,
so the same path serves plain ``nn.Module`` models and Transformers vision models alike.

For a pair of maps, student ``(B, C_s, H_s, W_s)`` and teacher ``(B, C_t, H_t, W_t)``:

1. both are average-pooled (``adaptive_avg_pool2d``) to the smaller size ``(min(H_s, H_t), min(W_s, W_t))``;
2. the student's map goes through a learned 1x1 convolution ``C_s -> C_t`` when the channels differ (the
   FitNets regressor; pooling and a 1x1 convolution commute, so pooling first only saves work);
3. the loss of one example is the mean squared error over ``C_t * H * W``.

Token maps ``(B, T, D)`` (ViT) are handled the same way along the tokens (``adaptive_avg_pool1d``) with a linear
projection ``D_s -> D_t``. :class:`FeatureMapMatcher` returns the sum of the per-example losses over the batch
and the mapped pairs; the caller divides by the number of examples.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Layers whose output width can be read from their own attributes; a block is judged by the last of them.
WIDTH_ATTRIBUTES = (
    (nn.Conv2d, "out_channels"),
    (nn.BatchNorm2d, "num_features"),
    (nn.GroupNorm, "num_channels"),
    (nn.Linear, "out_features"),
    (nn.LayerNorm, "normalized_shape"),
)
MAX_LISTED_NAMES = 40


def available_layers(model: nn.Module) -> str:
    """The module names of ``model`` that can be matched, shallowest first, for error messages."""
    names = sorted((n for n, _ in model.named_modules() if n), key=lambda n: n.count("."))
    shown = ", ".join(names[:MAX_LISTED_NAMES])
    more = len(names) - MAX_LISTED_NAMES
    return shown + (f", ... ({more} more; see model.named_modules())" if more > 0 else "")


def find_layer(model: nn.Module, name: str, who: str) -> nn.Module:
    """The submodule ``name`` of ``model``; ``ValueError`` listing the names it has when there is none."""
    modules = dict(model.named_modules())
    if name not in modules or not name:
        raise ValueError(
            f"feature_layers names {who} layer {name!r}, but the {who} ({type(model).__name__}) has no module of "
            f"that name. Its modules are: {available_layers(model)}."
        )
    return modules[name]


def module_width(module: nn.Module) -> int | None:
    """The output width a conv / norm / linear layer states; None for other modules."""
    for kind, attribute in WIDTH_ATTRIBUTES:
        if isinstance(module, kind):
            value = getattr(module, attribute)
            return value[-1] if isinstance(value, (tuple, list)) else value
    return None


def last_width_layer(model: nn.Module, name: str) -> nn.Module | None:
    """The last conv / norm / linear layer that runs up to layer ``name`` in registration order: inside a block,
    its last one; for a ReLU or pooling layer, the one before it."""
    last, inside = None, False
    for module_name, module in model.named_modules():
        if module_name == name:
            inside = True
        elif inside and not module_name.startswith(name + "."):
            break
        if module_width(module) is not None:
            last = module
    return last


def output_width(model: nn.Module, name: str, who: str) -> int:
    """Channels (or token width) of layer ``name``'s output, read from :func:`last_width_layer`; the first
    forward pass checks it against the real map."""
    last = last_width_layer(model, name)
    if last is None:
        raise ValueError(
            f"feature_layers names {who} layer {name!r}, whose output width cannot be read: no Conv2d, "
            "BatchNorm2d, GroupNorm, Linear or LayerNorm runs up to it. Name a layer after a convolution."
        )
    return module_width(last)


def makes_maps(model: nn.Module, name: str) -> bool:
    """Whether layer ``name`` gives ``(B, C, H, W)`` maps (its :func:`last_width_layer` is a convolution or a
    2-d norm) rather than ``(B, T, D)`` tokens."""
    return isinstance(last_width_layer(model, name), (nn.Conv2d, nn.BatchNorm2d, nn.GroupNorm))


def first_tensor(output: Any) -> torch.Tensor:
    """A hooked module's output: the tensor itself, or the first item of a tuple / Transformers output."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    if hasattr(output, "to_tuple"):
        return first_tensor(output.to_tuple())
    raise TypeError(f"a feature layer returned {type(output).__name__}, not a tensor")


class FeatureCapture:
    """Forward hooks that keep the latest output of each named layer of one model until :meth:`take`."""

    def __init__(self, model: nn.Module, names: list[str], who: str):
        self.names, self.who, self.outputs = list(names), who, {}
        for name in self.names:
            find_layer(model, name, who).register_forward_hook(self.hook(name))

    def hook(self, name: str):
        def keep(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[name] = first_tensor(output)

        return keep

    def take(self) -> list[torch.Tensor]:
        """The captured maps in the order of ``names``, forgotten afterwards (one forward pass, one take)."""
        missing = [name for name in self.names if name not in self.outputs]
        if missing:
            raise ValueError(
                f"The {self.who}'s layers {missing} did not run in its forward pass, so there is no feature map "
                "to match; name layers that the forward pass calls."
            )
        outputs, self.outputs = [self.outputs[name] for name in self.names], {}
        return outputs


def pool_to(feature_map: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, *size)`` or ``(B, T, D)`` -> ``(B, size[0], D)``, by adaptive average pooling."""
    if feature_map.dim() == 4:
        return feature_map if feature_map.shape[2:] == size else F.adaptive_avg_pool2d(feature_map, size)
    if feature_map.shape[1] == size[0]:
        return feature_map
    return F.adaptive_avg_pool1d(feature_map.transpose(1, 2), size[0]).transpose(1, 2)


def per_example_feature_loss(
    student_map: torch.Tensor, teacher_map: torch.Tensor, projection: nn.Module | None = None
) -> torch.Tensor:
    """``(B,)``: the mean squared error of each example after pooling both maps to the smaller size and
    projecting the student's channels (module docstring)."""
    if student_map.dim() != teacher_map.dim() or student_map.dim() not in (3, 4):
        raise ValueError(
            f"feature maps of shapes {tuple(student_map.shape)} (student) and {tuple(teacher_map.shape)} "
            "(teacher) cannot be matched: both must be (batch, channels, height, width) or both "
            "(batch, tokens, width). Pick layers of the same kind on both sides."
        )
    spatial = 2 if student_map.dim() == 4 else 1
    if spatial == 2:
        size = tuple(min(s, t) for s, t in zip(student_map.shape[2:], teacher_map.shape[2:]))
    else:
        size = (min(student_map.shape[1], teacher_map.shape[1]),)
    student_map, teacher_map = pool_to(student_map.float(), size), pool_to(teacher_map.float(), size)
    if projection is not None:
        student_map = projection(student_map)
    return (student_map - teacher_map).pow(2).flatten(1).mean(1)


def projection_for(student_width: int, teacher_width: int, is_map: bool) -> nn.Module | None:
    """The FitNets regressor: a 1x1 convolution for ``(B, C, H, W)`` maps, a linear layer for token maps."""
    if student_width == teacher_width:
        return None
    if is_map:
        return nn.Conv2d(student_width, teacher_width, kernel_size=1)
    return nn.Linear(student_width, teacher_width)


def map_width(feature_map: torch.Tensor) -> int:
    """Channels of a ``(B, C, H, W)`` map, width of a ``(B, T, D)`` one."""
    return feature_map.shape[1] if feature_map.dim() == 4 else feature_map.shape[-1]


def check_width(
    student_layer: str, student_map: torch.Tensor, teacher_map: torch.Tensor, projection: nn.Module | None
) -> None:
    """The student's map must have the width its projection (or, without one, the teacher's map) has."""
    expected = map_width(teacher_map)
    if projection is not None:
        expected = projection.in_channels if isinstance(projection, nn.Conv2d) else projection.in_features
    if map_width(student_map) != expected:
        raise ValueError(
            f"feature layer {student_layer!r} returned width {map_width(student_map)}, but the matching was built "
            f"for {expected} (read from the layer's last conv / norm / linear layer). Name a layer whose output "
            "comes from that last layer."
        )


def projection_key(student_layer: str) -> str:
    """A ``ModuleDict`` key for a layer name (keys may not contain dots)."""
    return student_layer.replace(".", "__")


class FeatureMapMatcher(nn.Module):
    """The learned projections of feature-map matching and its loss over the mapped layers.

    Args:
        pairs: ``(student_layer, teacher_layer)`` module names.
        widths: ``(student_width, teacher_width)`` per pair (:func:`output_width`).
        is_map: per pair, whether the student's layer gives ``(B, C, H, W)`` maps (a convolution) rather than
            ``(B, T, D)`` tokens.

    Like :class:`hf_distill.terms.hidden_states.HiddenStateMatcher` it trains with the student and is saved in each
    checkpoint beside it, but is not part of the student.
    """

    def __init__(self, pairs: list[tuple[str, str]], widths: list[tuple[int, int]], is_map: list[bool]):
        super().__init__()
        self.pairs = list(pairs)
        self.projections = nn.ModuleDict()
        for (student_layer, _), (student_width, teacher_width), conv in zip(pairs, widths, is_map):
            projection = projection_for(student_width, teacher_width, conv)
            if projection is not None:
                self.projections[projection_key(student_layer)] = projection

    def forward(self, student_maps: list[torch.Tensor], teacher_maps: list[torch.Tensor]) -> torch.Tensor:
        """Sum over pairs and examples of :func:`per_example_feature_loss`; the teacher's maps are detached."""
        total = student_maps[0].new_zeros((), dtype=torch.float32)
        for (student_layer, _), student_map, teacher_map in zip(self.pairs, student_maps, teacher_maps):
            key = projection_key(student_layer)
            projection = self.projections[key] if key in self.projections else None
            check_width(student_layer, student_map, teacher_map, projection)
            total = total + per_example_feature_loss(student_map, teacher_map.detach(), projection).sum()
        return total


def build_feature_map_matcher(
    pairs: list[tuple[str, str]], student: nn.Module, teacher: nn.Module
) -> FeatureMapMatcher:
    """The matcher for ``pairs`` of layers of the two (unwrapped) models, names checked and widths read."""
    widths, is_map = [], []
    for student_layer, teacher_layer in pairs:
        find_layer(student, student_layer, "student")
        find_layer(teacher, teacher_layer, "teacher")
        widths.append(
            (output_width(student, student_layer, "student"), output_width(teacher, teacher_layer, "teacher"))
        )
        is_map.append(makes_maps(student, student_layer))
    return FeatureMapMatcher(pairs, widths, is_map)
