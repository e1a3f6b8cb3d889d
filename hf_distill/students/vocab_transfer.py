"""Giving a model another tokenizer: each new token's embedding built from the old vocabulary's embeddings.

:func:`transfer_vocabulary` replaces a model's input embeddings (and its LM head, tied or not) with rows for
a new tokenizer. Row of new token ``w``:

- the old row of the token that spells the same bytes (``Ġ``/``▁`` spellings compared as bytes, special
  tokens by role: eos with eos), when the old vocabulary has one;
- else the mean of the old rows of the pieces the old tokenizer cuts ``w``'s text into (bytes that are not
  valid UTF-8 on their own, such as half a character, use the old single-byte tokens);
- else (nothing to cut: an unmatched special token) the mean of all old rows.

So a student cut from the teacher's layers (:func:`hf_distill.students.build.student_from_teacher`) starts in the
new vocabulary from what the teacher knows about each piece instead of from random embeddings.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel

from hf_distill.token_alignment import is_byte_level, token_bytes, vocabulary_map

logger = logging.getLogger(__name__)


def piece_ids(new_tokenizer: Any, old_tokenizer: Any) -> list[list[int]]:
    """For each id of ``new_tokenizer`` (``len`` of it), the old ids whose rows its new row averages."""
    direct = vocabulary_map(new_tokenizer, old_tokenizer).tolist()
    # is_byte_level reads the tokenizer's whole serialised form: once per tokenizer, never per token.
    byte_level, old_byte_level = is_byte_level(new_tokenizer), is_byte_level(old_tokenizer)
    old_bytes = {}
    for token, index in old_tokenizer.get_vocab().items():
        spelled, _ = token_bytes(token, old_byte_level)
        if len(spelled) == 1 and spelled not in old_bytes:
            old_bytes[spelled] = index
    tokens = new_tokenizer.convert_ids_to_tokens(list(range(len(new_tokenizer))))
    special = set(getattr(new_tokenizer, "all_special_ids", []))
    pieces: list[list[int]] = []
    for index, token in enumerate(tokens):
        if direct[index] >= 0:
            pieces.append([direct[index]])
            continue
        if index in special or token is None:
            pieces.append([])
            continue
        spelled, _ = token_bytes(token, byte_level)
        try:
            ids = old_tokenizer(spelled.decode("utf-8"), add_special_tokens=False)["input_ids"]
        except UnicodeDecodeError:
            ids = [old_bytes[bytes([b])] for b in spelled if bytes([b]) in old_bytes]
        pieces.append(list(ids))
    return pieces


def _mean_rows(old: torch.Tensor, pieces: list[list[int]]) -> torch.Tensor:
    """``(len(pieces), ...)``: the mean of ``old``'s rows listed for each new row; all rows' mean if none."""
    fallback = old.mean(0)
    rows = [old[torch.tensor(ids)].mean(0) if ids else fallback for ids in pieces]
    return torch.stack(rows).to(old.dtype)


@torch.no_grad()
def transfer_vocabulary(
    model: PreTrainedModel, old_tokenizer: Any, new_tokenizer: Any, old_source: str | None = None
) -> str:
    """Gives ``model`` (in place) embeddings and LM head for ``new_tokenizer`` (see module docstring).

    Each new row starts from what the model knows about the same string or its pieces, instead of from random
    embeddings. ``config.vocab_size`` becomes ``len(new_tokenizer)`` and the bos / eos / pad ids the new
    tokenizer's; a tied head stays tied to the new embeddings, an untied one gets its own rows built the same
    way.

    Args:
        model (PreTrainedModel): the model to change in place; its embeddings are over ``old_tokenizer``'s
            vocabulary.
        old_tokenizer (PreTrainedTokenizerBase | None): the vocabulary the model has now; None loads it from
            ``old_source``.
        new_tokenizer (PreTrainedTokenizerBase): the vocabulary to move to.
        old_source (str | None): a folder or Hub id to load ``old_tokenizer`` from (e.g. the teacher's).

    Returns:
        str: the new tokenizer's ``name_or_path``.

    Raises:
        ValueError: neither ``old_tokenizer`` nor ``old_source`` is given.
    """
    if old_tokenizer is None:
        if not old_source:
            raise ValueError(
                "Moving the student to another tokenizer needs the teacher's tokenizer, to cut each new token "
                "into the teacher's pieces; pass teacher_tokenizer=AutoTokenizer.from_pretrained(<teacher>)."
            )
        old_tokenizer = AutoTokenizer.from_pretrained(old_source)
    pieces = piece_ids(new_tokenizer, old_tokenizer)
    old_input = model.get_input_embeddings()
    old_output = model.get_output_embeddings()
    tied = old_output is not None and old_output.weight is old_input.weight
    new_input = nn.Embedding(len(pieces), old_input.weight.shape[1], device=old_input.weight.device)
    new_input.weight.data = _mean_rows(old_input.weight, pieces)
    model.set_input_embeddings(new_input)
    if old_output is not None:
        bias = getattr(old_output, "bias", None)
        head = nn.Linear(
            old_output.weight.shape[1], len(pieces), bias=bias is not None, device=old_output.weight.device
        )
        head.weight.data = new_input.weight if tied else _mean_rows(old_output.weight, pieces)
        if bias is not None:
            head.bias.data = _mean_rows(bias.unsqueeze(-1), pieces).squeeze(-1)
        model.set_output_embeddings(head)
    model.config.vocab_size = len(pieces)
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.config, name, getattr(new_tokenizer, name, None))
    if tied:
        model.tie_weights()
    single = sum(len(p) == 1 for p in pieces)
    logger.info(
        "New vocabulary of %d tokens: %d rows from one teacher row, the rest averaged.", len(pieces), single
    )
    return str(new_tokenizer.name_or_path)
