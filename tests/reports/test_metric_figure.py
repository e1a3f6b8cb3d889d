"""What the report's figures show, read back from their matplotlib artists: the verdict panel (KD - no-KD with
its interval, each seed, a zero line), each model's mean with its interval and seeds on a fitted axis, the
size-vs-quality intervals, and latency labels clear of the whiskers."""

from __future__ import annotations

import json

import pytest

from tests.helpers.run_reports import make_run_report

pytest.importorskip("matplotlib")
np = pytest.importorskip("numpy")

from hf_distill.reports.metric_figure import draw_metric  # noqa: E402
from hf_distill.reports.plots import draw_size_quality, plot_latency_bars  # noqa: E402
from hf_distill.reports.report import make_report  # noqa: E402

# The demo's scorecard: three seeds on 800 test examples.
MODELS = {
    "teacher": {"mean": 0.8033, "interval": [0.7750, 0.8300], "per_seed": [0.8033]},
    "distilled": {"mean": 0.7955, "interval": [0.7680, 0.8215], "per_seed": [0.7939, 0.7980, 0.7945]},
    "no_kd_baseline": {"mean": 0.7769, "interval": [0.7490, 0.8040], "per_seed": [0.7760, 0.7790, 0.7757]},
}
COMPARISON = {
    "distilled": "distilled",
    "baseline": "no_kd_baseline",
    "difference": 0.0186,
    "interval": [0.007, 0.030],
    "per_seed": [0.0179, 0.0190, 0.0188],
    "verdict": "distillation beats training alone by +1.9 points [0.7, 3.0] (accuracy KD - no-KD, 3 seeds, "
    "800 test examples)",
}


def scored_report() -> dict:
    report = make_run_report()
    report["teacher"]["metric"] = MODELS["teacher"]["mean"]
    for student in report["students"]:
        student["metric"] = MODELS[student["name"]]["mean"]
    report["scorecard"] = {
        "metric_name": "accuracy",
        "higher_is_better": True,
        "seeds": [1, 2, 3],
        "test_examples": 800,
        "confidence_level": 0.95,
        "models": MODELS,
        "comparisons": [COMPARISON],
    }
    return report


def _error_bars(axis) -> list[tuple[float, float | None, float, float]]:
    """``(x, y, low, high)`` of each vertical error bar drawn on ``axis``: its segment's ends, and the marker's
    height (None when the bar has no marker)."""
    bars = []
    for container in axis.containers:
        data_line, _, bar_lines = container.lines
        for index, ((x, low), (_, high)) in enumerate(bar_lines[0].get_segments() if bar_lines else []):
            y = None if data_line is None else data_line.get_ydata()[index]
            bars.append((x, y, min(low, high), max(low, high)))
    return bars


def _means(axis) -> list[float]:
    """The heights of the error bars' markers (the means), with or without an interval."""
    return [
        y
        for container in axis.containers
        if container.lines[0] is not None
        for y in container.lines[0].get_ydata()
    ]


def _points(axis) -> list[list[float]]:
    """The y values of each scatter drawn on ``axis`` (one per model: its seeds)."""
    from matplotlib.collections import PathCollection

    return [list(c.get_offsets()[:, 1]) for c in axis.collections if isinstance(c, PathCollection)]


def test_the_verdict_panel_comes_first_with_its_interval_seeds_and_zero_line():
    figure = draw_metric(scored_report())
    difference_axis, models_axis = figure.axes
    ((x, y, low, high),) = _error_bars(difference_axis)
    assert (y, low, high) == pytest.approx((1.86, 0.7, 3.0)), "in points, as the verdict prints it"
    assert _points(difference_axis) == [pytest.approx([1.79, 1.90, 1.88])]
    zero = [line for line in difference_axis.get_lines() if list(line.get_ydata()) == [0.0, 0.0]]
    assert len(zero) == 1 and zero[0].get_linestyle() == "--"
    bottom, top = difference_axis.get_ylim()
    assert bottom < 0.0 < 3.0 < top
    assert figure.get_suptitle() == f"distilled vs no_kd_baseline: {COMPARISON['verdict']}"
    assert "points" in difference_axis.get_ylabel()


