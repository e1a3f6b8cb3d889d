"""report.json validation and the teacher-vs-student report (plots, Markdown, HTML)."""

from __future__ import annotations

import copy
import json
import re

import pytest

from hf_distill.reports.report import (
    comparison_table,
    load_report,
    make_report,
    markdown_table,
    plot_loss_curves,
    validate_report,
)
from tests.helpers.run_reports import make_run_report

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")
np = pytest.importorskip("numpy")


@pytest.fixture
def run_dir(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(make_run_report()))
    return tmp_path


# ---- load_report ------------------------------------------------------------------------------------------


def test_load_report_reads_a_file_or_its_run_dir(run_dir):
    assert load_report(run_dir) == make_run_report()
    assert load_report(run_dir / "report.json")["teacher"]["metric"] == 0.9243


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (["teacher", "metric"], r"missing key 'teacher\.metric' \(expected a number\)"),
        (["students", 1, "retention"], r"missing key 'students\[1\]\.retention'"),
        (["data", "test_size"], r"missing key 'data\.test_size'"),
        (["distillation", "alpha"], r"missing key 'distillation\.alpha'"),
        (["log_history"], r"missing key 'log_history'"),
        (["higher_is_better"], r"missing key 'higher_is_better' \(expected true or false\)"),
    ],
)
def test_load_report_names_missing_key_and_file(tmp_path, path, message):
    report = make_run_report()
    parent = report
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    file = tmp_path / "report.json"
    file.write_text(json.dumps(report))
    with pytest.raises(ValueError, match=re.escape(str(file)) + ": " + message):
        load_report(file)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["teacher", "parameters"], 1.5, r"'teacher\.parameters' must be an integer, got float"),
        (["teacher", "parameters"], True, r"'teacher\.parameters' must be an integer, got bool"),
        (["students", 0, "metric"], "0.9", r"'students\[0\]\.metric' must be a number, got str"),
        (
            ["distillation", "temperature"],
            None,
            r"'distillation\.temperature' must be a number, got NoneType",
        ),
        (["teacher", "revision"], 3, r"'teacher\.revision' must be a string or null, got int"),
        (["students"], {}, r"'students' must be a list, got dict"),
        (["task"], ["sentiment"], r"'task' must be a string, got list"),
    ],
)
def test_load_report_names_ill_typed_key(tmp_path, path, value, message):
    report = make_run_report()
    parent = report
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    file = tmp_path / "report.json"
    file.write_text(json.dumps(report))
    with pytest.raises(ValueError, match=re.escape(str(file)) + ": key " + message):
        load_report(file)


def test_load_report_other_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"report\.json does not exist: pass a run directory"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"report\.json: not valid JSON"):
        load_report(tmp_path)
    report = make_run_report()
    report["students"][1]["name"] = "distilled"
    with pytest.raises(ValueError, match=r"run: student names must be unique .* repeated: \['distilled'\]"):
        validate_report(report, "run")
    report = make_run_report()
    report["students"][0] = "distilled"
    with pytest.raises(ValueError, match=r"run: 'students\[0\]' must be an object, got str"):
        validate_report(report, "run")
    report = make_run_report()
    report["log_history"]["distilled"] = {"step": 1}
    with pytest.raises(ValueError, match=r"run: 'log_history\.distilled' must be a list of objects"):
        validate_report(report, "run")
    with pytest.raises(ValueError, match=r"run: a report must be a JSON object, got list"):
        validate_report([], "run")


def test_partial_report_allows_missing_and_null_but_not_wrong_types():
    partial = {
        "teacher": {"name_or_path": "bert-base-uncased", "metric": None},
        "distillation": {"alpha": 0.5},
    }
    assert validate_report(partial, partial=True) is partial
    with pytest.raises(ValueError, match=r"key 'distillation\.alpha' must be a number, got str"):
        validate_report({"distillation": {"alpha": "half"}}, partial=True)


# ---- table ------------------------------------------------------------------------------------------------


