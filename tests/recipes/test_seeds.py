"""``--seeds``: a recipe trains every student and its baseline once per seed against one teacher, and writes
the scorecard (means, 95% intervals, the paired KD - no-KD difference and its verdict) into report.json,
report.md, the console table and the model cards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import BertForSequenceClassification

from hf_distill.recipes.student_arguments import StudentArguments, parse_seeds
from hf_distill.reports.report import load_report, make_report
from tests.helpers.recipes import check_run, needs_rotten_tomatoes, run_recipe, save_tiny_teacher, tiny_flags


def test_seeds_are_parsed_from_commas_lists_and_yaml_numbers():
    assert parse_seeds("1,2,3") == parse_seeds(["1", "2", "3"]) == parse_seeds([1, 2, 3]) == [1, 2, 3]
    assert parse_seeds(["1,2", "3"]) == [1, 2, 3] and parse_seeds([]) == []
    assert StudentArguments(seeds="4, 5").seeds == [4, 5]
    with pytest.raises(
        ValueError, match=r"seeds '1,a' holds something that is not an integer.*--seeds 1,2,3"
    ):
        parse_seeds("1,a")
    with pytest.raises(ValueError, match=r"seeds \[1, 2, 1\] repeats a seed.*pass distinct seeds"):
        StudentArguments(seeds="1,2,1")


@needs_rotten_tomatoes
def test_two_seeds_write_intervals_and_a_verdict(tmp_path, wordpiece_tokenizer, capsys):
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    out = tmp_path / "run"
    flags = tiny_flags(
        out, teacher_model_name_or_path=teacher, fine_tune_teacher="always", teacher_max_steps=3
    )
    report = run_recipe("sentiment", [*flags, "--seeds", "1,2", "--write_model_cards", "true"])
    printed = capsys.readouterr().out
    on_disk = check_run(report, out, "sequence_classification", 2)
    scorecard = on_disk["scorecard"]
    assert scorecard["seeds"] == [1, 2] and scorecard["test_examples"] == 16
    assert set(scorecard["models"]) == {"teacher", *(s["name"] for s in on_disk["students"])}
    assert len(scorecard["models"]["teacher"]["per_seed"]) == 1, "the teacher is fine-tuned once"
    for student in on_disk["students"]:
        seeds = student["seeds"]
        assert [s["seed"] for s in seeds] == [1, 2]
        assert [Path(s["output_dir"]).name for s in seeds] == ["seed-1", "seed-2"]
        assert all((Path(s["output_dir"]) / "model.safetensors").is_file() for s in seeds)
        assert Path(seeds[0]["output_dir"]).parent.name == student["name"]
        # The entry's metric is the mean over seeds, and the scorecard's per-seed values are the seeds'.
        assert student["metric"] == pytest.approx(sum(s["metric"] for s in seeds) / 2)
        model = scorecard["models"][student["name"]]
        assert model["per_seed"] == pytest.approx([s["metric"] for s in seeds])
        assert model["interval"][0] <= model["mean"] <= model["interval"][1]
        assert student["scorecard"]["interval"] == model["interval"]
        card = (Path(seeds[1]["output_dir"]) / "README.md").read_text()
        assert "- accuracy over 2 seed(s) (1, 2) on 16 test examples" in card
        if student["kind"] == "distilled":
            assert "- Against the same student trained without the teacher: " in card
    (comparison,) = scorecard["comparisons"]
    distilled, baseline = (s for s in on_disk["students"])
    assert (comparison["distilled"], comparison["baseline"]) == (distilled["name"], baseline["name"])
    per_seed = [a["metric"] - b["metric"] for a, b in zip(distilled["seeds"], baseline["seeds"])]
    assert comparison["per_seed"] == pytest.approx(per_seed)
    assert comparison["difference"] == pytest.approx(sum(per_seed) / 2)
    assert comparison["verdict"].endswith("(accuracy KD - no-KD, 2 seeds, 16 test examples)")
    assert distilled["scorecard"]["versus_no_kd"]["verdict"] == comparison["verdict"]
    assert comparison["verdict"] in printed, "the console shows the verdict"
    assert "mean over 2 seed(s)" in printed
    written = make_report(out, formats=("md", "html"))
    markdown = written["md"].read_text()
    assert "## Over seeds" in markdown and comparison["verdict"] in markdown
    assert "Over seeds" in written["html"].read_text()
    # The file is plain JSON that the schema accepts; a broken interval is refused with its path.
    raw = json.loads((out / "report.json").read_text())
    raw["scorecard"]["comparisons"][0]["interval"] = [0.3, 0.1]
    (out / "report.json").write_text(json.dumps(raw))
    with pytest.raises(
        ValueError, match=r"scorecard.comparisons\[0\].interval' must be a list \[low, high\]"
    ):
        load_report(out)


def test_demo_runs_three_seeds_and_ends_with_the_verdict(tmp_path, monkeypatch, capsys):
    import yaml

    from hf_distill import cli
    from hf_distill.recipes.arguments import RECIPE_ARGUMENTS
    from hf_distill.recipes.config import parse_args_with_config

    line = (
        "distillation beats training alone by +2.1 points [0.9, 3.3] (accuracy KD - no-KD, 3 seeds, 800 ...)"
    )
    report = {"scorecard": {"comparisons": [{"distilled": "kd", "baseline": "no_kd", "verdict": line}]}}
    seen = {}
    monkeypatch.setattr(cli, "train", lambda task, argv: seen.update(argv=list(argv)) or report)
    assert cli.main(["demo", "--output_dir", str(tmp_path / "demo")]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"verdict: kd vs no_kd: {line}")
    config = yaml.safe_load((tmp_path / "demo" / "demo_config.yaml").read_text())
    assert config["seeds"] == [1, 2, 3]
    _, students, *_ = parse_args_with_config(RECIPE_ARGUMENTS, seen["argv"])
    assert students.seeds == [1, 2, 3]


def _deployment_rows() -> list[dict]:
    def row(model, runtime, precision, metric, difference, speedups, size):
        return {
            "model": model,
            "runtime": runtime,
            "precision": precision,
            "metric": metric,
            "interval": [metric - 0.02, metric + 0.02],
            "versus_pytorch": {
                "difference": difference,
                "interval": [difference - 0.005, difference + 0.005],
            },
            "speedup_b1": speedups[0],
            "speedup_b32": speedups[1],
            "size_bytes": size,
        }

    return [
        row("teacher", "pytorch", "fp32", 0.85, 0.0, (1.0, 1.0), 91_600_000),
        row("teacher", "onnxruntime", "int8-dynamic", 0.849, -0.001, (1.5, 1.2), 23_000_000),
        row("kd", "pytorch", "fp32", 0.84, 0.0, (1.84, 2.02), 45_000_000),
        row("kd", "onnxruntime", "fp32", 0.84, 0.0, (2.71, 1.89), 45_500_000),
        row("kd", "onnxruntime", "int8-dynamic", 0.835, -0.005, (4.04, 2.89), 17_800_000),
    ]


def test_demo_ends_with_the_deployed_students_line(tmp_path, monkeypatch, capsys):
    import yaml

    from hf_distill import cli

    report = {
        "metric_name": "accuracy",
        "scorecard": {"comparisons": [{"distilled": "kd", "baseline": "no_kd", "verdict": "ahead"}]},
        "deployment": {"quantize": "int8-dynamic", "rows": _deployment_rows()},
    }
    monkeypatch.setattr(cli, "train", lambda task, argv: report)
    assert cli.main(["demo", "--output_dir", str(tmp_path / "demo")]) == 0
    # The student's int8 row (not the teacher's, not fp32), every number from the report.
    assert (
        capsys.readouterr()
        .out.rstrip()
        .endswith(
            "verdict: kd vs no_kd: ahead\n\ndeployed: kd on onnxruntime int8-dynamic: accuracy 0.835 [0.815, 0.855], "
            "-0.005 [-0.01, 0] vs its PyTorch model; 4.04x faster than the PyTorch teacher at batch 1, 2.89x at "
            "batch 32; 17.8 MB"
        )
    )
    config = yaml.safe_load((tmp_path / "demo" / "demo_config.yaml").read_text())
    assert (config["export"], config["quantize"]) == ("onnx", "int8-dynamic")


def test_demo_without_the_export_extra_runs_without_exporting_and_says_why(tmp_path, monkeypatch, capsys):
    import yaml

    import hf_distill.export
    from hf_distill import cli

    def missing():
        raise ImportError('exporting to ONNX needs onnxscript, which is not installed: run `pip install "x"`')

    monkeypatch.setattr(hf_distill.export, "require_export_packages", missing)
    monkeypatch.setattr(cli, "train", lambda task, argv: {})
    assert cli.main(["demo", "--output_dir", str(tmp_path / "demo")]) == 0
    assert (
        "hf-distill demo: no ONNX export (and no deployed student's line): exporting to ONNX needs onnxscript"
        in (capsys.readouterr().out)
    )
    config = yaml.safe_load((tmp_path / "demo" / "demo_config.yaml").read_text())
    assert "export" not in config and "quantize" not in config and config["seeds"] == [1, 2, 3]
