"""The ``hf-distill`` command's help and errors: every subcommand's --help works and lists the tasks, a task's
flags come in groups under its own name, and a bad input is one line with exit status 2 (--debug: traceback)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from hf_distill import cli
from hf_distill.recipes.config import DISTILLATION_GROUP, TRAINER_GROUP
from tests.helpers.paths import REPO


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    return exited.value.code


@pytest.mark.parametrize("command", [*cli.TASK_COMMANDS, "demo", "report", "push"])
def test_every_subcommand_help_exits_0(command, capsys):
    assert _exit_code([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hf-distill {command}")
    if command in cli.TASK_COMMANDS:
        for task, text in cli.TASK_HELP.items():
            assert f"{task:<10} {text}" in out
        assert f"`hf-distill {command} TASK --help` lists the task's flags" in out


def test_main_help_lists_commands_tasks_and_debug(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in (*cli.TASK_COMMANDS, "demo", "report", "push", "--debug", "HF_DISTILL_DEBUG=1", *cli.TASKS):
        assert name in out


def test_a_task_command_without_a_task_is_a_usage_error(capsys):
    assert _exit_code(["train"]) == 2
    assert "the following arguments are required: TASK" in capsys.readouterr().err
    assert _exit_code(["eval", "translation"]) == 2
    assert "invalid choice: 'translation'" in capsys.readouterr().err


def _sections(help_text: str) -> dict[str, str]:
    """Help text split at its group headings (a line ending with ':' at the left margin)."""
    parts = re.split(r"^(\S[^\n]*):\n", help_text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("task", cli.TASKS)
def test_train_task_help_is_grouped_under_the_tasks_own_name(task, capsys):
    assert _exit_code(["train", task, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hf-distill train {task} [-h] [--config FILE] [--flag VALUE ...]\n")
    sections = _sections(out)
    assert "--config FILE" in sections["options"]
    assert "--teacher_model_name_or_path" in sections["recipe: teacher"]
    assert "--student_init" in sections["recipe: students"]
    assert "--train_file" in sections["recipe: data"] and "--token_column" in sections["recipe: data"]
    assert "--latency_rounds" in sections["recipe: report"]
    distillation, trainer = sections[DISTILLATION_GROUP], sections[TRAINER_GROUP]
    for flag in ("--temperature", "--alpha", "--distillation_mode", "--hidden_state_weight"):
        assert flag in distillation and flag not in trainer
    for flag in ("--learning_rate", "--report_to", "--disable_tqdm", "--output_dir"):
        assert flag in trainer and flag not in distillation


def test_help_shows_a_modes_own_flags_and_config_values(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("temperature: 3.5\n", encoding="utf-8")
    assert (
        _exit_code(["train", "sentiment", "--config", str(config), "--distillation_mode", "mutual", "--help"])
        == 0
    )
    out = capsys.readouterr().out
    assert re.search(r"--temperature TEMPERATURE\s+.*\(default: 3\.5\)", out, flags=re.DOTALL)
    assert _exit_code(["train", "codegen", "--distillation_mode", "on_policy", "--help"]) == 0
    assert "--lmbda" in _sections(capsys.readouterr().out)[DISTILLATION_GROUP]


@pytest.mark.parametrize("command", ["eval", "cache-teacher"])
def test_eval_and_cache_teacher_task_help(command, capsys):
    assert _exit_code([command, "ner", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: hf-distill {command} ner ")
    assert "--config FILE" in out and TRAINER_GROUP in out


# ------------------------------------------------------------------------------------------------ errors


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def test_a_bad_value_is_one_line_and_exit_2(tmp_path, capsys):
    argv = ["train", "sentiment", "--output_dir", str(tmp_path), "--temperature", "-1"]
    assert cli.main(argv) == 2
    line = _one_line_error(capsys)
    assert line.startswith("hf-distill: error: temperature must be > 0, got -1.0: it divides the logits")
    assert line.endswith("(--debug or HF_DISTILL_DEBUG=1 shows the traceback)")


def test_a_missing_data_file_is_one_line_before_anything_is_loaded(tmp_path, capsys):
    # The teacher does not exist either: the file is checked while the flags are parsed, before any loading.
    argv = [
        "train",
        "ner",
        "--output_dir",
        str(tmp_path),
        "--teacher_model_name_or_path",
        str(tmp_path / "none"),
    ]
    assert cli.main([*argv, "--train_file", str(tmp_path / "train.conll")]) == 2
    assert re.match(r"hf-distill: error: train_file '.*train\.conll' does not exist", _one_line_error(capsys))


def test_unknown_flags_and_config_keys_name_the_flag_meant(tmp_path, capsys):
    assert cli.main(["train", "sentiment", "--output_dir", str(tmp_path), "--lerning_rate", "1e-4"]) == 2
    assert (
        "no flag --lerning_rate (did you mean --learning_rate or --teacher_learning_rate?)"
        in _one_line_error(capsys)
    )
    config = tmp_path / "run.yaml"
    config.write_text("alpha: [0.5\n", encoding="utf-8")
    assert cli.main(["train", "sentiment", "--config", str(config)]) == 2
    assert re.search(
        r"config file 'run\.yaml' cannot be read \(.*line 1.*\); fix the syntax", _one_line_error(capsys)
    )


def test_debug_flag_and_env_show_the_traceback(tmp_path, monkeypatch):
    argv = ["train", "sentiment", "--output_dir", str(tmp_path), "--temperature", "-1"]
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cli.main(["--debug", *argv])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        cli.main(argv)


def test_an_error_from_outside_hf_distill_keeps_its_traceback(monkeypatch):
    """A ValueError raised by other code (here this test module) is not a check on the input: a bug, whose
    traceback must not be hidden."""

    def failing(task, argv):
        raise ValueError("deep inside a library")

    monkeypatch.setattr(cli, "train", failing)
    with pytest.raises(ValueError, match="deep inside a library"):
        cli.main(["train", "sentiment"])


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    """The real entry point, as a user runs it: `python -m hf_distill.cli` with a bad value."""
    argv = ["train", "sentiment", "--output_dir", str(tmp_path), "--alpha", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "hf_distill.cli", *argv], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("hf-distill: error:")]
    assert len(lines) == 1 and "alpha" in lines[0] and "Traceback" not in result.stderr
