"""``hf-distill serve-teacher MODEL --port P --top_k K``: a causal LM teacher served over HTTP, in vLLM's format.

For a user without vLLM (a CPU box, a machine of the cluster without vLLM's GPUs): it answers the subset of the
OpenAI-compatible API a served teacher needs (:mod:`hf_distill.teachers.served`):

- ``GET /v1/models``: the one model (``id``, ``max_model_len``, and ``vocab_size``, the model's output rows);
- ``POST /v1/completions`` with ``prompt`` (a text, token ids, or a list of either) and ``prompt_logprobs``:
  one choice per prompt, ``choices[i].prompt_logprobs`` in vLLM's shape
  (:func:`hf_distill.teachers.served_api.prompt_logprobs_entries`: ``null`` first, then the top-k and the
  prompt's own token, each ``{"logprob", "rank", "decoded_token"}``), and one greedy token as ``text``.
  ``prompt_logprobs`` above ``--top_k`` is refused with HTTP 400, worded like vLLM's ``--max-logprobs`` cap.

Log-probabilities are the log-softmax of the model's logits at temperature 1 (the request's sampling
parameters do not change them, as in vLLM's default ``raw_logprobs`` mode).

Built on Starlette + uvicorn (the ``[serve]`` extra) rather than the standard library's ``http.server``: the
latter's documentation advises against using it beyond local testing (no HTTP/1.1 keep-alive handling worth the
name, no request-size limits), and a teacher is meant to be reached from other machines. FastAPI would add
request models we do not need over the same Starlette. It binds to 127.0.0.1 unless ``--host`` says otherwise.
Requests are scored one batch at a time (a lock around the model), in float32 log-softmax.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import torch

from hf_distill.teachers.served_api import prompt_logprobs_entries

DEFAULT_HOST = "127.0.0.1"


class PromptError(ValueError):
    """A request this server cannot answer (HTTP 400)."""


class TeacherScorer:
    """The teacher's prompt log-probabilities, batch by batch.

    Args:
        model: a causal LM (eval mode is set here).
        tokenizer: its tokenizer (text prompts, ``decoded_token``).
        top_k: the largest ``prompt_logprobs`` a request may ask for.
        name: the model id ``/v1/models`` lists.
    """

    def __init__(self, model: Any, tokenizer: Any, top_k: int, name: str):
        self.model, self.tokenizer, self.top_k, self.name = model.eval(), tokenizer, top_k, name
        self.lock = threading.Lock()
        self.vocab_size = int(model.get_output_embeddings().weight.shape[0])
        config = model.config
        self.max_length = int(
            getattr(config, "max_position_embeddings", 0) or getattr(config, "n_positions", 0)
        )

    def models(self) -> dict[str, Any]:
        card = {"id": self.name, "object": "model", "owned_by": "hf-distill", "created": int(time.time())}
        return {
            "object": "list",
            "data": [{**card, "max_model_len": self.max_length, "vocab_size": self.vocab_size}],
        }

    def prompts(self, prompt: Any) -> list[list[int]]:
        """The request's prompts as token-id rows (a text, ids, or a list of either)."""
        if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt:
            raise PromptError("prompt must be a text, a list of token ids, or a list of either.")
        rows = []
        for item in prompt:
            if isinstance(item, str):
                rows.append(list(self.tokenizer(item)["input_ids"]))
            elif isinstance(item, list) and item and all(isinstance(i, int) for i in item):
                rows.append(item)
            else:
                raise PromptError(
                    f"A prompt must be a text or a non-empty list of token ids, got {item!r:.80}."
                )
        for row in rows:
            if (
                min(row) < 0
                or max(row) >= self.vocab_size
                or (self.max_length and len(row) > self.max_length)
            ):
                raise PromptError(
                    f"A prompt of {len(row)} tokens with ids in [{min(row)}, {max(row)}] does not fit the model "
                    f"({self.vocab_size} vocabulary rows, {self.max_length} positions)."
                )
        return rows

    def completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """The answer to ``POST /v1/completions`` (module docstring)."""
        asked = body.get("prompt_logprobs")
        if asked is not None and (not isinstance(asked, int) or asked < 0):
            raise PromptError(f"prompt_logprobs must be a non-negative integer, got {asked!r}.")
        for name in ("prompt_logprobs", "logprobs"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or value > self.top_k):
                raise PromptError(
                    f"Requested {name.replace('_', ' ')} of {value}, which is greater than max allowed: "
                    f"{self.top_k} (start hf-distill serve-teacher with --top_k {value})."
                )
        if int(body.get("max_tokens", 1) or 0) > 1:
            raise PromptError("This server scores prompts: max_tokens must be 0 or 1.")
        rows = self.prompts(body.get("prompt"))
        logprobs = self.log_probabilities(rows)
        choices = []
        for index, (row, scores) in enumerate(zip(rows, logprobs)):
            entries = None
            if asked is not None:
                entries = prompt_logprobs_entries(scores, row, asked, self.decode)
            next_token = int(scores[-1].argmax())
            choices.append(
                {
                    "index": index,
                    "text": self.decode(next_token),
                    "logprobs": self.generated_logprobs(scores[-1], next_token, body),
                    "finish_reason": "length",
                    "prompt_logprobs": entries,
                    "prompt_token_ids": row,
                }
            )
        prompt_tokens = sum(len(r) for r in rows)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(rows)}
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {**usage, "total_tokens": prompt_tokens + len(rows)},
        }

    def generated_logprobs(self, scores: torch.Tensor, token: int, body: dict[str, Any]) -> dict | None:
        """The one generated token's ``logprobs`` (OpenAI's completions shape; ``"token_id:N"`` keys with vLLM's
        ``return_tokens_as_token_ids``): its distribution is the teacher's at the prompt's last position."""
        k = body.get("logprobs")
        if k is None:
            return None
        as_ids = bool(body.get("return_tokens_as_token_ids"))

        def name(i: int) -> str:
            return f"token_id:{i}" if as_ids else self.decode(i)

        values, ids = scores.float().topk(min(int(k), scores.shape[-1]))
        top = {name(int(i)): float(v) for v, i in zip(values.tolist(), ids.tolist())}
        top.setdefault(name(token), float(scores[token]))
        return {
            "tokens": [name(token)],
            "token_logprobs": [float(scores[token])],
            "top_logprobs": [top],
            "text_offset": [0],
        }

    @torch.inference_mode()
    def log_probabilities(self, rows: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        """``(T_i, V)`` float32 log-softmax of the model's logits per row (right-padded batch, cut back)."""
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, : len(row)], mask[b, : len(row)] = torch.as_tensor(row), 1
        device = next(self.model.parameters()).device
        with self.lock:
            logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        scores = torch.log_softmax(logits.float(), dim=-1).cpu()
        return [scores[b, : len(row)] for b, row in enumerate(rows)]

    def decode(self, token: int) -> str:
        return self.tokenizer.decode([token])


