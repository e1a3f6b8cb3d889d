"""Shared fixtures. The tiny models and the tokenizer are built in ``tests/helpers/tiny_models.py``.

``make test`` runs the suite on every core (pytest-xdist, ``--dist loadscope``: each module stays on one
worker, so a module's shared fixtures are built once and its heavy tests run one after another). Each worker
gets an equal share of the cores for torch's threads (:func:`pytest_configure`); the tests that start
processes take a free port each (``tests.helpers.processes.free_port``) and write under their own ``tmp_path``.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from tests.helpers.tiny_models import make_wordpiece_tokenizer


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, torch's threads are the worker's share of the cores: two workers with a thread per
    core each would fight over them. Processes the tests start (notebook kernels, launched runs) inherit it
    through OMP_NUM_THREADS unless they set their own."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers is None:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // int(workers))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def trained_wordpiece_tokenizer() -> PreTrainedTokenizerFast:
    return make_wordpiece_tokenizer()


@pytest.fixture(scope="module")
def wordpiece_tokenizer(trained_wordpiece_tokenizer) -> PreTrainedTokenizerFast:
    """A copy per module: some tests set its ``eos_token``, which must not reach other modules' tests
    (under pytest-xdist which modules share a worker, and in what order, changes from run to run)."""
    return copy.deepcopy(trained_wordpiece_tokenizer)
