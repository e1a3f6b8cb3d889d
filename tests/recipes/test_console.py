"""What a recipe prints: one line per stage with its time, no pinned-memory warning without an accelerator, no
``datasets`` map bars and no transformers load report unless ``--verbose``."""

from __future__ import annotations

import logging
import re
import warnings

import datasets
import pytest
import torch
from transformers import BertModel
from transformers.utils import logging as transformers_logging

from hf_distill import cli
from hf_distill.recipes.arguments import parse_recipe_args
from hf_distill.recipes.console import LOAD_REPORT_LOGGER, default_pin_memory, quiet_console, stage
from tests.helpers.recipes import needs_rotten_tomatoes, save_tiny_teacher, tiny_flags

STAGE = re.compile(r"^done: (.+) \((\d+\.\d) s\)$", re.MULTILINE)


def map_once(capfd) -> str:
    datasets.Dataset.from_dict({"x": list(range(8))}).map(lambda row: {"y": row["x"] + 1})
    return capfd.readouterr().err


def test_quiet_console_turns_the_bars_and_the_load_report_off_and_restores_them(capfd):
    assert "Map" in map_once(capfd), "datasets shows a Map bar by default: nothing to turn off otherwise"
    report_logger = logging.getLogger(LOAD_REPORT_LOGGER)
    record = report_logger.makeRecord(
        LOAD_REPORT_LOGGER, logging.WARNING, __file__, 1, "X LOAD REPORT", (), None
    )
    other = report_logger.makeRecord(
        LOAD_REPORT_LOGGER, logging.WARNING, __file__, 1, "a real warning", (), None
    )
    with quiet_console(verbose=False):
        assert "Map" not in map_once(capfd)
        assert not transformers_logging.is_progress_bar_enabled()
        assert not report_logger.filter(record) and report_logger.filter(other)
    assert "Map" in map_once(capfd) and transformers_logging.is_progress_bar_enabled()
    assert report_logger.filter(record), "the load report's filter must go with the block"
    with quiet_console(verbose=True):
        assert "Map" in map_once(capfd) and report_logger.filter(record)


def test_quiet_console_leaves_bars_a_user_turned_off_off(capfd):
    datasets.disable_progress_bars()
    try:
        with quiet_console(verbose=False):
            pass
        assert "Map" not in map_once(capfd)
    finally:
        datasets.enable_progress_bars()


def test_stage_prints_one_line_with_its_time_and_none_on_error(capsys):
    with stage("first") as current:
        current.name = "renamed"
    with pytest.raises(RuntimeError, match="boom"), stage("broken"):
        raise RuntimeError("boom")
    assert [name for name, _ in STAGE.findall(capsys.readouterr().out)] == ["renamed"]


def test_pin_memory_follows_the_device_unless_set():
    if not torch.cuda.is_available() and not (
        hasattr(torch, "accelerator") and torch.accelerator.is_available()
    ):
        assert default_pin_memory() is False
    *_, training = parse_recipe_args(["--output_dir", "x"], task="sequence_classification")
    assert training.dataloader_pin_memory is default_pin_memory()
    *_, training = parse_recipe_args(
        ["--output_dir", "x", "--dataloader_pin_memory", str(not default_pin_memory())],
        task="sequence_classification",
    )
    assert training.dataloader_pin_memory is (not default_pin_memory()), "a user's choice wins"


@needs_rotten_tomatoes
def test_a_recipe_run_prints_stages_and_no_noise(tmp_path, wordpiece_tokenizer, capfd):
    # A teacher without the task's head: the recipe loads it (transformers' load report: the head is missing)
    # and fine-tunes it, as the demo does with MiniLM.
    teacher = save_tiny_teacher(tmp_path / "teacher", BertModel, wordpiece_tokenizer)
    flags = tiny_flags(tmp_path / "run", teacher_model_name_or_path=teacher, teacher_max_steps=2)
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cli.main(["train", "sentiment", *flags, "--seeds", "1,2"]) == 0
    out, err = capfd.readouterr()
    console = out + err
    assert not [w for w in caught if "pin_memory" in str(w.message)], "pinned memory without an accelerator"
    assert "pin_memory" not in console and "LOAD REPORT" not in console
    assert not re.search(r"^Map\b|\rMap\b", console, re.MULTILINE), "a datasets map bar"
    stages = [name for name, _ in STAGE.findall(out)]
    assert stages[0] == "fine-tune the teacher"
    assert (
        "seed 1: train and score the students" in stages and "seed 2: train and score the students" in stages
    )
    assert stages[-1].startswith("time latency") and any(s.startswith("score the teachers") for s in stages)
