"""Where a block keeps its attention heads and MLP channels, for the architectures whose width can be sliced.

Three families, recognised by their modules rather than by ``model_type`` (so RoBERTa, SmolLM2, Mistral or Qwen2
are found through the family they copy):

- ``"bert"``: ``attention.self.{query,key,value}``, ``attention.output.dense``, ``intermediate.dense``,
  ``output.dense`` (``nn.Linear``, weights ``[out, in]``);
- ``"gpt2"``: ``attn.c_attn`` (q, k and v packed along the output), ``attn.c_proj``, ``mlp.c_fc``,
  ``mlp.c_proj`` (``Conv1D``, weights ``[in, out]``: transposed against ``nn.Linear``);
- ``"llama"``: ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj`` (``nn.Linear``), query heads in
  groups that share one key/value head.

Importance (activation magnitude) reads the inputs of the two output projections: the concatenated heads
(``attention_output``) and the MLP channels (``mlp_output``).
"""

from __future__ import annotations

from torch import nn

from hf_distill.students.blocks import blocks_of

FAMILIES = ("bert", "gpt2", "llama")
_MODULES = {
    "bert": (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ),
    "gpt2": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
    "llama": (
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ),
}
_ATTENTION_OUTPUT = {"bert": "attention.output.dense", "gpt2": "attn.c_proj", "llama": "self_attn.o_proj"}
_MLP_OUTPUT = {"bert": "output.dense", "gpt2": "mlp.c_proj", "llama": "mlp.down_proj"}


def _has(block: nn.Module, name: str) -> bool:
    try:
        block.get_submodule(name)
    except AttributeError:
        return False
    return True


def width_family(model: nn.Module) -> str:
    """The family (``"bert"``, ``"gpt2"`` or ``"llama"``) whose module layout every block of ``model`` has.

    Args:
        model (nn.Module): a transformers model with a config.

    Returns:
        str: one of :data:`FAMILIES`.

    Raises:
        ValueError: the blocks match none of them (named, with what each family needs).
    """
    blocks = blocks_of(model)
    for family, names in _MODULES.items():
        if all(_has(block, name) for block in blocks for name in names):
            return family
    layouts = "; ".join(f"{family}: {', '.join(names)}" for family, names in _MODULES.items())
    raise ValueError(
        f"{type(model).__name__} ({getattr(model.config, 'model_type', '?')}) cannot be pruned in width: its "
        f"blocks ({type(blocks[0]).__name__}) have none of the module layouts whose heads and channels can be "
        f"sliced ({layouts}). Prune it in depth only (student_from_teacher), or build a smaller one with "
        "student_from_config."
    )


def head_layout(model: nn.Module, family: str) -> tuple[int, int, int]:
    """``(query heads, key/value heads, head size)`` per block, from the config."""
    config = model.config
    heads = config.num_attention_heads
    if family != "llama":  # BERT and GPT-2 derive the head size from the hidden size
        return heads, heads, config.hidden_size // heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


def attention_output(block: nn.Module, family: str) -> nn.Module:
    """The projection whose input is the block's heads, concatenated (BERT ``attention.output.dense``,
    GPT-2 ``attn.c_proj``, Llama ``self_attn.o_proj``)."""
    return block.get_submodule(_ATTENTION_OUTPUT[family])


def mlp_output(block: nn.Module, family: str) -> nn.Module:
    """The projection whose input is the block's MLP channels (after the activation, and the gate for Llama)."""
    return block.get_submodule(_MLP_OUTPUT[family])


# What slicing a block's width touches: ``{module: (dim of .weight, what indexes it)}``, where ``"q"`` is the
# query heads' rows (``heads x head_dim``), ``"kv"`` the key/value heads' rows, ``"channels"`` the MLP channels.
# A bias follows its weight when the sliced dim is the output (dim 0 of a Linear, dim 1 of a Conv1D).
_SLICES = {
    "bert": {
        "intermediate.dense": (0, "channels"),
        "output.dense": (1, "channels"),
    },
    "gpt2": {  # Conv1D weights are [in, out]
        "mlp.c_fc": (1, "channels"),
        "mlp.c_proj": (0, "channels"),
    },
    "llama": {
        "self_attn.q_proj": (0, "q"),
        "self_attn.k_proj": (0, "kv"),
        "self_attn.v_proj": (0, "kv"),
        "self_attn.o_proj": (1, "q"),
        "mlp.gate_proj": (0, "channels"),
        "mlp.up_proj": (0, "channels"),
        "mlp.down_proj": (1, "channels"),
    },
}
# Config entries the new sizes go to (through attribute_map: GPT-2's intermediate size is `n_inner`).
INTERMEDIATE_KEY = {"bert": "intermediate_size", "gpt2": "n_inner", "llama": "intermediate_size"}


def width_slices(family: str) -> dict[str, tuple[int, str]]:
    """``{module name in a block: (weight dim to slice, "q" | "kv" | "channels")}`` for ``family``."""
    return _SLICES[family]


def bias_follows(family: str, dim: int) -> bool:
    """Whether a sliced weight's bias is sliced too: when the weight's output dim is the one sliced."""
    output_dim = 1 if family == "gpt2" else 0
    return dim == output_dim


def intermediate_size_of(model: nn.Module, family: str) -> int:
    """The MLP's width (GPT-2's ``n_inner`` is None for ``4 * n_embd``)."""
    config = model.config
    if family == "gpt2":
        return config.n_inner or 4 * config.n_embd
    return config.intermediate_size
