"""The wire format of a served teacher: vLLM's ``prompt_logprobs`` on ``POST /v1/completions``, both ways.

A request scores token-id prompts and asks for the top-k log-probabilities at every prompt position
(:func:`completion_request`); the answer holds, per prompt, ``choices[i].prompt_logprobs``: one entry per
prompt token, ``null`` for the first (nothing predicts it), then ``{"<token id>": {"logprob", "rank",
"decoded_token"}}`` holding the top-k tokens and the prompt's own token (with its rank, which may exceed k).
That is the shape of vLLM's OpenAI-compatible server (``vllm/entrypoints/openai/protocol.py``, the
``prompt_logprobs`` extra parameter of the Completions API, and the "prompt logprobs" example of its docs);
TRL's served-teacher distillation (``trl/experimental/distillation``: ``teacher_model_server_url``,
``loss_top_k``, ``loss_add_tail``) and Axolotl's online KD collator (``axolotl/integrations/kd``:
``kd_online_server_base_url``, ``kd_online_topk``, posting token-id prompts with ``prompt_logprobs``) read the
same answer. ``hf-distill serve-teacher`` (:mod:`hf_distill.teachers.server`) writes it with
:func:`prompt_logprobs_entries`; :func:`parse_prompt_logprobs` reads it.

Positions. Entry ``t + 1`` is the teacher's distribution over the token at ``t + 1``, i.e. its logits at
position ``t``: :func:`parse_prompt_logprobs` returns rows aligned like a model's logits (row ``t`` predicts
token ``t + 1``), as the top-k cache stores them. The last position's prediction (of the token after the
prompt) is not in ``prompt_logprobs``: it is the distribution of the one generated token, asked with
``logprobs=k`` and ``return_tokens_as_token_ids`` (vLLM's extension: ``top_logprobs`` keyed ``"token_id:N"``);
a server that does not send it leaves that row empty (values 0, ids 0 to k-1, tail 0), which a causal LM's
loss never reads (labels are shifted).

Values. The top-k values are the teacher's log-probabilities ``log p_j = z_j - logsumexp(z)`` at temperature
1, and the tail logit is ``log(1 - sum_K p_j)``. Softmax is shift-invariant, so ``softmax([log p_K, tail])``
equals the cache's ``softmax([z_K, logsumexp_{j not in K} z_j])``: at T = 1 the target is exactly the cached
top-k target (up to float32 rounding of the log-probabilities sent).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from hf_distill.cache.interchange import tail_from_logprobs

COMPLETIONS, MODELS = "/completions", "/models"


def completion_request(model: str, prompts: Sequence[Sequence[int]] | str, top_k: int) -> dict[str, Any]:
    """The body of ``POST /v1/completions`` that scores ``prompts`` (token-id rows, or a text for the probe).

    ``max_tokens=1``: the prompt is scored and one token generated (some servers refuse 0); ``temperature=1``:
    a server that returns processed log-probabilities (vLLM's ``--logprobs-mode processed_logprobs``) then
    returns the raw ones, which the target needs; ``prompt_logprobs=top_k``: the top-k at every position.
    """
    prompt: Any = prompts if isinstance(prompts, str) else [list(map(int, row)) for row in prompts]
    return {
        "model": model,
        "prompt": prompt,
        "max_tokens": 1,
        "temperature": 1.0,
        "prompt_logprobs": int(top_k),
        "logprobs": int(top_k),
        "return_tokens_as_token_ids": True,
    }


def choices_in_order(response: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    """The response's choices, one per prompt, in prompt order (vLLM numbers them by ``index``)."""
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != expected:
        got = len(choices) if isinstance(choices, list) else type(choices).__name__
        raise ValueError(
            f"The teacher server answered {got} choices for {expected} prompts; an OpenAI-compatible "
            "/v1/completions returns one choice per prompt (n=1)."
        )
    return sorted(choices, key=lambda c: int(c.get("index", 0)))


def ranked_top_k(entry: dict[str, Any], top_k: int, position: int) -> tuple[list[int], list[float]]:
    """The ``top_k`` (id, log-probability) pairs of one ``prompt_logprobs`` entry, largest first.

    The entry may also hold the prompt's own token with a rank above ``top_k``: it is left out. Raises when the
    entry holds fewer than ``top_k`` ranked tokens (a server that caps the top-k lower than asked), and when any
    of its values is not a finite log-probability (:func:`logprob_value`)."""
    items = []
    for key, value in entry.items():
        # Every value is checked before ranking, not only the k kept: sorting with a NaN orders the others
        # arbitrarily, so a NaN cut off by [:top_k] would leave a wrong top-k that is all finite.
        logprob = logprob_value(value, f"token {key} at prompt position {position}")
        rank = value.get("rank") if isinstance(value, dict) else None
        items.append((int(key), logprob, rank))
    ranked = [item for item in items if item[2] is None or int(item[2]) <= top_k]
    ranked.sort(key=lambda item: -item[1])
    if len(ranked) < top_k:
        raise ValueError(
            f"The teacher server returned {len(ranked)} ranked log-probabilities at prompt position {position}, "
            f"but top_k={top_k} was asked: the server caps the top-k lower than asked. Start it with a higher "
            f"cap (vLLM: --max-logprobs {top_k}; hf-distill serve-teacher: --top_k {top_k}), or ask for less."
        )
    ranked = ranked[:top_k]
    return [i for i, _, _ in ranked], [lp for _, lp, _ in ranked]


def logprob_value(value: Any, where: str) -> float:
    """The log-probability of one ``prompt_logprobs`` value (a ``{"logprob": ...}`` mapping or a bare number).

    Args:
        value: the value as the server sent it.
        where: which token and position, for the message.

    Returns:
        The log-probability, a finite float <= 0 (up to float rounding).

    Raises:
        ValueError: a value that is missing, not a number, NaN, infinite or positive; the top-k target and the
            held-out NLL would be NaN or wrong, and no later check sees a served target's values.
    """
    raw = value.get("logprob") if isinstance(value, dict) else value
    number = raw if isinstance(raw, (int, float)) and not isinstance(raw, bool) else None
    if number is None or not (math.isfinite(number) and number <= 1e-4):
        null = " (JSON null: some servers write NaN or infinity as null)" if raw is None else ""
        raise ValueError(
            f"The teacher server returned log-probability {raw!r}{null} for {where}; a log-probability is "
            "finite and <= 0, and a NaN or infinity here would make the distillation loss or the held-out NLL "
            "NaN. The served model's numerics are broken: check that a local forward pass of it gives finite "
            "logits, and serve it in float32 or bfloat16 rather than float16, which overflows (vLLM: --dtype; "
            "hf-distill serve-teacher: --dtype float32)."
        )
    return float(number)


def last_position(choice: dict[str, Any], top_k: int) -> dict[str, dict[str, float]] | None:
    """The generated token's ``top_logprobs`` as a ``prompt_logprobs``-style entry (ids as keys), or None when
    the server did not send them keyed by token id."""
    logprobs = choice.get("logprobs") or {}
    top = logprobs.get("top_logprobs") or []
    if not top or not isinstance(top[0], dict):
        return None
    entry = {}
    for key, value in top[0].items():
        if not str(key).startswith("token_id:"):
            return None
        entry[str(key)[len("token_id:") :]] = {"logprob": value}  # checked by ranked_top_k
    return entry if len(entry) >= top_k else None


def parse_prompt_logprobs(
    entries: Sequence[dict[str, Any] | None], top_k: int, last: dict[str, Any] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One prompt's ``prompt_logprobs`` as the top-k target of its ``T`` positions.

    Args:
        entries: ``choices[i].prompt_logprobs``: ``T`` entries, the first ``None``.
        top_k: how many ranked tokens each entry must hold.
        last: the last position's entry (:func:`last_position`), or None to leave that row empty.

    Returns:
        ``(values (T, k) float32, ids (T, k) int64, tail (T,) float32)``: row ``t`` is the distribution over
        token ``t + 1`` (log-probabilities at T=1 and the tail logit); the last row from ``last`` (module
        docstring).
    """
    length = len(entries)
    values = np.zeros((length, top_k), dtype=np.float32)
    ids = np.tile(np.arange(top_k, dtype=np.int64), (length, 1))  # distinct ids, as a top-k's are
    tail = np.zeros(length, dtype=np.float32)
    if length and entries[0] is not None:
        raise ValueError(
            "The first prompt_logprobs entry of a prompt is null in vLLM's format (nothing predicts the first "
            "token); this server returned a value there, so its positions would be misaligned."
        )
    for position in range(1, length):
        entry = entries[position]
        if not isinstance(entry, dict):
            raise ValueError(
                f"prompt_logprobs entry {position} is {entry!r}; every entry after the first is a mapping of "
                "token ids to log-probabilities. Is prefix caching on? (vLLM: --no-enable-prefix-caching)"
            )
        row_ids, row_values = ranked_top_k(entry, top_k, position)
        ids[position - 1], values[position - 1] = row_ids, row_values
    filled = length - 1
    if last is not None and length:
        row_ids, row_values = ranked_top_k(last, top_k, length)
        ids[length - 1], values[length - 1] = row_ids, row_values
        filled = length
    if filled > 0:
        tail[:filled] = tail_from_logprobs(values[:filled])
    return values, ids, tail


def prompt_token_logprobs(entries: Sequence[dict[str, Any] | None], prompt: Sequence[int]) -> np.ndarray:
    """The teacher's log-probability of each prompt token after the first, from one prompt's ``prompt_logprobs``
    (every entry holds the prompt's own token, ranked or not: vLLM's shape): ``(T - 1,)`` float64, entry ``t``
    the log-probability of ``prompt[t + 1]`` given the tokens before it, what a held-out NLL sums.

    Raises:
        ValueError: an entry count other than the prompt's, an entry without the prompt's own token, or a value
            that is not a finite log-probability <= 0.
    """
    if len(entries) != len(prompt):
        raise ValueError(
            f"The teacher server returned {len(entries)} prompt_logprobs entries for a prompt of {len(prompt)} "
            "tokens; it must score every prompt token (vLLM: --no-enable-prefix-caching)."
        )
    values = np.zeros(max(len(prompt) - 1, 0), dtype=np.float64)
    for position in range(1, len(prompt)):
        entry = entries[position]
        own = str(int(prompt[position]))
        if not isinstance(entry, dict) or own not in entry:
            held = list(entry)[:5] if isinstance(entry, dict) else entry
            raise ValueError(
                f"prompt_logprobs entry {position} holds tokens {held} but not the prompt's own token {own}: "
                "the held-out NLL sums each prompt token's own log-probability, so a server that sends only its "
                "top-k (not the prompt's token beside it, as vLLM does) cannot score the teacher. Serve it with "
                "vLLM or hf-distill serve-teacher, or score it locally (pass the teacher's folder)."
            )
        values[position - 1] = logprob_value(entry[own], f"prompt token {own} at position {position}")
    return values


def prompt_logprobs_entries(
    logprobs: torch.Tensor, prompt: Sequence[int], top_k: int, decode: Callable[[int], str]
) -> list[dict[str, dict[str, Any]] | None]:
    """The server's side: ``prompt_logprobs`` of one prompt from the teacher's log-probabilities.

    Args:
        logprobs: ``(T, V)`` log-softmax of the teacher's logits at the prompt's positions (float32).
        prompt: the ``T`` prompt token ids.
        top_k: the top-k per entry (0: the prompt token alone, as in vLLM).
        decode: a token id to its text (``decoded_token``).

    Returns:
        ``[None, {id: {"logprob", "rank", "decoded_token"}}, ...]``, ``T`` entries, keyed by the id as a string.
    """
    entries: list[dict[str, dict[str, Any]] | None] = [None]
    if len(prompt) < 2:
        return entries[: len(prompt)]
    rows = logprobs[:-1].float()
    k = min(top_k, rows.shape[-1])
    top_values, top_ids = rows.topk(k, dim=-1) if k else (rows[:, :0], rows[:, :0].long())
    targets = torch.as_tensor(list(prompt[1:]), dtype=torch.long)
    own = rows.gather(-1, targets[:, None])[:, 0]
    own_rank = (rows > own[:, None]).sum(-1) + 1
    for t in range(rows.shape[0]):
        entry = {
            str(int(i)): {"logprob": float(v), "rank": r + 1, "decoded_token": decode(int(i))}
            for r, (v, i) in enumerate(zip(top_values[t].tolist(), top_ids[t].tolist()))
        }
        token = str(int(targets[t]))
        if token not in entry:
            entry[token] = {
                "logprob": float(own[t]),
                "rank": int(own_rank[t]),
                "decoded_token": decode(int(targets[t])),
            }
        entries.append(entry)
    return entries