def create_app(scorer: TeacherScorer):
    """The Starlette application over ``scorer``: ``/v1/models``, ``/v1/completions``."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    def error(message: str, status: int) -> JSONResponse:
        kind = "BadRequestError" if status == 400 else "InternalServerError"
        return JSONResponse({"object": "error", "message": message, "type": kind, "code": status}, status)

    async def models(request: Request) -> JSONResponse:
        return JSONResponse(scorer.models())

    async def completions(request: Request) -> JSONResponse:
        from starlette.concurrency import run_in_threadpool

        try:
            body = await request.json()
        except ValueError:
            return error("The request body is not JSON.", 400)
        if not isinstance(body, dict):
            return error("The request body must be a JSON object.", 400)
        try:
            return JSONResponse(await run_in_threadpool(scorer.completions, body))
        except PromptError as bad:
            return error(str(bad), 400)

    routes = [Route("/v1/models", models), Route("/v1/completions", completions, methods=["POST"])]
    return Starlette(routes=routes)


def load_scorer(
    model_path: str, top_k: int, dtype: str = "float32", device: str | None = None
) -> TeacherScorer:
    """The teacher of ``model_path`` (a folder or Hub id) and its tokenizer, ready to score."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if top_k < 1:
        raise ValueError(
            f"--top_k must be >= 1, got {top_k}: it caps the prompt_logprobs a request may ask for."
        )
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"--dtype {dtype!r} is not one of {sorted(dtypes)}.")
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtypes[dtype])
    if device is not None:
        model.to(device)
    return TeacherScorer(model, tokenizer, top_k, str(model_path))


def serve_teacher(argv: Sequence[str], resolve: Callable[[str], str] = str) -> None:
    """``hf-distill serve-teacher MODEL [--host H] [--port P] [--top_k K] [--dtype D] [--device D]``.

    Args:
        argv: the command's flags.
        resolve: turns ``MODEL`` into what ``from_pretrained`` loads (the CLI passes the offline aliases'
            resolver, so ``smollm2-135m`` serves the installed model, as in the recipes)."""
    parser = argparse.ArgumentParser(
        prog="hf-distill serve-teacher",
        description="Serve a causal LM teacher's prompt log-probabilities over the OpenAI Completions API "
        "(vLLM's prompt_logprobs format), for DistillationTrainer(teacher_model='http://HOST:PORT/v1').",
    )
    parser.add_argument(
        "model", help="a folder written by save_pretrained, a Hub id, or an offline alias (smollm2-135m)"
    )
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--top_k", type=int, default=20, help="the most prompt_logprobs a request may ask")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16")
    parser.add_argument("--device", default=None, help="e.g. cuda:0; default: where from_pretrained puts it")
    args = parser.parse_args(list(argv))
    try:
        import uvicorn
    except ImportError as missing:
        raise ImportError(
            f"hf-distill serve-teacher needs Starlette and uvicorn ({missing}); pip install 'hf-distill[serve]'."
        ) from missing
    scorer = load_scorer(resolve(args.model), args.top_k, args.dtype, args.device)
    print(f"serving {args.model} at http://{args.host}:{args.port}/v1 (top_k <= {args.top_k})", flush=True)
    uvicorn.run(create_app(scorer), host=args.host, port=args.port, log_level="warning")
