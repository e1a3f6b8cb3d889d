"""Building a student from a teacher.

Three ways to get a student, from the most to the least of the teacher it keeps:

- :func:`student_from_teacher`: the DistilBERT recipe (Sanh et al., 2019). Same class and config as the
  teacher with fewer transformer blocks; embeddings, the kept blocks, final norms, pooler and task heads are
  copied, so the student starts close to the teacher and distillation only has to repair the gaps.
- :func:`student_from_config`: a fresh, randomly initialised model of the teacher's class with a smaller
  config; the embeddings are copied only when they still fit.
- :func:`gpt2_student_for`: a random GPT-2 that shares the teacher's vocabulary (or has its own tokenizer's,
  for cross-tokenizer distillation), whatever the teacher's architecture.

Every student records where it came from in ``config.distillation``, which ``save_pretrained`` writes to
``config.json`` and ``from_pretrained`` reads back.
"""

from __future__ import annotations

import difflib
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel, PretrainedConfig, PreTrainedModel

from hf_distill.students.blocks import find_block_list, num_layers_of
from hf_distill.students.derived import model_like
from hf_distill.students.layer_choice import choose_layers, select_layers
from hf_distill.students.vocab_transfer import transfer_vocabulary

logger = logging.getLogger(__name__)

# Config entries that are lists but not one entry per layer, even when their length happens to equal the
# number of layers (Llama 3 has `eos_token_id: [128001, 128008, 128009]`; MTP layers are counted apart).
_NOT_PER_LAYER_SUFFIXES = ("token_id", "token_ids")
_NOT_PER_LAYER_KEYS = {"architectures"}
_NOT_PER_LAYER_PREFIXES = ("mtp_",)

WEIGHT_FILE_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


def _validate_overrides(config: PretrainedConfig, overrides: dict[str, Any]) -> None:
    """Raise if an override does not name an attribute of ``config`` (a typo would be ignored otherwise)."""
    known = set(config.to_dict()) | set(config.attribute_map) | {"num_labels"}
    for name in overrides:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise ValueError(f"{type(config).__name__} has no attribute {name!r} to override.{hint}")


def _is_per_layer_list(key: str, value: Any, num_layers: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == num_layers
        and key not in _NOT_PER_LAYER_KEYS
        and not key.endswith(_NOT_PER_LAYER_SUFFIXES)
        and not key.startswith(_NOT_PER_LAYER_PREFIXES)
    )


def _derive_config(
    teacher_config: PretrainedConfig, layers: Sequence[int] | None, overrides: dict[str, Any]
) -> PretrainedConfig:
    """A copy of ``teacher_config`` with ``overrides`` applied and per-layer entries kept for ``layers``.

    Goes through ``to_dict``/``from_dict`` rather than ``setattr`` on a deep copy so that the config class
    re-validates the whole result once (``num_hidden_layers`` against ``layer_types``) instead of seeing a
    half-updated config after each assignment.
    """
    num_teacher_layers = num_layers_of(teacher_config)
    values = teacher_config.to_dict()
    # The serialised name of an aliased attribute (GPT-2 stores `hidden_size` as `n_embd`).
    alias = teacher_config.attribute_map
    overrides = {alias.get(name, name): value for name, value in overrides.items()}
    layers_key = alias.get("num_hidden_layers", "num_hidden_layers")
    if layers is not None:
        if layers_key in overrides:
            raise ValueError(
                "Set the number of layers with `layers` or `num_layers`, not as a config override."
            )
        overrides[layers_key] = len(layers)
    if values.pop("quantization_config", None) is not None:
        # A teacher loaded from GGUF (or another quantised format) holds dequantised tensors once loaded; the
        # student is built from plain modules, and a carried-over quantisation config would make
        # `from_pretrained` treat its saved weights as quantised.
        logger.warning("Dropped quantization_config from the student's config: the student is not quantised.")
    if "num_labels" in overrides:
        # `id2label` from the teacher would contradict the new number of labels.
        values.pop("id2label", None)
        values.pop("label2id", None)

    new_num_layers = overrides.get(layers_key, num_teacher_layers)
    if new_num_layers != num_teacher_layers:
        if layers is None:
            # A random student has no teacher layers, but per-layer entries (attention types) still need one
            # value per layer; take them from the layers a copying student would keep.
            if new_num_layers > num_teacher_layers:
                per_layer = [k for k, v in values.items() if _is_per_layer_list(k, v, num_teacher_layers)]
                missing = [k for k in per_layer if k not in overrides]
                if missing:
                    raise ValueError(
                        f"The student has more layers ({new_num_layers}) than the teacher "
                        f"({num_teacher_layers}); pass the per-layer config entries {missing} explicitly."
                    )
            else:
                layers = select_layers(num_teacher_layers, new_num_layers, "uniform")
        if layers is not None:
            for key, value in values.items():
                if key not in overrides and _is_per_layer_list(key, value, num_teacher_layers):
                    values[key] = [value[i] for i in layers]
                    logger.info("Kept the entries of config.%s for layers %s.", key, list(layers))
            # Heterogeneous configs store sparse per-layer overrides keyed by (zero-padded) layer index.
            sparse = values.get("per_layer_config")
            if isinstance(sparse, dict) and sparse:
                new_index = {old: new for new, old in enumerate(layers)}
                values["per_layer_config"] = {
                    str(new_index[int(k)]): v for k, v in sparse.items() if int(k) in new_index
                }
    values.update(overrides)
    return type(teacher_config).from_dict(values)