def test_deployment_rows_pooled_over_seeds_are_checked_when_present():
    row = {
        "model": "kd",
        "runtime": "onnxruntime",
        "precision": "fp32",
        "metric": 0.5,
        "size_bytes": 10,
        "latency_ms_b1": 1.0,
        "latency_ms_b32": 2.0,
        "retention": 1.0,
        "speedup_b1": 1.0,
        "speedup_b32": 1.0,
    }
    report = make_run_report()
    report["deployment"] = {"quantize": None, "rows": [dict(row)]}
    validate_report(report)  # written before the seeds were pooled: no per_seed, no seeds
    report["deployment"]["seeds"] = [1, 2]
    report["deployment"]["rows"][0].update(per_seed=[0.4, 0.6], interval=[0.3, 0.7])
    validate_report(report)
    report["deployment"]["rows"][0]["per_seed"] = [0.4, float("nan")]
    with pytest.raises(
        ValueError, match=r"deployment.rows\[0\].per_seed' must be a non-empty list of finite"
    ):
        validate_report(report)
    report["deployment"]["rows"][0]["per_seed"] = [0.4, 0.6]
    report["deployment"]["seeds"] = ["1"]
    with pytest.raises(ValueError, match=r"'deployment.seeds' must be a list of integers"):
        validate_report(report)


def test_comparison_table_rows():
    header, rows = comparison_table(make_run_report(), highlight="distilled")
    assert header[2] == "accuracy (higher is better)"
    assert rows[0] == [
        "`textattack/bert-base-uncased-SST-2`",
        "teacher",
        "0.9243",
        "100.0%",
        "109.48M",
        "438.0 MB",
        "12.50",
        "180.25",
        "1.00x",
        "1.00x",
    ]
    assert rows[1] == [
        "**distilled** (this model)",
        "distilled",
        "0.8876",
        "96.0%",
        "45.69M",
        "182.7 MB",
        "4.10",
        "55.00",
        "3.05x",
        "3.28x",
    ]
    assert rows[2][:4] == ["no_kd_baseline", "no kd baseline", "0.8512", "92.1%"]
    table = markdown_table(header, rows)
    assert table.count("\n") == 4 and table.splitlines()[1] == "|---" * 10 + "|"


def test_comparison_table_partial_says_not_measured():
    header, rows = comparison_table({"teacher": {"name_or_path": "gpt2"}})
    assert header[2] == "metric"
    assert rows == [["`gpt2`", "teacher"] + ["not measured"] * 8]


# ---- make_report ------------------------------------------------------------------------------------------


def _assert_real_plot(path, min_size=(300, 200)):
    with Image.open(path) as image:
        assert image.size[0] > min_size[0] and image.size[1] > min_size[1], image.size
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 10, f"{path.name} looks blank"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 10


def test_make_report_writes_plots_and_documents(run_dir, tmp_path):
    import matplotlib

    backend = matplotlib.get_backend()
    out = tmp_path / "out"
    written = make_report(run_dir, out)
    assert matplotlib.get_backend() == backend  # drawn on Agg canvases, pyplot left alone
    assert set(written) == {"losses", "metric", "latency", "size_quality", "md", "html"}
    for name in ("losses", "metric", "latency", "size_quality"):
        assert written[name].parent == out / "figures"
        _assert_real_plot(written[name])

    markdown = written["md"].read_text()
    references = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(references) == 4
    for reference in references:
        assert not reference.startswith("/") and (out / reference).is_file()
    assert "| **distilled**" not in markdown and "| distilled | distilled | 0.8876 | 96.0% |" in markdown
    assert "temperature 3.0, alpha 0.7" in markdown

    page = written["html"].read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(sources) == sorted(references)
    assert "<td>0.8876</td>" in page and "<code>textattack/bert-base-uncased-SST-2</code>" in page


def test_make_report_one_student_no_logs_md_only(tmp_path):
    report = make_run_report()
    report["students"] = report["students"][:1]
    report["log_history"] = {"distilled": []}
    (tmp_path / "report.json").write_text(json.dumps(report))
    written = make_report(tmp_path / "report.json", formats=("md",))
    assert set(written) == {"metric", "latency", "md"}
    assert written["md"] == tmp_path / "report.md"
    assert "No training logs in report.json" in written["md"].read_text()
    assert not (tmp_path / "report.html").exists()


