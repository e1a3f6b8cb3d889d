"""Where a model keeps its transformer blocks: the config's layer count and the ``nn.ModuleList`` that holds them.

Building a student (``build``), scoring layers (``importance``) and slicing widths (``width``) all start here.
"""

from __future__ import annotations

from torch import nn
from transformers import PretrainedConfig


def num_layers_of(config: PretrainedConfig) -> int:
    """The config's ``num_hidden_layers`` (GPT-2's ``n_layer`` through ``attribute_map``).

    Args:
        config (PretrainedConfig): a model's config.

    Returns:
        int: its number of transformer blocks.

    Raises:
        ValueError: the config has no integer layer count (composite models).
    """
    num_layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(num_layers, int):
        raise ValueError(
            f"The teacher's config ({type(config).__name__}) has no integer `num_hidden_layers`; composite "
            "models (encoder-decoder, vision-language) are not supported: build the student from the text "
            "model inside them."
        )
    return num_layers


def find_block_list(model: nn.Module, num_layers: int) -> str:
    """The name of the ``nn.ModuleList`` that holds the transformer blocks (``bert.encoder.layer``,
    ``transformer.h``, ``model.layers``): the outermost ModuleList of ``num_layers`` modules.

    Args:
        model (nn.Module): the model.
        num_layers (int): its config's number of blocks.

    Returns:
        str: the dotted module name of the block list.

    Raises:
        ValueError: no such list, or more than one.
    """
    candidates = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == num_layers
    ]
    # A ModuleList inside a block (MoE experts) can have the same length by chance; keep the outermost.
    outermost = [n for n in candidates if not any(n.startswith(other + ".") for other in candidates)]
    if len(outermost) != 1:
        found = outermost or "none"
        raise ValueError(
            f"Expected exactly one nn.ModuleList of {num_layers} blocks in {type(model).__name__} (the config's "
            f"num_hidden_layers), found {found}; this architecture is not supported by student_from_teacher."
        )
    return outermost[0]


def blocks_of(model: nn.Module) -> nn.ModuleList:
    """The model's transformer blocks, in order (:func:`find_block_list` on its config's layer count)."""
    return model.get_submodule(find_block_list(model, num_layers_of(model.config)))