def _renumber(name: str, block_prefix: str, new_index: dict[int, int]) -> str | None:
    """Map ``<prefix><i>.<rest>`` to ``<prefix><new_index[i]>.<rest>``; None for a dropped block."""
    if not name.startswith(block_prefix):
        return name
    index, rest = name[len(block_prefix) :].split(".", 1)
    if int(index) not in new_index:
        return None
    return f"{block_prefix}{new_index[int(index)]}.{rest}"


def _copy_non_persistent_buffers(
    teacher: nn.Module, student: nn.Module, rename: Callable[[str], str | None]
) -> None:
    """Copy buffers that the state dict leaves out (rotary ``inv_freq``, ``position_ids``).

    The student rebuilds them from the config, but a teacher cast with ``.to(dtype)`` holds them in that dtype
    and computes with them; copying makes the student compute exactly what the teacher's kept layers do.
    """
    student_buffers = dict(student.named_buffers())
    persistent = set(student.state_dict())
    for name, buffer in teacher.named_buffers():
        target = rename(name)
        if target is None or target in persistent or target not in student_buffers:
            continue
        if student_buffers[target].shape != buffer.shape:
            continue
        module_name, _, leaf = target.rpartition(".")
        student.get_submodule(module_name)._buffers[leaf] = buffer.detach().clone()


def _warn_if_scaled_by_layer_index(config: PretrainedConfig, layers: list[int]) -> None:
    if getattr(config, "scale_attn_by_inverse_layer_idx", False) and layers != list(range(len(layers))):
        logger.warning(
            "scale_attn_by_inverse_layer_idx is set: attention in block j is scaled by 1/(j+1), so renumbered "
            "teacher blocks will not compute exactly what they did in the teacher."
        )


def _provenance(teacher: PreTrainedModel, init: str, **details: Any) -> dict[str, Any]:
    return {"teacher": teacher.name_or_path, "init": init, **details}


