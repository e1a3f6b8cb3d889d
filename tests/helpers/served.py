"""A served teacher's HTTP edge, faked: recorded answers in vLLM's ``/v1/completions`` shape handed to a real
:class:`~hf_distill.teachers.served.ServedTeacher` in place of a server, so parsing and refusals are tested
without a process. The answer goes through JSON text as on the wire (``NaN`` and ``null`` as a server sends
them); everything above ``requests`` is the code under test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hf_distill.teachers.served import ServedTeacher

MODEL = "teacher"


class FakeResponse:
    """What ``requests`` returns: a status, the body's text and ``json()`` decoding it."""

    def __init__(self, body: dict[str, Any], status_code: int = 200):
        self.status_code, self.text = (
            status_code,
            json.dumps(body),
        )  # NaN stays NaN, as Python servers write it

    def json(self) -> dict[str, Any]:
        return json.loads(self.text)


class FakeSession:
    """A ``requests.Session`` answering ``GET /models`` with one model and ``POST /completions`` with
    ``answer(body)``; every POST body is kept in ``posted``."""

    def __init__(self, answer: Callable[[dict[str, Any]], dict[str, Any]]):
        self.answer, self.posted = answer, []

    def get(self, url: str, timeout: float) -> FakeResponse:
        assert url.endswith("/models"), url
        return FakeResponse({"object": "list", "data": [{"id": MODEL, "object": "model"}]})

    def post(self, url: str, json: dict[str, Any], timeout: float) -> FakeResponse:
        assert url.endswith("/completions"), url
        self.posted.append(json)
        return FakeResponse(self.answer(json))


def completion_answer(prompt_logprobs: list[list[Any]]) -> dict[str, Any]:
    """vLLM's answer to ``/v1/completions`` holding each prompt's ``prompt_logprobs`` entries."""
    choices = [
        {"index": i, "text": "x", "logprobs": None, "finish_reason": "length", "prompt_logprobs": entries}
        for i, entries in enumerate(prompt_logprobs)
    ]
    return {"id": "cmpl-0", "object": "text_completion", "model": MODEL, "choices": choices}


def faked_teacher(
    answer: Callable[[dict[str, Any]], dict[str, Any]], top_k: int
) -> tuple[ServedTeacher, FakeSession]:
    """A :class:`ServedTeacher` (no look-ahead, one attempt) whose HTTP session is a :class:`FakeSession`."""
    teacher = ServedTeacher("http://127.0.0.1:9/v1", top_k=top_k, retries=1, prefetch=0)
    session = FakeSession(answer)
    teacher.client.local.session = session  # the calling thread's session: prefetch=0 asks on this thread
    return teacher, session