def test_each_model_shows_its_mean_interval_and_seeds_on_a_fitted_axis():
    report = scored_report()
    _, models_axis = draw_metric(report).axes
    bars = _error_bars(models_axis)
    drawn = [value for _, y, low, high in bars for value in (y, low, high)]
    assert drawn == pytest.approx([value for m in MODELS.values() for value in (m["mean"], *m["interval"])])
    assert [x for x, *_ in bars] == [0, 1, 2]
    # The teacher is trained once: its one score is its mean, with no strip of seeds.
    assert _points(models_axis) == [
        pytest.approx(MODELS[name]["per_seed"]) for name in ("distilled", "no_kd_baseline")
    ]
    bottom, top = models_axis.get_ylim()
    assert 0.7 < bottom < 0.749 and 0.83 < top < 0.9, "fitted to the values, not from 0"
    # The value labels sit beside the mean, to the right of the bar's caps.
    labels = {text.get_text(): text for text in models_axis.texts}
    assert set(labels) == {"0.8033", "0.7955", "0.7769"}
    assert all(label.xyann[0] > 0 for label in labels.values())
    assert [t.get_text() for t in models_axis.get_xticklabels()] == list(MODELS)


def test_without_a_scorecard_one_panel_of_points_fitted_to_them():
    figure = draw_metric(make_run_report())
    (axis,) = figure.axes
    assert _error_bars(axis) == [], "no interval was computed, none is drawn"
    assert _means(axis) == [0.9243, 0.8876, 0.8512]
    assert axis.get_ylim()[0] > 0.8
    assert all(list(line.get_ydata()) != [0.0, 0.0] for line in axis.get_lines())


def test_size_quality_draws_each_models_interval():
    axis = draw_size_quality(scored_report()).axes[0]
    ends = sorted((round(low, 4), round(high, 4)) for _, _, low, high in _error_bars(axis))
    assert ends == sorted((m["interval"][0], m["interval"][1]) for m in MODELS.values())
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels[1] == "distilled: 45.69M, 0.7955 [0.768, 0.8215]"


def test_latency_labels_sit_above_the_whiskers(tmp_path):
    from matplotlib.text import Annotation

    report = make_run_report()
    for entry in [report["teacher"], *report["students"]]:
        entry["latency"] = {
            f"b{size}": {
                "q25_ms": 0.8 * entry[f"latency_ms_b{size}"],
                "q75_ms": 1.3 * entry[f"latency_ms_b{size}"],
            }
            for size in (1, 32)
        }
    captured = []
    import matplotlib.figure

    original = matplotlib.figure.Figure.savefig

    def keep(figure, path, *args, **kwargs):
        captured.append(figure)
        return original(figure, path, *args, **kwargs)

    matplotlib.figure.Figure.savefig = keep
    try:
        plot_latency_bars(report, tmp_path / "latency.png")
    finally:
        matplotlib.figure.Figure.savefig = original
    for axis, size in zip(captured[0].axes, (1, 32)):
        labels = [text for text in axis.texts if isinstance(text, Annotation)]
        entries = [report["teacher"], *report["students"]]
        assert [label.get_text() for label in labels] == [
            format(e[f"latency_ms_b{size}"], ".3g") for e in entries
        ]
        for label, entry in zip(labels, entries):
            assert label.xy[1] == pytest.approx(entry["latency"][f"b{size}"]["q75_ms"]), (
                "above the whisker's top"
            )
            assert label.get_va() == "bottom" and label.xyann[1] > 0


def test_make_report_draws_the_verdict_figure_first(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(scored_report()))
    written = make_report(tmp_path, formats=("md",))
    assert list(written)[0] == "metric" and written["metric"].is_file()
    markdown = written["md"].read_text()
    assert markdown.index("figures/metric.png") < markdown.index("figures/losses.png")