def _teacher_state_for(
    teacher: nn.Module,
    student: nn.Module,
    block_prefix: str,
    new_index: dict[int, int],
    config_overrides: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """The teacher's tensors under the student's names (kept blocks renumbered), each checked against the
    student's shape, and every student tensor provided."""
    student_state = student.state_dict()
    copied: dict[str, torch.Tensor] = {}
    for name, tensor in teacher.state_dict().items():
        target = _renumber(name, block_prefix, new_index)
        if target is None:
            continue
        if target not in student_state:
            raise ValueError(f"Teacher tensor {name!r} has no counterpart {target!r} in the student.")
        expected = student_state[target].shape
        if tensor.shape != expected:
            cause = (
                f"the config overrides {sorted(config_overrides)} change this tensor's size; use "
                "student_from_config for a student with other sizes"
                if config_overrides
                else "the student's config does not rebuild the teacher's layer shapes"
            )
            raise ValueError(
                f"Cannot copy {name!r} into {target!r}: teacher shape {tuple(tensor.shape)}, student shape "
                f"{tuple(expected)}. Likely cause: {cause}."
            )
        copied[target] = tensor
    missing = sorted(set(student_state) - set(copied))
    if missing:
        raise ValueError(f"The student has tensors the teacher did not provide: {missing}.")
    return copied


def student_from_teacher(
    teacher: PreTrainedModel,
    layers: Sequence[int] | str | None = None,
    num_layers: int | None = None,
    strategy: str = "uniform",
    tokenizer: Any = None,
    teacher_tokenizer: Any = None,
    calibration: Iterable[Mapping[str, torch.Tensor]] | None = None,
    importance_method: str = "block_influence",
    **config_overrides: Any,
) -> PreTrainedModel:
    """A student of the teacher's class that keeps some of its transformer blocks (DistilBERT-style).

    Copying the teacher's blocks and every other tensor starts the student close to the teacher, so
    distillation only has to repair the gaps. Teacher block ``layers[j]`` becomes student block ``j``; every
    other tensor (embeddings, final norms, pooler, classification or LM heads) is copied unchanged, and tied
    embeddings stay tied.

    Args:
        teacher (PreTrainedModel): the model to cut; the student has its class, dtype, label maps and
            training mode.
        layers (Sequence[int] | str | None): teacher block indices to keep, strictly increasing; or
            ``"importance"``: the ``num_layers`` most important blocks on ``calibration``. None: chosen by
            ``num_layers`` and ``strategy``.
        num_layers (int | None): how many blocks to keep, when ``layers`` is not a list of indices.
        strategy (str): how :func:`select_layers` picks ``num_layers`` blocks: ``"uniform"``,
            ``"every_other"``, ``"first"`` or ``"last"``. Default ``"uniform"``.
        tokenizer (PreTrainedTokenizerBase | None): another vocabulary for the student: each row the teacher's
            row of the same string or the mean of its pieces'
            (:func:`hf_distill.students.vocab_transfer.transfer_vocabulary`). None keeps the teacher's.
        teacher_tokenizer (PreTrainedTokenizerBase | None): the teacher's, with ``tokenizer`` (None: loaded).
        calibration (Iterable[Mapping[str, Tensor]] | None): batches of model inputs, only with
            ``layers="importance"``.
        importance_method (str): :func:`hf_distill.students.importance.layer_importance`'s ``method``:
            ``"block_influence"`` (default) or ``"skip_loss"`` (the batches need ``labels``).
        **config_overrides (Any): attributes of the teacher's config to change (e.g.
            ``hidden_dropout_prob=0.0``); not sizes of copied tensors, nor the number of layers.

    Returns:
        PreTrainedModel: the student, with the teacher's config but ``num_hidden_layers = len(layers)``
        (per-layer entries such as ``layer_types`` keep the kept layers' values) and ``config.distillation =
        {"teacher": ..., "init": "teacher_layers", "layers": [...], "strategy": ...}``.

    Raises:
        ValueError: bad layer indices, both or neither of ``layers`` and ``num_layers``, unknown overrides,
            blocks that cannot be found, or a copied tensor whose shape differs from the student's (overrides
            that change sizes: :func:`student_from_config`).
    """
    num_teacher_layers = num_layers_of(teacher.config)
    layers, chosen_by, importance = choose_layers(
        teacher, layers, num_layers, strategy, calibration, importance_method
    )
    _validate_overrides(teacher.config, config_overrides)

    _warn_if_scaled_by_layer_index(teacher.config, layers)

    block_prefix = find_block_list(teacher, num_teacher_layers) + "."
    config = _derive_config(teacher.config, layers, config_overrides)
    student = model_like(teacher, config)

    new_index = {old: new for new, old in enumerate(layers)}
    copied = _teacher_state_for(teacher, student, block_prefix, new_index, config_overrides)
    # load_state_dict copies in place, so parameters tied at construction (lm_head to the embeddings) stay
    # one tensor.
    student.load_state_dict(copied, strict=True)
    _copy_non_persistent_buffers(teacher, student, lambda name: _renumber(name, block_prefix, new_index))

    details = {
        "layers": layers,
        "strategy": chosen_by,
        "num_teacher_layers": num_teacher_layers,
        **importance,
    }
    if tokenizer is not None:
        details["tokenizer"] = transfer_vocabulary(
            student, teacher_tokenizer, tokenizer, teacher.name_or_path
        )
    student.config.distillation = _provenance(teacher, "teacher_layers", **details)
    student.train(teacher.training)
    return student


def _position_embedding_name(model: PreTrainedModel) -> str | None:
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Embedding) and leaf in ("position_embeddings", "wpe", "embed_positions"):
            return name
    return None


