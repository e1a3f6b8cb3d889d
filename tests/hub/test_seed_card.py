"""The model card of one seed's weights in a multi-seed run: that seed's own metrics as the model's
(``model-index`` and the "(this model)" row), the mean over seeds, its interval and the verdict beside them as
what they are; found from the folder when written or pushed; and no empty settings in "Other settings"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_distill.hub.card import render_model_card, write_model_card
from hf_distill.hub.push import push_student
from hf_distill.hub.push_guard import find_report
from hf_distill.recipes.report_json import write_cards
from hf_distill.reports.seed_report import seed_of_folder, seed_report
from tests.helpers.hub import FakeHfApi
from tests.helpers.run_reports import make_card_run_report as make_run_report

# The demo's numbers: seed 1 scored 0.7939, the mean of seeds 1-3 is 0.79545.
DISTILLED = [0.7939, 0.7980, 0.79445]
BASELINE = [0.7760, 0.7790, 0.7757]
VERDICT = "distillation beats training alone by +1.9 points [0.7, 3.0] (accuracy KD - no-KD, 3 seeds, 800 test examples)"


def seeded_report(run_dir: Path) -> dict:
    """A three-seed run: each student's entry holds the mean, its ``seeds`` every seed's own score."""
    report = make_run_report(str(run_dir / "students" / "distilled" / "seed-1"))
    report["distillation"].update(feature_map_weight=0.0, feature_layers="")
    seeds = [1, 2, 3]
    for student, values in zip(report["students"], (DISTILLED, BASELINE)):
        folder = run_dir / "students" / student["name"]
        student["output_dir"] = str(folder / "seed-1")
        student["metric"] = sum(values) / 3
        student["retention"] = student["metric"] / report["teacher"]["metric"]
        student["seeds"] = [
            {"seed": s, "output_dir": str(folder / f"seed-{s}"), "metric": v, "metrics": {"accuracy": v}}
            for s, v in zip(seeds, values)
        ]
        student["scorecard"] = {
            "metric_name": "accuracy",
            "seeds": seeds,
            "test_examples": 800,
            "mean": student["metric"],
            "interval": [student["metric"] - 0.012, student["metric"] + 0.012],
            "per_seed": values,
        }
    report["students"][0]["scorecard"]["versus_no_kd"] = {"verdict": VERDICT}
    return report


def _row(body: str, name: str) -> list[str]:
    (line,) = [line for line in body.splitlines() if line.startswith(f"| {name}") or f"**{name}**" in line]
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_a_seeds_card_states_that_seeds_metrics_and_the_mean_as_the_mean(tmp_path):
    report = seeded_report(tmp_path)
    card = ModelCard(render_model_card(report, "distilled", seed=1))
    assert card.data.eval_results[0].metric_value == pytest.approx(0.7939), "seed 1's own, not 0.79545"
    this_row = _row(card.text, "**distilled** (this model)")
    assert this_row[2] == "0.7939" and this_row[3] == f"{100 * 0.7939 / 0.9243:.1f}%"
    assert _row(card.text, "no_kd_baseline")[2] == "0.776", "the baseline of the same seed"
    assert "The students' rows are their runs with seed 1, this model's seed" in card.text
    assert "- This model (seed 1): accuracy 0.7939 on 800 test examples." in card.text
    assert (
        "- accuracy over 3 seed(s) (1, 2, 3) on 800 test examples: mean 0.7955, 95% interval [0.7835, 0.8075] "
        "(the mean of this student's seeds, not this model's own score)." in card.text
    )
    assert f"- Against the same student trained without the teacher: {VERDICT}." in card.text
    assert "0.7955 (this model)" not in card.text and card.data.model_name.endswith("-distilled-seed1")
    assert report["students"][0]["metric"] == pytest.approx(sum(DISTILLED) / 3), (
        "the report is left as it was"
    )


def test_each_seed_folder_gets_its_own_card(tmp_path):
    report = seeded_report(tmp_path)
    write_cards(report)
    for student, values in zip(report["students"], (DISTILLED, BASELINE)):
        for run, value in zip(student["seeds"], values):
            card = ModelCard.load(Path(run["output_dir"]) / "README.md")
            assert card.data.eval_results[0].metric_value == pytest.approx(value)
            assert f"- This model (seed {run['seed']}): accuracy {value:.4g}" in card.text


def test_the_seed_is_found_from_the_folder_when_writing_and_pushing(tmp_path, saved_student):  # noqa: F811
    report = seeded_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps(report))
    seed_2 = tmp_path / "students" / "distilled" / "seed-2"
    assert seed_of_folder(report, "distilled", seed_2) == 2
    assert seed_of_folder(report, "distilled", tmp_path / "students" / "distilled") is None
    card = ModelCard.load(write_model_card(seed_2, tmp_path / "report.json", student_name="distilled"))
    assert card.data.eval_results[0].metric_value == pytest.approx(DISTILLED[1])
    # A push from the seed's folder finds the run's report three folders up and writes seed 2's card.
    shutil.rmtree(seed_2)
    shutil.copytree(saved_student, seed_2)
    assert find_report(seed_2) == tmp_path / "report.json"
    api = FakeHfApi()
    push_student(seed_2, "someone/tiny-seed-2", api=api, license="mit")
    card = ModelCard(api.readme_at_upload)
    assert card.data.eval_results[0].metric_value == pytest.approx(DISTILLED[1])
    assert "- This model (seed 2): accuracy 0.798 on 800 test examples." in card.text


def test_a_seed_the_run_did_not_train_is_refused():
    with pytest.raises(
        ValueError, match=r"seed 7 is not among the seeds .*\[1, 2, 3\].*pass one of its seeds"
    ):
        seed_report(seeded_report(Path("run")), 7)
    with pytest.raises(ValueError, match=r"seed 1 is not among .*\(none\).*--seeds 1,2,3"):
        seed_report(make_run_report(), 1)


def test_other_settings_leave_out_empty_values():
    report = make_run_report()
    report["distillation"].update(feature_map_weight=0.0, feature_layers="", teacher_layers=None)
    body = ModelCard(render_model_card(report, "distilled")).text
    (line,) = [line for line in body.splitlines() if line.startswith("- Other settings:")]
    assert line == "- Other settings: feature_map_weight = 0.0"