def test_loss_curves_skip_missing_parts(tmp_path):
    report = make_run_report()
    for entries in report["log_history"].values():
        for entry in entries:
            entry.pop("loss_hidden", None)
            entry.pop("eval_loss", None)
    report["log_history"]["distilled"][0]["loss"] = float("nan")  # a diverged step must not break the plot
    _assert_real_plot(plot_loss_curves(report, tmp_path / "losses.png"))


def test_make_report_rejects_unknown_format(run_dir):
    with pytest.raises(
        ValueError, match=r"Unknown report format\(s\) \['pdf'\]; choose from \['md', 'html'\]"
    ):
        make_report(run_dir, formats=("md", "pdf"))


def test_report_is_not_mutated(run_dir, tmp_path):
    report = make_run_report()
    original = copy.deepcopy(report)
    comparison_table(report, highlight="distilled")
    validate_report(report)
    assert report == original


# ---- what the plots show ----------------------------------------------------------------------------------


def _lines(axis) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in axis.get_lines()}


def test_loss_curves_compare_task_loss_like_with_like():
    from hf_distill.reports.plots import draw_loss_curves

    report = make_run_report()
    task_axis, terms_axis = draw_loss_curves(report).axes
    task, terms = _lines(task_axis), _lines(terms_axis)
    distilled = [e for e in report["log_history"]["distilled"] if "loss_task" in e]
    baseline = [e for e in report["log_history"]["no_kd_baseline"] if "loss" in e and "eval_loss" not in e]
    # The distilled run's task term against the baseline's plain loss, which is its task cross-entropy.
    assert task["distilled (train)"] == [e["loss_task"] for e in distilled]
    assert task["no_kd_baseline (train)"] == [e["loss"] for e in baseline]
    # A run with loss parts logs eval_loss as its objective: it has no task cross-entropy to show in eval.
    assert "distilled (eval)" not in task and len(task["no_kd_baseline (eval)"]) == 3
    # The combined objective is on no panel; the KD terms are on their own, only for the run that has them.
    objective = [e["loss"] for e in distilled]
    assert all(values != objective for values in [*task.values(), *terms.values()])
    assert set(terms) == {"distilled: loss_kd", "distilled: loss_hidden"}
    assert terms["distilled: loss_kd"] == [e["loss_kd"] for e in distilled]
    for axis in (task_axis, terms_axis):
        assert axis.get_yscale() == "linear" and axis.get_ylim()[0] == 0.0


def test_loss_curves_do_not_zoom_on_a_flat_curve():
    from hf_distill.reports.plots import draw_loss_curves

    report = make_run_report()
    for entries in report["log_history"].values():
        for step, entry in enumerate(entries):
            if "loss_task" in entry:
                entry["loss_task"] = 0.500 + 0.001 * (step % 2)  # a change of 0.001 must look flat
    task_axis, _ = draw_loss_curves(report).axes
    low, high = task_axis.get_ylim()
    assert low == 0.0 and high >= 0.5


def test_loss_curves_use_a_labelled_log_scale_for_terms_of_different_sizes():
    from hf_distill.reports.plots import draw_loss_curves

    report = make_run_report()
    for entry in report["log_history"]["distilled"]:
        if "loss_hidden" in entry:
            entry["loss_hidden"] = entry["loss_kd"] * 1e-3
    figure = draw_loss_curves(report)
    _, terms_axis = figure.axes
    assert terms_axis.get_yscale() == "log"
    figure.canvas.draw()
    assert any(label.get_text() for label in terms_axis.get_yticklabels())


def test_size_quality_names_each_model_once_in_a_legend():
    from hf_distill.reports.plots import draw_size_quality

    report = make_run_report()
    report["students"][1]["metric"] = report["students"][0]["metric"] - 0.001  # same size, close scores
    axis = draw_size_quality(report).axes[0]
    assert len(axis.texts) == 0  # no label printed beside a point, where two would overlap
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels == [
        "teacher: 109.48M, 0.9243",
        "distilled: 45.69M, 0.8876",
        "no_kd_baseline: 45.69M, 0.8866",
    ]