def student_from_config(teacher: PreTrainedModel, **overrides: Any) -> PreTrainedModel:
    """A randomly initialised student of the teacher's class, from the teacher's config plus ``overrides``.

    For example ``student_from_config(bert, num_hidden_layers=2, hidden_size=128, intermediate_size=512,
    num_attention_heads=2)``. The word embeddings (and learned position embeddings, if any) are copied from
    the teacher when the hidden size is unchanged and their shapes match: token meanings then survive even
    though the blocks are new. Otherwise they stay random.

    Args:
        teacher (PreTrainedModel): whose class, config, dtype and training mode the student takes.
        **overrides (Any): attributes of the teacher's config to change (aliases such as GPT-2's
            ``hidden_size`` for ``n_embd`` are accepted). When the layer count shrinks, per-layer config
            entries keep the values of the layers :func:`select_layers` would keep; when it grows, they must
            be passed too.

    Returns:
        PreTrainedModel: the student; ``config.distillation`` records what was copied:
        ``{"teacher": ..., "init": "random", "copied": [...], "left_random": {name: reason}}``.

    Raises:
        ValueError: an override that is not an attribute of the teacher's config, or more layers than the
            teacher without the per-layer entries.
    """
    _validate_overrides(teacher.config, overrides)
    config = _derive_config(teacher.config, None, overrides)
    student = model_like(teacher, config)

    copied: list[str] = []
    left_random: dict[str, str] = {}
    teacher_hidden, student_hidden = teacher.config.hidden_size, student.config.hidden_size
    pairs = [("word_embeddings", teacher.get_input_embeddings(), student.get_input_embeddings())]
    position_name = _position_embedding_name(teacher)
    if position_name is not None:
        pairs.append(
            (
                "position_embeddings",
                teacher.get_submodule(position_name),
                student.get_submodule(position_name),
            )
        )
    for label, source, target in pairs:
        if teacher_hidden != student_hidden:
            left_random[label] = f"hidden size changed from {teacher_hidden} to {student_hidden}"
        elif source.weight.shape != target.weight.shape:
            left_random[label] = (
                f"shape {tuple(target.weight.shape)} differs from the teacher's {tuple(source.weight.shape)}"
            )
        else:
            with torch.no_grad():
                target.weight.copy_(source.weight)
            copied.append(label)

    student.config.distillation = _provenance(teacher, "random", copied=copied, left_random=left_random)
    student.train(teacher.training)
    return student


