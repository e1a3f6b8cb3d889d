"""A teacher on another machine: its top-k log-probabilities asked of an OpenAI-compatible server.

``DistillationTrainer(teacher_model="http://HOST:PORT/v1", ...)`` trains against a teacher served by vLLM,
SGLang's OpenAI server or ``hf-distill serve-teacher``: for each batch, :class:`ServedTeacher` posts the rows'
token ids to ``/v1/completions`` with ``prompt_logprobs`` (the format: :mod:`hf_distill.teachers.served_api`)
and returns the same top-k target as a top-k cache (:class:`~hf_distill.batch.TeacherTarget` with
``topk=(values, ids, tail)``), so every top-k loss, the chunked path and the logged parts are unchanged.

Why ``teacher_model`` takes the URL rather than a separate ``teacher_server_url``: a teacher has one place to
live, and the argument that names it (a model, a folder, a Hub id) already does so; a second argument would
allow a local teacher and a URL at once. The URL is unambiguous (``http://`` / ``https://`` names no folder or
Hub id), and the recipes' ``--teacher_model_name_or_path`` and ``cache-teacher`` pass it through unchanged.
The knobs are ``teacher_server_*`` fields of :class:`~hf_distill.arguments.DistillationTrainingArguments`.

Temperature. The server returns log-probabilities at T = 1 (the request says ``temperature: 1``). The KD
temperature is applied in the loss (:func:`hf_distill.losses.topk.per_position_topk`: the teacher's buckets
are ``softmax([z_K / T, tail_T])``). At T = 1 the served target is exactly the cached one. At T != 1 the tail
logit ``tail_T = logsumexp_{j not in K}(log p_j / T)`` depends on how the tail mass ``m`` is spread, which the
top-k does not say; it is only bounded: with ``n = V - k`` tail tokens each at most ``p_k`` (the k-th
probability), for T > 1 ``log m + (1/T - 1) log p_k <= tail_T <= (1/T) log m + (1 - 1/T) log n`` (the reverse
for T < 1). Neither end is the loss of the cache or of the live teacher, so a served teacher trains at
``temperature=1.0`` only, and any other temperature is refused before training.

Checks before training (:meth:`ServedTeacher.check`): the server answers ``/v1/models``; a probe text is
tokenized by the server exactly as by the student's tokenizer (the ids of its ``prompt_logprobs`` and their
``decoded_token``); the server returns ``top_k`` ranked tokens per position (vLLM caps at ``--max-logprobs``,
20 by default, and answers more with HTTP 400).

Throughput. :meth:`ServedTeacher.look_ahead` wraps the trainer's batch iterator: the requests of the next
``prefetch`` batches are issued on a background thread while the current step runs, so a step waits only when
the server is slower than training. Batches the look-ahead did not see (evaluation) are fetched when asked.
Each request has a time-out; connection errors, time-outs, 429 and 5xx are retried with exponential backoff;
after ``retries`` failures one :class:`TeacherServerError` names the URL, the last status and what to check.
A 4xx other than 429 is a configuration error and is not retried.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from hf_distill.batch import DistillationBatch, TargetKind, TeacherTarget
from hf_distill.teachers.served_api import (
    COMPLETIONS,
    MODELS,
    choices_in_order,
    completion_request,
    last_position,
    parse_prompt_logprobs,
    prompt_token_logprobs,
)

URL_SCHEMES = ("http://", "https://")
PROBE_TEXT = "Distillation probe: def f(x):\n\treturn x * 3.14  # naïve ünïcode, 42!"
RETRIED_STATUSES = (429, 500, 502, 503, 504)


def is_served_teacher(teacher_model: Any) -> bool:
    """Whether ``teacher_model`` names a served teacher (an ``http(s)://`` URL)."""
    return isinstance(teacher_model, str) and teacher_model.startswith(URL_SCHEMES)


def require_requests() -> Any:
    """The ``requests`` module (the ``[serve]`` extra), imported when a served teacher is used."""
    try:
        import requests
    except ImportError as missing:
        raise ImportError(
            f"A served teacher (teacher_model='http://...') talks HTTP with `requests` ({missing}); "
            "pip install 'hf-distill[serve]'."
        ) from missing
    return requests


class TeacherServerError(RuntimeError):
    """The teacher server could not be reached or did not answer after every retry."""


class TeacherClient:
    """``POST``/``GET`` against the server with a time-out, retries and backoff; one session per thread.

    Args:
        url: the API root, e.g. ``http://127.0.0.1:8000/v1``.
        timeout: seconds per request.
        retries: attempts before giving up (>= 1).
        backoff: seconds before the second attempt, doubled after each failure.
    """

    def __init__(self, url: str, timeout: float = 60.0, retries: int = 3, backoff: float = 0.5):
        self.url, self.timeout, self.retries, self.backoff = url.rstrip("/"), timeout, retries, backoff
        self.local = threading.local()
        self.requests = require_requests()

    def session(self) -> Any:
        # requests' Session is not documented as thread-safe: the prefetch thread keeps its own.
        if getattr(self.local, "session", None) is None:
            self.local.session = self.requests.Session()
        return self.local.session

    def call(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """The decoded JSON answer of ``GET path`` (``body`` None) or ``POST path``."""
        last = "no attempt"
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                if body is None:
                    response = self.session().get(self.url + path, timeout=self.timeout)
                else:
                    response = self.session().post(self.url + path, json=body, timeout=self.timeout)
            except self.requests.RequestException as error:
                last = f"{type(error).__name__}: {error}"
                continue
            if response.status_code == 200:
                return response.json()
            last = f"HTTP {response.status_code}: {response.text[:300]}"
            if response.status_code not in RETRIED_STATUSES:
                raise TeacherServerError(
                    f"The teacher server {self.url}{path} refused the request ({last}). Check that it serves "
                    "the OpenAI Completions API with prompt_logprobs (vLLM, or hf-distill serve-teacher) and "
                    "allows the top-k asked (vLLM: --max-logprobs)."
                )
        raise TeacherServerError(
            f"The teacher server {self.url}{path} did not answer after {self.retries} attempts (timeout "
            f"{self.timeout}s each); last: {last}. Check that the server is running and reachable from this "
            "machine (curl " + self.url + MODELS + "), and raise teacher_server_timeout if it is only slow."
        )


class ServedTeacher:
    """A batch's top-k target from a served teacher (module docstring).

    Args:
        url: the server's API root (``http://HOST:PORT/v1``).
        top_k: log-probabilities per position (the server must allow as many).
        timeout, retries: per request, see :class:`TeacherClient`.
        prefetch: batches requested ahead of the current step by :meth:`look_ahead` (>= 0).
        vocab_size: the student's vocabulary rows; an id the server returns at or above it is refused.
    """

    def __init__(
        self,
        url: str,
        *,
        top_k: int,
        timeout: float = 60.0,
        retries: int = 3,
        prefetch: int = 2,
        vocab_size: int | None = None,
        backoff: float = 0.5,
    ):
        self.client = TeacherClient(url, timeout=timeout, retries=retries, backoff=backoff)
        self.top_k, self.prefetch, self.vocab_size = top_k, prefetch, vocab_size
        self.model: str | None = None
        self.served_vocab_size: int | None = (
            None  # the server's output rows, where it says (serve-teacher does)
        )
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hf-distill-teacher")
        self.pending: dict[tuple, deque[Future]] = {}
        self.lock = threading.Lock()
        self.wrapped: tuple[Any, LookAhead] | None = None

    @property
    def url(self) -> str:
        return self.client.url

    # ---- checks before training ----------------------------------------------------------------------

    def check(self, tokenizer: Any) -> str:
        """Refuses a server that cannot stand in for the teacher (module docstring); returns its model name."""
        listed = self.client.call(MODELS).get("data") or []
        if not listed:
            raise TeacherServerError(
                f"The teacher server {self.client.url} lists no model at {MODELS}; start it with the teacher."
            )
        self.model = str(listed[0]["id"])
        self.served_vocab_size = listed[0].get("vocab_size")
        if tokenizer is None:
            raise ValueError(
                "A served teacher needs the student's tokenizer (processing_class=...) to check that the server "
                "tokenizes as the student does: the batches' token ids are sent as they are."
            )
        answer = self.client.call(COMPLETIONS, completion_request(self.model, PROBE_TEXT, self.top_k))
        choice = choices_in_order(answer, 1)[0]
        entries = choice.get("prompt_logprobs")
        if entries is None:
            raise ValueError(
                f"The teacher server {self.client.url} answered without prompt_logprobs; it must be an "
                "OpenAI-compatible server with vLLM's prompt_logprobs extension (vLLM, hf-distill serve-teacher)."
            )
        check_same_tokens(tokenizer, entries, self.client.url)
        parse_prompt_logprobs(entries, self.top_k)  # refuses a top-k cap below top_k
        return self.model

    # ---- targets ---------------------------------------------------------------------------------------

    def __call__(self, batch: DistillationBatch, output_kwargs: dict[str, bool]) -> TeacherTarget:
        """The batch's target: the prefetched answer when the look-ahead asked for it, else asked now."""
        input_ids, mask = batch.model_inputs["input_ids"], batch.attention_mask
        rows = attended_rows(input_ids, mask)
        with self.lock:
            waiting = self.pending.get(row_key(rows))
            future = waiting.popleft() if waiting else None
            if waiting is not None and not waiting:
                del self.pending[row_key(rows)]
        parsed = future.result() if future is not None else self.fetch(rows)
        values, ids, tail = place_rows(parsed, input_ids, mask, self.top_k)
        return TeacherTarget(TargetKind.SERVED_TOPK, topk=(values, ids, tail))

    def fetch(self, rows: list[list[int]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One request for a batch's rows; each row's ``(values, ids, tail)``."""
        if self.model is None:
            self.model = str((self.client.call(MODELS).get("data") or [{"id": ""}])[0]["id"])
        answer = self.client.call(COMPLETIONS, completion_request(self.model, rows, self.top_k))
        parsed = []
        for row, choice in zip(rows, choices_in_order(answer, len(rows))):
            entries = choice.get("prompt_logprobs") or []
            if len(entries) != len(row):
                raise ValueError(
                    f"The teacher server returned {len(entries)} prompt_logprobs entries for a prompt of "
                    f"{len(row)} tokens; it must score every prompt token (vLLM: --no-enable-prefix-caching)."
                )
            parsed.append(parse_prompt_logprobs(entries, self.top_k, last_position(choice, self.top_k)))
        if self.vocab_size is not None:
            top = max((int(ids.max()) for _, ids, _ in parsed if ids.size), default=0)
            if top >= self.vocab_size:
                raise ValueError(
                    f"The teacher server returned token id {top}, but the student has {self.vocab_size} "
                    "vocabulary rows: the server's model has another vocabulary. Serve a teacher of the "
                    "student's tokenizer."
                )
        return parsed

    def topk_rows(self, rows: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each row's ``(values (T, k), ids (T, k), tail (T,))``, for writing a cache from the server."""
        return self.fetch([list(map(int, r)) for r in rows])

    def token_logprobs(self, rows: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Each row's log-probabilities of its own tokens after the first (``(T - 1,)`` float64), for scoring the
        served teacher's held-out NLL: one request asking ``prompt_logprobs=1`` (the prompt's own token is in
        every entry whatever its rank)."""
        if self.model is None:
            self.model = str((self.client.call(MODELS).get("data") or [{"id": ""}])[0]["id"])
        prompts = [list(map(int, row)) for row in rows]
        answer = self.client.call(COMPLETIONS, completion_request(self.model, prompts, 1))
        return [
            prompt_token_logprobs(choice.get("prompt_logprobs") or [], prompt)
            for prompt, choice in zip(prompts, choices_in_order(answer, len(prompts)))
        ]

    # ---- prefetch --------------------------------------------------------------------------------------

    def submit(self, batch: Any) -> None:
        """Asks the server for ``batch`` on the background thread (its answer waits in ``pending``)."""
        if not isinstance(batch, dict) or "input_ids" not in batch:
            return
        rows = attended_rows(batch["input_ids"], batch.get("attention_mask"))
        future = self.pool.submit(self.fetch, rows)
        with self.lock:
            self.pending.setdefault(row_key(rows), deque()).append(future)

    def look_ahead(self, iterator: Iterator) -> Iterator:
        """``iterator`` with the requests of its next ``prefetch`` batches in flight; the same wrapper for
        the same iterator (the trainer asks once per optimizer step)."""
        if self.prefetch < 1:
            return iterator
        if self.wrapped is None or self.wrapped[0] is not iterator:
            with self.lock:
                self.pending.clear()  # answers for an epoch that is over
            self.wrapped = (iterator, LookAhead(iterator, self.prefetch, self.submit))
        return self.wrapped[1]


class LookAhead:
    """An iterator that reads ``depth`` items ahead of its consumer and hands each to ``submit`` when read."""

    def __init__(self, iterator: Iterator, depth: int, submit):
        self.iterator, self.depth, self.submit = iterator, depth, submit
        self.buffer: deque = deque()
        self.exhausted = False

    def __iter__(self) -> LookAhead:
        return self

    def __next__(self):
        while not self.exhausted and len(self.buffer) <= self.depth:
            try:
                item = next(self.iterator)
            except StopIteration:
                self.exhausted = True
                break
            self.submit(item)
            self.buffer.append(item)
        if not self.buffer:
            raise StopIteration
        return self.buffer.popleft()


def attended_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[list[int]]:
    """Each row's token ids without padding."""
    ids = input_ids.detach().cpu()
    if attention_mask is None:
        return ids.tolist()
    mask = attention_mask.detach().cpu().bool()
    return [row[m].tolist() for row, m in zip(ids, mask)]


def row_key(rows: list[list[int]]) -> tuple:
    return tuple(tuple(r) for r in rows)


def place_rows(
    parsed: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    top_k: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's target put back at its attended positions of the padded batch ``(B, T)`` (either padding
    side); padded positions hold zeros, as the cache collator pads."""
    batch, length = input_ids.shape
    values = torch.zeros((batch, length, top_k), dtype=torch.float32)
    ids = torch.zeros((batch, length, top_k), dtype=torch.long)
    tail = torch.zeros((batch, length), dtype=torch.float32)
    mask = None if attention_mask is None else attention_mask.detach().cpu().bool()
    for b, (v, i, t) in enumerate(parsed):
        where = torch.arange(length) if mask is None else mask[b].nonzero()[:, 0]
        values[b, where], ids[b, where], tail[b, where] = map(torch.from_numpy, (v, i, t))
    device = input_ids.device
    return values.to(device), ids.to(device), tail.to(device)


def check_same_tokens(tokenizer: Any, entries: Sequence[Any], url: str) -> None:
    """Refuses a server whose tokenization of the probe text is not the student's: the probe's ids after the
    first must each appear in their ``prompt_logprobs`` entry, with the student's text for the id."""
    expected = list(tokenizer(PROBE_TEXT)["input_ids"])
    found_ok = len(entries) == len(expected)
    for position in range(1, len(expected)) if found_ok else ():
        entry = entries[position] or {}
        token = entry.get(str(expected[position]))
        decoded = token.get("decoded_token") if isinstance(token, dict) else None
        mine = tokenizer.decode([expected[position]])
        # A token that ends inside a multi-byte character decodes to U+FFFD, which servers spell differently.
        if token is None or (decoded is not None and "\ufffd" not in mine + decoded and decoded != mine):
            found_ok = False
            break
    if not found_ok:
        raise ValueError(
            f"The teacher server {url} tokenizes the probe text {PROBE_TEXT!r} into {len(entries)} tokens, other "
            f"than the student's tokenizer ({len(expected)} tokens, ids {expected[:8]}...): its model has "
            "another tokenizer, so the batches' token ids would mean other text to it. Serve a teacher of the "
            "student's tokenizer, or cache the other-tokenizer teacher (hf-distill cache-teacher "
            "--teacher_tokenizer) and train with cross_tokenizer_loss."
        )


def check_served_setup(args: Any, head_kind: str, cross_tokenizer: bool) -> None:
    """Refuses, before any request, a run a served teacher cannot feed (module docstring)."""
    if head_kind != "causal_lm":
        raise ValueError(
            f"A served teacher (teacher_model='http://...') answers a causal LM's prompt log-probabilities, but "
            f"the student is a {head_kind} model. Pass the teacher model (or its folder) instead."
        )
    if cross_tokenizer:
        raise ValueError(
            "cross_tokenizer_loss is set, but a served teacher's positions are the student's tokens. Cache the "
            "other-tokenizer teacher (hf-distill cache-teacher --teacher_tokenizer) or serve a teacher of the "
            "student's tokenizer and leave cross_tokenizer_loss unset."
        )
    if args.feature_weights:
        raise ValueError(
            f"{sorted(args.feature_weights)} > 0 match the teacher's hidden states or attention, which a served "
            "teacher does not send (only top-k log-probabilities); set them to 0 or load the teacher locally."
        )
    if abs(args.temperature - 1.0) > 1e-9:
        raise ValueError(
            f"temperature={args.temperature}: a served teacher's log-probabilities are at temperature 1, and the "
            "tail bucket of the top-k target at another temperature needs the whole distribution (from the "
            "top-k it is only bounded, see hf_distill.teachers.served). Train at temperature=1.0, or cache the "
            "teacher at this temperature (hf-distill cache-teacher --temperature ...) where it runs."
        )
    if args.distillation_loss == "mse":
        raise ValueError(
            "distillation_loss='mse' compares raw logits over the whole vocabulary, but a served teacher sends "
            "its top-k log-probabilities; choose a divergence such as forward_kl."
        )


def served_teacher_for(url: str, args: Any, student: Any, tokenizer: Any) -> ServedTeacher:
    """The served teacher of ``url`` for a run with ``args``, checked against the server (module docstring)."""
    config = getattr(student, "config", None)
    teacher = ServedTeacher(
        url,
        top_k=args.teacher_server_top_k,
        timeout=args.teacher_server_timeout,
        retries=args.teacher_server_retries,
        prefetch=args.teacher_server_prefetch,
        vocab_size=getattr(config, "vocab_size", None),
    )
    teacher.check(tokenizer)
    return teacher
