"""Sequence-level knowledge distillation (Kim & Rush, 2016): train the student on the teacher's outputs.

Word-level KD matches the teacher's distribution at each position of the dataset's sequences. Sequence-level
KD approximates the teacher's distribution over whole sequences by its mode: the teacher decodes a completion
for every prompt (greedy by default; Kim & Rush use beam search, ``num_beams`` in ``generation_kwargs``),

    y_hat = argmax_y p_teacher(y | x)   (approximately),

and the student is then trained on ``(x, y_hat)`` with the ordinary trainer, the task term being cross-entropy
on the teacher's tokens and the KD term the word-level loss on them (the paper's best variant combines both).
:func:`generate_teacher_completions` builds that dataset once, before training.
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from torch import nn

from hf_distill.modes.on_policy import (
    PROMPT_ATTENTION_MASK,
    PROMPT_INPUT_IDS,
    PromptCompletionCollator,
    completions_to_batch,
    pad_and_eos_ids,
)


def _prompt_token_ids(
    prompts_dataset: Dataset, tokenizer: Any, prompt_column: str, max_prompt_length: int | None
) -> list[list[int]]:
    """The token ids of every prompt, from ``prompt_input_ids`` or by tokenizing ``prompt_column``.

    Raises ``ValueError`` when neither column is there or a prompt is left without a token.
    """
    columns = prompts_dataset.column_names
    if PROMPT_INPUT_IDS in columns:
        prompts = [list(p) for p in prompts_dataset[PROMPT_INPUT_IDS]]
    elif prompt_column in columns:
        prompts = tokenizer(list(prompts_dataset[prompt_column]), add_special_tokens=False)["input_ids"]
    else:
        raise ValueError(
            f"The prompts dataset has neither a {prompt_column!r} text column nor {PROMPT_INPUT_IDS!r} (it has "
            f"{columns}); pass prompt_column= naming the column that holds the prompts."
        )
    if max_prompt_length is not None:
        prompts = [p[-max_prompt_length:] for p in prompts]
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise ValueError(
            f"Prompts at rows {empty[:5]} have no token; the teacher needs at least one token to continue from. "
            "Drop empty prompts or prepend a BOS token."
        )
    return prompts


@torch.no_grad()
def generate_teacher_completions(
    teacher: nn.Module,
    tokenizer: Any,
    prompts_dataset: Dataset,
    max_new_tokens: int,
    *,
    prompt_column: str = "prompt",
    batch_size: int = 16,
    max_prompt_length: int | None = None,
    generation_kwargs: dict[str, Any] | None = None,
) -> Dataset:
    """Decodes the teacher's completion of every prompt and returns a training dataset.

    Args:
        teacher: a causal LM with ``generate``.
        tokenizer: the teacher's (and student's) tokenizer; its pad token (else EOS) pads the prompts.
        prompts_dataset: a column ``prompt_column`` of text prompts, or ``prompt_input_ids`` of token ids.
        max_new_tokens: the longest completion, in tokens (> 0).
        batch_size: prompts per ``generate`` call.
        max_prompt_length: keep each prompt's last tokens.
        generation_kwargs: passed to ``generate``; greedy decoding (``do_sample=False``) unless overridden.

    Returns a dataset with ``prompt_input_ids``, ``input_ids`` (prompt + completion up to and including the
    first EOS), ``attention_mask`` and ``labels`` (-100 on the prompt), in the order of the prompts; collate
    it with :class:`~hf_distill.modes.on_policy.PromptCompletionCollator`.
    """
    if max_new_tokens < 1:
        raise ValueError(
            f"max_new_tokens must be > 0, got {max_new_tokens}: the teacher must write at least one token per "
            "prompt for the student to learn from."
        )
    if max_prompt_length is not None and max_prompt_length < 1:
        raise ValueError(
            f"max_prompt_length must be >= 1 tokens or None (no limit), got {max_prompt_length}."
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 prompts per generate call, got {batch_size}.")
    prompts = _prompt_token_ids(prompts_dataset, tokenizer, prompt_column, max_prompt_length)
    pad, eos = pad_and_eos_ids(tokenizer, teacher)
    collate = PromptCompletionCollator(pad)
    kwargs = {"do_sample": False, **(generation_kwargs or {})}
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    rows: dict[str, list] = {PROMPT_INPUT_IDS: [], "input_ids": [], "attention_mask": [], "labels": []}
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            batch = collate([{"input_ids": p, PROMPT_INPUT_IDS: p} for p in chunk])
            prompt_ids = batch[PROMPT_INPUT_IDS].to(device)
            prompt_mask = batch[PROMPT_ATTENTION_MASK].to(device)
            sequences = teacher.generate(
                input_ids=prompt_ids,
                attention_mask=prompt_mask,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                eos_token_id=eos,
                **kwargs,
            )
            generated = completions_to_batch(prompt_ids.cpu(), prompt_mask.cpu(), sequences.cpu(), eos, pad)
            for prompt, mask, input_ids, labels in zip(
                chunk, generated["attention_mask"], generated["input_ids"], generated["labels"]
            ):
                length = int(mask.sum())
                rows[PROMPT_INPUT_IDS].append(prompt)
                rows["input_ids"].append(input_ids[:length].tolist())
                rows["attention_mask"].append([1] * length)
                rows["labels"].append(labels[:length].tolist())
    finally:
        teacher.train(was_training)
    return Dataset.from_dict(rows)
