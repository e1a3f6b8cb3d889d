"""What a recipe prints: one line per stage with its elapsed time, Trainer's own bar while a model trains,
the table and the verdict, and the warnings that mean something.

Noise is turned off at its source rather than filtered from the output:

* :func:`default_pin_memory`: pinned memory only where there is an accelerator to copy to (without one,
  torch's DataLoader warns ``'pin_memory' argument is set as true but no accelerator is found`` at every
  dataloader); the recipes use it as the default of ``dataloader_pin_memory``, so a flag or a config value
  still wins;
* :func:`quiet_console`: the libraries' own switches for the recipe's internal work, ``datasets``' progress
  bars (every internal ``map``, cast and filter) and transformers' bars and ``LOAD REPORT`` table around
  ``from_pretrained`` / ``save_pretrained`` (a head the recipe is about to fine-tune is expected to be
  missing); ``--verbose`` keeps them all;
* :func:`stage`: a line such as ``done: fine-tune the teacher (36.6 s)`` when a stage ends, on the main
  process only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import datasets
import torch
from accelerate import PartialState
from transformers.utils import logging as transformers_logging

# The logger transformers' `from_pretrained` writes its load report to (transformers.utils.loading_report).
LOAD_REPORT_LOGGER = "transformers.modeling_utils"


def default_pin_memory() -> bool:
    """Whether pinned memory can help: only with an accelerator (CUDA, MPS, XPU, ...) to copy batches to.

    Returns:
        bool: the recipes' default ``dataloader_pin_memory``.
    """
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6; older versions have CUDA or nothing
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available()


class _DropLoadReport(logging.Filter):
    """Drops transformers' ``LOAD REPORT`` table and nothing else its model loading logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


@contextmanager
def quiet_console(verbose: bool = False) -> Iterator[None]:
    """Within it, ``datasets``' progress bars, transformers' loading / saving bars and its load report are off
    (``verbose=False``); each is restored as it was on exit. Trainer's training bar and every other warning
    are untouched.

    Args:
        verbose (bool): keep everything (the recipes' ``--verbose``).
    """
    if verbose:
        yield
        return
    datasets_bars = not datasets.are_progress_bars_disabled()
    transformers_bars = transformers_logging.is_progress_bar_enabled()
    load_filter = _DropLoadReport()
    logger = logging.getLogger(LOAD_REPORT_LOGGER)
    datasets.disable_progress_bars()
    transformers_logging.disable_progress_bar()
    logger.addFilter(load_filter)
    try:
        yield
    finally:
        logger.removeFilter(load_filter)
        # transformers' switch turns huggingface_hub's bars (which datasets' follow) on or off with its own,
        # so datasets' state is set last.
        if transformers_bars:
            transformers_logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()
        else:
            datasets.disable_progress_bars()


@dataclass
class Stage:
    """The stage :func:`stage` reports; ``name`` may be set within the block, once it is known what was done."""

    name: str


@contextmanager
def stage(name: str) -> Iterator[Stage]:
    """Prints ``done: <name> (<seconds> s)`` when the block ends without an error, on the main process.

    Args:
        name (str): what the stage does, e.g. ``"fine-tune the teacher"``.

    Returns:
        Iterator[Stage]: the stage, whose ``name`` the block may change.
    """
    current, start = Stage(name), time.perf_counter()
    yield current
    if PartialState().is_main_process:
        print(f"done: {current.name} ({time.perf_counter() - start:.1f} s)", flush=True)