def gpt2_student_for(
    teacher_or_tokenizer: Any,
    n_layer: int = 6,
    n_embd: int | None = None,
    n_head: int | None = None,
    n_positions: int | None = None,
    tokenizer: Any = None,
    **config_overrides: Any,
) -> GPT2LMHeadModel:
    """A randomly initialised ``GPT2LMHeadModel`` over the teacher's vocabulary, or ``tokenizer``'s.

    From a model or config, the vocabulary size is the config's (which may be padded beyond the tokenizer's:
    it is what the teacher's logits have), and the sizes default to the teacher's, which keeps hidden-state
    losses possible without a projection.

    Args:
        teacher_or_tokenizer (PreTrainedModel | PretrainedConfig | PreTrainedTokenizerBase): from a model or
            config: ``vocab_size`` and the bos / eos / pad ids of its config, sizes defaulting to its hidden
            size, attention heads and maximum positions. From a tokenizer: ``vocab_size = len(tokenizer)``
            (added tokens included), its ids, sizes defaulting to GPT-2 small's (768, 12, 1024).
        n_layer (int): transformer blocks. Default 6.
        n_embd (int | None): hidden size; None takes the default above. Must be divisible by ``n_head``.
        n_head (int | None): attention heads; None takes the default above.
        n_positions (int | None): maximum sequence length; None takes the default above.
        tokenizer (PreTrainedTokenizerBase | None): another vocabulary (e.g. GPT-2's, for cross-tokenizer
            distillation): vocabulary size and ids from it, sizes still from the teacher.
        **config_overrides (Any): passed to ``GPT2Config`` (e.g. ``resid_pdrop=0.0``).

    Returns:
        GPT2LMHeadModel: the student, with ``config.distillation = {"teacher": ..., "init": "random",
        "architecture": "gpt2", "shared": ...}`` (``"vocabulary"`` or the other tokenizer's name).

    Raises:
        TypeError: ``teacher_or_tokenizer`` is not a model, config or tokenizer.
        ValueError: ``n_embd`` not divisible by ``n_head``.
    """
    config = getattr(teacher_or_tokenizer, "config", teacher_or_tokenizer)
    if isinstance(config, PretrainedConfig):
        source_name = getattr(teacher_or_tokenizer, "name_or_path", None) or config.name_or_path
        vocab_size, id_source = config.vocab_size, config
        max_positions = getattr(config, "max_position_embeddings", None) or 1024
        defaults = (config.hidden_size, config.num_attention_heads, max_positions)
    elif hasattr(teacher_or_tokenizer, "convert_tokens_to_ids"):
        source_name, vocab_size = teacher_or_tokenizer.name_or_path, len(teacher_or_tokenizer)
        id_source, defaults = teacher_or_tokenizer, (768, 12, 1024)
    else:
        raise TypeError(
            f"gpt2_student_for needs a model, a config or a tokenizer, got {type(teacher_or_tokenizer).__name__}."
        )
    if tokenizer is not None:
        vocab_size, id_source = len(tokenizer), tokenizer
    ids = {k: getattr(id_source, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    n_embd = defaults[0] if n_embd is None else n_embd
    n_head = defaults[1] if n_head is None else n_head
    n_positions = defaults[2] if n_positions is None else n_positions
    if n_embd % n_head:
        raise ValueError(f"n_embd ({n_embd}) must be divisible by n_head ({n_head}).")
    gpt2_config = GPT2Config(
        vocab_size=vocab_size,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        **ids,
        **config_overrides,
    )
    shared = "vocabulary" if tokenizer is None else f"none (tokenizer {tokenizer.name_or_path})"
    gpt2_config.distillation = dict(teacher=source_name, init="random", architecture="gpt2", shared=shared)
    return GPT2LMHeadModel(gpt2_config)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters; tied parameters (lm_head and embeddings) count once, as they are stored once.

    Args:
        model (nn.Module): the model to count.
        trainable_only (bool): count only parameters with ``requires_grad``. Default False (all).

    Returns:
        int: the number of scalar parameters.
    """
    # `parameters()` already yields each shared Parameter once.
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_size_on_disk(model_or_folder: PreTrainedModel | str | os.PathLike) -> int:
    """Bytes the weights take on disk.

    Args:
        model_or_folder (PreTrainedModel | str | os.PathLike): a model, saved with ``save_pretrained``
            (safetensors) to a temporary folder that is measured; a folder, whose weight files
            (``*.safetensors``, ``*.bin``, ``*.pt``, ``*.pth``, ``*.gguf``, searched recursively) are summed,
            config and tokenizer files left out; or a single file.

    Returns:
        int: the size in bytes.

    Raises:
        FileNotFoundError: the path does not exist, or a folder holds no weight file.
    """
    if isinstance(model_or_folder, nn.Module):
        with tempfile.TemporaryDirectory() as folder:
            # transformers 5 always writes safetensors.
            model_or_folder.save_pretrained(folder)
            return model_size_on_disk(folder)
    path = Path(model_or_folder)
    if path.is_file():
        return path.stat().st_size
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a model folder nor a weight file.")
    sizes = [
        f.stat().st_size for f in path.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_FILE_SUFFIXES)
    ]
    if not sizes:
        raise FileNotFoundError(f"No weight files ({', '.join(WEIGHT_FILE_SUFFIXES)}) in {path}.")
    return sum(sizes)
