"""Shared fixtures. The tiny models and the tokenizer are built in ``tests/helpers/tiny_models.py``.

``make test`` runs the suite on every core (pytest-xdist, ``--dist loadscope``: each module stays on one
worker, so a module's shared fixtures are built once and its heavy tests run one after another). Each worker
gets an equal share of the cores for torch's threads (:func:`pytest_configure`); the tests that start
processes take a free port each (``tests.helpers.processes.free_port``) and write under their own ``tmp_path``.

The tests over 60 s on a loaded 2-core machine (``--durations``), each as small as its assertion allows:

- ``recipes/test_run.py::test_codegen_recipe_with_smollm2`` (~570 s): the whole code recipe on the real 30-layer
  SmolLM2-135M teacher (GGUF conversion, its test perplexity, its forward beside every step of four students,
  latency, generation through the chat template and raw), because the assertions are that report: every
  student worse than the teacher, and the generation table naming teacher, raw teacher and each student.
- ``recipes/test_modes_real.py::test_codegen_generation_modes_on_smollm2[sequence_kd|on_policy]`` (~290 s
  each): the real teacher generates the targets (sequence KD) or scores the student's samples (on-policy) with
  its 49k vocabulary; the assertion needs two finite KD losses and the student's perplexity against the
  teacher's on the test files, which takes the teacher's evaluation too.
- ``test_notebooks.py::test_notebook_runs_top_to_bottom[codegen]`` (~250 s): the codegen notebook in a fresh
  kernel on the real teacher (conversion, recipe, report, generation by teacher and student); the assertion is
  that a reader's run of the notebook works and writes report.json, its figures and displayed plots.
- ``training/test_checkpoints.py::test_killed_run_resumes_to_the_same_weights`` and
  ``::test_killed_self_distillation_resumes_its_teacher`` (~120 s each): three Python processes each (the
  uninterrupted run of the mode, the run killed with SIGKILL, the resume), since a SIGKILL needs a real process
  and the final weights must equal those of an uninterrupted run; the models are already tiny (6 steps, hidden
  16/32), so the time is mostly each process importing torch and transformers.
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
