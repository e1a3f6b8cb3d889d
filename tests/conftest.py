"""Shared fixtures. The tiny models and the tokenizer are built in ``tests/helpers/tiny_models.py``.

``make test`` runs the suite on every core (pytest-xdist, ``--dist loadscope``: each module stays on one
worker, so a module's shared fixtures are built once). Each worker
gets an equal share of the cores for torch's threads (:func:`pytest_configure`); the tests that start
processes take a free port each (``tests.helpers.processes.free_port``) and write under their own ``tmp_path``.

The longest tests on a quiet 2-core machine are named in :data:`HEAVY_TESTS` with what their assertion needs
that makes them that large (measured with ``--durations=25``, which ``make test`` prints; the seconds are one
clean-clone run's). Each runs as a scope of its own, sent to a worker before everything else
(:func:`pytest_xdist_make_scheduler`): pytest-xdist queues scopes by their number of tests, which puts a module
of one or two long tests last, where the other worker waits for it. The parametrized MiniLM mode tests are not
listed: they share a module fixture (the fine-tuned teacher), and a scope of their own would fine-tune it once
per test.
"""

from __future__ import annotations

import copy
import os

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from tests.helpers.tiny_models import make_wordpiece_tokenizer

# Seconds on a quiet 2-core machine under `make test` (two workers), slowest first: the order they start in.
HEAVY_TESTS: dict[str, tuple[int, str]] = {
    "tests/recipes/test_run.py::test_codegen_recipe_with_smollm2": (
        83,
        "the whole code recipe on the real 30-layer SmolLM2-135M teacher (its test perplexity, its forward beside "
        "every step of four students, latency, generation through the chat template and raw): the assertions "
        "are that report, every student worse than the teacher and the generation table naming each model",
    ),
    "tests/test_notebooks.py::test_notebook_runs_top_to_bottom[codegen]": (
        35,
        "the codegen notebook in a fresh kernel on the real teacher: a reader's run works and writes "
        "report.json, its figures and displayed plots",
    ),
    "tests/recipes/test_modes_real.py::test_codegen_generation_modes_on_smollm2[sequence_kd]": (
        30,
        "the real teacher generates the targets with its 49k vocabulary; the assertion needs finite KD losses "
        "and the student's perplexity against the teacher's on the test files, which takes the teacher's too",
    ),
    "tests/recipes/test_modes_real.py::test_multi_task_recipe_on_minilm": (
        28,
        "a multi-task student on MiniLM with both tasks' real data, each task's teacher fine-tuned, and a "
        "single-task student per task beside it: the assertions compare their metrics, sizes and both KD losses",
    ),
    "tests/recipes/test_modes_real.py::test_codegen_generation_modes_on_smollm2[on_policy]": (
        26,
        "the real teacher scores the student's samples; the same assertion as sequence KD's",
    ),
    "tests/recipes/test_run.py::test_two_processes_match_one_process": (
        22,
        "two launched processes and one, each importing torch and transformers: the weights must match",
    ),
    "tests/training/test_checkpoints.py::test_killed_self_distillation_resumes_its_teacher": (
        19,
        "the same three processes as the killed run's, for self-distillation, whose teacher is the student's "
        "own earlier copy",
    ),
    "tests/training/test_checkpoints.py::test_killed_run_resumes_to_the_same_weights": (
        18,
        "three processes (the uninterrupted run, the run killed with SIGKILL, the resume) of already tiny models: "
        "a SIGKILL needs a real process and the final weights must equal the uninterrupted run's",
    ),
    "tests/test_notebooks.py::test_notebook_runs_top_to_bottom[sentiment]": (
        18,
        "the sentiment notebook in a fresh kernel on MiniLM: the same assertion as the codegen notebook's",
    ),
}


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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The heavy tests first, slowest first, so that a worker never starts one when the others are nearly done."""
    rank = {nodeid: i for i, nodeid in enumerate(HEAVY_TESTS)}
    items.sort(key=lambda item: rank.get(item.nodeid, len(rank)))  # stable: the rest keep their order


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadscope``, with each heavy test a scope of its own, the scopes queued in collection order
    (heavy first) instead of by their number of tests, which put single-test modules last."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class HeavyFirstScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid in HEAVY_TESTS else super()._split_scope(nodeid)

    config.option.loadscopereorder = False
    return HeavyFirstScheduling(config, log)
