"""Batches from torchvision-style datasets, whose items are ``(image, label)`` tuples.

``transformers.Trainer``'s default collator expects dict items and fails on tuples with "vars() argument must
have __dict__". :class:`TupleCollator` stacks them into ``{"pixel_values": (B, C, H, W), "labels": (B,)}``, the
names Transformers vision models take; :func:`tuple_collator_for` picks it when no ``data_collator`` is given
and a dataset yields tuples, after checking that both models' ``forward`` take that input.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

PIXEL_VALUES = "pixel_values"


class TupleCollator:
    """``[(image, label), ...]`` -> ``{input_name: stacked images (float), "labels": (B,) long}``.

    Torchvision-style datasets yield tuples, which the Trainer's default collator cannot batch. Images may be
    tensors or numpy arrays of one shape (already transformed: a PIL image needs a transform such as
    torchvision's ``ToTensor()`` first); labels ints or 0-d tensors.

    Args:
        input_name (str): the key the stacked images are given, the model's image input. Default
            ``"pixel_values"``, the name Transformers vision models take.

    Calling it on a list of ``B`` items returns ``dict[str, Tensor]``: ``{input_name: (B, *image.shape)
    float32, "labels": (B,) int64}``; it raises ValueError for an item that is not a pair or images of
    different shapes, TypeError for an image that is neither a tensor nor an array.
    """

    def __init__(self, input_name: str = PIXEL_VALUES):
        self.input_name = input_name

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        images, labels = [], []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ValueError(
                    f"TupleCollator takes (image, label) items, got {type(item).__name__}"
                    f"{f' of length {len(item)}' if isinstance(item, (tuple, list)) else ''}; for dict items use "
                    "transformers.default_data_collator."
                )
            image, label = item
            if not isinstance(image, (torch.Tensor, np.ndarray)):
                raise TypeError(
                    f"TupleCollator got an image of type {type(image).__name__}; it stacks tensors or numpy "
                    "arrays. Give the dataset a transform that returns a tensor (e.g. torchvision's "
                    "transforms.ToTensor())."
                )
            images.append(torch.as_tensor(image))
            labels.append(int(label))
        shapes = {tuple(image.shape) for image in images}
        if len(shapes) > 1:
            raise ValueError(
                f"The images of one batch have different shapes {sorted(shapes)}; resize them to one size in "
                "the dataset's transform before batching."
            )
        return {
            self.input_name: torch.stack(images).float(),
            "labels": torch.tensor(labels, dtype=torch.long),
        }


def yields_tuples(dataset: Any) -> bool:
    """Whether a map-style dataset's first item is a ``(image, label)`` pair (iterable datasets are not peeked)."""
    if dataset is None or not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
        return False
    if len(dataset) == 0:
        return False
    first = dataset[0]
    return isinstance(first, (tuple, list)) and len(first) == 2


def takes_input(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` accepts the keyword ``name`` (by name or through ``**kwargs``)."""
    parameters = inspect.signature(model.forward).parameters.values()
    return any(p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def tuple_collator_for(datasets: dict[str, Any], models: dict[str, nn.Module | None]) -> TupleCollator | None:
    """A :class:`TupleCollator` when no ``data_collator`` is given and the train or eval dataset yields tuples;
    ``ValueError`` when a model's ``forward`` cannot take the ``pixel_values`` it would pass."""
    if datasets.get("data_collator") is not None:
        return None
    splits = [name for name in ("train_dataset", "eval_dataset") if yields_tuples(datasets.get(name))]
    if not splits:
        return None
    for who, model in models.items():
        if isinstance(model, nn.Module) and not takes_input(model, PIXEL_VALUES):
            signature = inspect.signature(model.forward)
            raise ValueError(
                f"The {splits[0]} yields (image, label) tuples, which the trainer batches with "
                f"hf_distill.TupleCollator into {{'{PIXEL_VALUES}': images, 'labels': labels}}, but the {who}'s "
                f"forward{signature} takes no '{PIXEL_VALUES}'. Name the input argument {PIXEL_VALUES} (or wrap "
                "the model in a module whose forward(pixel_values) calls it)."
            )
    return TupleCollator()
