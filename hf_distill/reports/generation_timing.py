"""Time per generated token: the latency of a causal LM as it ships, a generator.

A forward over a padded batch is what a decoder pays for its prompt once; what a user waits for is every token
after it. So a causal LM is timed on greedy ``generate`` with the KV cache, from a short prompt, with every
model made to write the same number of tokens (``min_new_tokens = max_new_tokens = N``, so an early EOS
cannot make a model look fast), through the same interleaved rounds as a forward
(:func:`hf_distill.reports.timing.time_models`, with the ``generate`` call in place of the forward).

**Time per token = the whole call / N**, the prompt's prefill included, rather than (the call - a prefill
forward) / N:

* it is the number a user measures, N tokens over the wall time of a ``generate`` call, so "1.4x the
  teacher's tokens/s" reads straight off it;
* one measured call per sample: subtracting a separately timed prefill makes each sample the difference of
  two noisy timings, which can fall near zero or below for a small model on a busy machine;
* every model gets the same prompt and the same N, so the prefill is a like-for-like share of each call
  (about one step in N, a little more for the prompt's length), and the ratio of two models' times per token
  is their ratio of tokens per second.

Every timed call checks the tokens it added: a model that writes fewer (or more) than N is refused rather
than timed per token it did not write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from hf_distill.reports.timing import MIN_RUN_TIME_S, Timings, default_timer, time_models

# Defaults of the budget search's generation timing. The prompt: the held-out documented functions of the
# Python standard library (the code recipe's prompts, a def line and its docstring) take 53 SmolLM2 tokens at
# the median (30 and 104 at the quartiles, 400 prompts). N: enough steps that the prefill is a small share.
DEFAULT_PROMPT_TOKENS = 64
DEFAULT_NEW_TOKENS = 32
PER_TOKEN = "generated token"


def generation_kwargs(model: nn.Module, new_tokens: int) -> dict[str, Any]:
    """The ``generate`` keyword arguments that make ``model`` write exactly ``new_tokens`` greedily.

    A transformers model (it has a ``generation_config``) gets greedy decoding with the KV cache,
    ``min_new_tokens = max_new_tokens = new_tokens`` and a pad token (its own, else its EOS, else 0) so
    ``generate`` neither warns nor stops early. Any other generator (an
    :class:`~hf_distill.export.runtime.OnnxModel`) gets ``max_new_tokens`` alone: it must not stop early, which
    :func:`generate_exactly` checks.

    Args:
        model (nn.Module): the model to time.
        new_tokens (int): N, the tokens every model writes.

    Returns:
        dict[str, Any]: keyword arguments for ``model.generate(**inputs, **kwargs)``.
    """
    config = getattr(model, "generation_config", None)
    if config is None:
        return {"max_new_tokens": new_tokens}
    pad = config.pad_token_id if config.pad_token_id is not None else config.eos_token_id
    if isinstance(pad, (list, tuple)):
        pad = pad[0] if pad else None
    return {
        "do_sample": False,
        "num_beams": 1,
        "use_cache": True,
        "min_new_tokens": new_tokens,
        "max_new_tokens": new_tokens,
        "pad_token_id": 0 if pad is None else pad,
    }


def generate_exactly(new_tokens: int) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]:
    """``call(model, inputs)``: one ``generate`` of ``new_tokens`` tokens from ``inputs``, refused (ValueError)
    when the model added another number of tokens (a timing per token needs the tokens counted)."""

    def call(model: nn.Module, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        output = model.generate(**inputs, **generation_kwargs(model, new_tokens))
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        added = sequences.shape[-1] - inputs["input_ids"].shape[-1]
        if added != new_tokens:
            raise ValueError(
                f"{type(model).__name__}.generate added {added} tokens where {new_tokens} were asked for: time "
                "per token divides by the tokens written, so every model must write the same number. Give a "
                "generate that honours min_new_tokens / max_new_tokens (or stops only at max_new_tokens)."
            )
        return sequences

    return call


def check_generation_sizes(prompt_tokens: int, new_tokens: int) -> None:
    """Refuses a prompt or N below 1, before anything is timed."""
    for name, value in (("prompt_tokens", prompt_tokens), ("new_tokens", new_tokens)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name}={value!r} must be a whole number of tokens, at least 1: the generation timing needs a "
                "prompt and at least one new token."
            )


def time_generation(
    models: Mapping[str, nn.Module],
    prompts: Mapping[int, Mapping[str, torch.Tensor]],
    new_tokens: int = DEFAULT_NEW_TOKENS,
    rounds: int = 5,
    *,
    threads: int | None = None,
    min_run_time: float = MIN_RUN_TIME_S,
    timer: Callable[[str, dict[str, Any], int], Any] = default_timer,
) -> Timings:
    """Milliseconds per generated token of every model at every batch size, interleaved (module docstring).

    Args:
        models (Mapping[str, nn.Module]): name -> causal LM (or any module with a ``generate`` like it).
        prompts (Mapping[int, Mapping[str, torch.Tensor]]): ``{batch size: {"input_ids", "attention_mask"}}``,
            the prompts every model continues.
        new_tokens (int): N, the tokens every call writes.
        rounds (int): interleaved rounds, one sample per model and batch size each.
        threads (int | None): ``torch.set_num_threads`` while timing (default: the current one).
        min_run_time (float): seconds each sample runs at least.
        timer (Callable): builds the timer, as in :func:`~hf_distill.reports.timing.time_models`.

    Returns:
        Timings: per model and batch size one sample per round in ms per generated token (``per`` says so).

    Raises:
        ValueError: no prompt, N below 1, or a model that did not write N tokens.
    """
    check_generation_sizes(min((p["input_ids"].shape[-1] for p in prompts.values()), default=0), new_tokens)
    timings = time_models(
        models, prompts, rounds, threads=threads, min_run_time=min_run_time, timer=timer,
        call=generate_exactly(new_tokens),
    )  # fmt: skip
    per_token = {
        name: {size: [ms / new_tokens for ms in samples] for size, samples in sizes.items()}
        for name, sizes in timings.samples_ms.items()
    }
    return dataclasses.replace(timings, samples_ms=per_token, per=PER_TOKEN)
