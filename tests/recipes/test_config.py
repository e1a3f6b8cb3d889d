"""Recipe configuration files (YAML / JSON) and flags: values, overrides, string numbers, and the refusals."""

from __future__ import annotations

import json

import pytest

from hf_distill.recipes.arguments import (
    RECIPE_ARGUMENTS,
    ReportArguments,
)
from hf_distill.recipes.config import load_config_file, parse_args_with_config, split_config_flag

# ---- config file + flags ------------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_values_and_flag_overrides(tmp_path):
    config = _write(
        tmp_path / "run.yaml",
        f"output_dir: {tmp_path / 'out'}\nteacher_model_name_or_path: some/teacher\nlearning_rate: 3.0e-4\n"
        "temperature: 4.0\nstudent_init: [teacher_layers, config]\nmax_train_samples: 100\nreport_to: none\n",
    )
    teacher, student, data, report, training = parse_args_with_config(
        RECIPE_ARGUMENTS, ["--config", str(config), "--temperature", "1.5", "--max_train_samples", "7"]
    )
    assert teacher.teacher_model_name_or_path == "some/teacher"
    assert training.learning_rate == pytest.approx(3e-4)
    assert training.output_dir == str(tmp_path / "out")
    # Flags win over the file; untouched file values survive.
    assert training.temperature == 1.5 and data.max_train_samples == 7
    assert student.student_init == ["teacher_layers", "config"]
    assert report.latency_rounds == ReportArguments().latency_rounds


def test_config_file_in_json_and_string_numbers(tmp_path):
    # YAML 1.1 reads "5e-5" (no dot) as a string; the flag's own type must still convert it.
    config = _write(tmp_path / "run.yaml", "learning_rate: 5e-5\nreport_to: none\n")
    *_, training = parse_args_with_config(RECIPE_ARGUMENTS, [f"--config={config}"])
    assert training.learning_rate == pytest.approx(5e-5)
    as_json = _write(tmp_path / "run.json", json.dumps({"alpha": 0.25, "report_to": "none"}))
    *_, training = parse_args_with_config(RECIPE_ARGUMENTS, ["--config", str(as_json)])
    assert training.alpha == 0.25


def test_config_file_with_an_unknown_key_is_refused(tmp_path):
    config = _write(tmp_path / "run.yaml", "temprature: 2.0\n")
    with pytest.raises(ValueError, match=r"no argument takes: 'temprature' \(did you mean 'temperature'"):
        parse_args_with_config(RECIPE_ARGUMENTS, ["--config", str(config)])


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass the path of a YAML or JSON file"):
        load_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"suffix '\.txt'; the parser reads \.yaml, \.yml or \.json"):
        load_config_file(_write(tmp_path / "run.txt", "a: 1"))
    with pytest.raises(ValueError, match="holds a list, not a mapping of field names"):
        load_config_file(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ValueError, match="--config needs a file path after it"):
        split_config_flag(["--alpha", "0.5", "--config"])
    assert load_config_file(_write(tmp_path / "empty.yaml", "")) == {}


def test_unknown_flag_is_refused():
    with pytest.raises(ValueError, match="Some specified arguments are not used"):
        parse_args_with_config(RECIPE_ARGUMENTS, ["--output_dir", "x", "--not_a_flag", "1"])


# ---- argument checks ------------------------------------------------------------------------------------


# ---- report -------------------------------------------------------------------------------------------
