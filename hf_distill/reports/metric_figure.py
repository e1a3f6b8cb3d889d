"""The quality figure of a run: the verdict first, then every model's score with its spread over seeds.

Left, when the run's scorecard compared a distilled student with its no-KD baseline: the difference KD - no-KD
(points for accuracy and F1, as the verdict prints it) with its 95% paired interval and each seed's difference,
against a marked zero line; the verdict's words are the figure's title. An interval that crosses the line is a
result within noise, whatever the sign of the mean. Right: each model's mean over seeds with its 95% interval
and each seed's own score, on an axis fitted to them (not from 0: 0.7769 and 0.7955 must look different).

The numbers are the scorecard's (:mod:`hf_distill.reports.scorecard`), read from ``report.json``; nothing is
recomputed. A report without a scorecard (a single run, a trainer folder) gets the right panel with one point
per model and no interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_distill.reports.format import is_number
from hf_distill.reports.plots import model_colours, new_figure
from hf_distill.reports.scorecard import POINT_METRICS

_ZERO_COLOUR = "#000000"
_DIFFERENCE_COLOUR = "#1f77b4"
# Seeds' points stand in a strip left of their model's mean (its value label is on the right), this far from it.
_SEED_STRIP = (-0.32, -0.12)


def model_estimates(report: dict) -> list[dict[str, Any]]:
    """Each model, the teacher first: ``name``, ``mean``, ``interval`` ([low, high] or None) and ``per_seed``
    (the seeds' own scores, the mean alone when the report has no scorecard)."""
    scored = (report.get("scorecard") or {}).get("models") or {}
    estimates = []
    for name, entry in [("teacher", report["teacher"]), *((s["name"], s) for s in report["students"])]:
        card = scored.get(name) or {}
        mean = card.get("mean", entry.get("metric"))
        estimates.append(
            {
                "name": name,
                "mean": mean,
                "interval": card.get("interval"),
                "per_seed": list(card.get("per_seed") or [mean]),
            }
        )
    return estimates


def _fit_limits(axis, values: list[float], include_zero: bool = False) -> None:
    """Y-limits around ``values`` with a margin of 15% of their range (of 5% of their size when they are all
    equal), taking in 0 when asked: the differences between the models fill the panel."""
    values = [v for v in values if is_number(v)] + ([0.0] if include_zero else [])
    low, high = min(values), max(values)
    pad = 0.15 * (high - low) or 0.05 * abs(high) or 0.05
    axis.set_ylim(low - pad, high + pad)


def _seed_offsets(count: int) -> list[float]:
    near, far = _SEED_STRIP[1], _SEED_STRIP[0]
    if count < 2:
        return [(near + far) / 2] * count
    return [far + (near - far) * i / (count - 1) for i in range(count)]


def _estimate(axis, x: float, mean: float, interval, per_seed: list[float], colour: str, text: str) -> None:
    """One model (or one difference): the seeds as hollow points in a strip on the left (none for a model
    trained once: its one score is the mean), the mean with its interval as an error bar, and the value written
    to the right of the mean, clear of the bar's caps."""
    if len(per_seed) > 1:
        axis.scatter(
            [x + offset for offset in _seed_offsets(len(per_seed))],
            per_seed,
            s=28,
            facecolors="none",
            edgecolors=colour,
            linewidths=1.2,
            zorder=2,
            label="each seed",
        )
    error = None if interval is None else [[mean - interval[0]], [interval[1] - mean]]
    axis.errorbar([x], [mean], yerr=error, fmt="o", color=colour, ecolor=colour, capsize=6, ms=8, zorder=3)
    axis.annotate(
        text, (x, mean), xytext=(12, 0), textcoords="offset points", va="center", ha="left", fontsize="small"
    )


def _draw_models(axis, report: dict) -> None:
    estimates = model_estimates(report)
    values = []
    for x, (estimate, colour) in enumerate(zip(estimates, model_colours(report))):
        interval, per_seed = estimate["interval"], estimate["per_seed"]
        _estimate(axis, x, estimate["mean"], interval, per_seed, colour, f"{estimate['mean']:.4g}")
        values += [estimate["mean"], *per_seed, *(interval or [])]
    _fit_limits(axis, values)
    axis.set_xticks(range(len(estimates)), [e["name"] for e in estimates], rotation=15)
    axis.set_xlim(-0.6, len(estimates) - 0.1)  # room for the last model's value label
    direction = "higher" if report["higher_is_better"] else "lower"
    seeds = len((report.get("scorecard") or {}).get("seeds") or [])
    spread = f"mean of {seeds} seed(s), 95% interval; hollow: each seed" if seeds else "one run each"
    axis.set_title(f"{report['metric_name']} ({direction} is better): {spread}", fontsize="medium")
    axis.grid(axis="y", alpha=0.3)


def _draw_differences(axis, report: dict) -> None:
    scorecard = report["scorecard"]
    metric_name = scorecard.get("metric_name") or report["metric_name"]
    scale, unit = (100.0, " (points)") if metric_name in POINT_METRICS else (1.0, "")
    values = []
    comparisons = scorecard["comparisons"]
    for x, comparison in enumerate(comparisons):
        mean = scale * comparison["difference"]
        interval = [scale * end for end in comparison["interval"]]
        per_seed = [scale * value for value in comparison.get("per_seed") or [comparison["difference"]]]
        text = f"{mean:+.1f}" if scale != 1.0 else f"{mean:+.4g}"
        _estimate(axis, x, mean, interval, per_seed, _DIFFERENCE_COLOUR, text)
        values += [mean, *interval, *per_seed]
    axis.axhline(0.0, color=_ZERO_COLOUR, linestyle="--", linewidth=1.2, zorder=1, label="no difference")
    _fit_limits(axis, values, include_zero=True)
    axis.set_xticks(
        range(len(comparisons)),
        [f"{c['distilled']}\n- {c['baseline']}" for c in comparisons],
        fontsize="small",
    )
    axis.set_xlim(-0.6, len(comparisons) - 0.1)
    axis.set_ylabel(f"KD - no-KD, {metric_name}{unit}")
    better = "above" if report["higher_is_better"] else "below"
    axis.set_title(f"the verdict: KD better {better} 0", fontsize="medium")
    axis.grid(axis="y", alpha=0.3)


def draw_metric(report: dict):
    """The figure of :func:`plot_metric`: with the scorecard's comparisons, the difference panel first
    (``figure.axes[0]``) and the models' panel second; else the models' panel alone."""
    comparisons = (report.get("scorecard") or {}).get("comparisons") or []
    n_models = 1 + len(report["students"])
    if not comparisons:
        figure = new_figure(1.6 * n_models + 3, 4.5)
        _draw_models(figure.subplots(), report)
        return figure
    figure = new_figure(1.6 * n_models + 1.8 * len(comparisons) + 4, 5)
    difference_axis, models_axis = figure.subplots(
        1, 2, width_ratios=[1.2 + len(comparisons), 1.6 * n_models]
    )
    _draw_differences(difference_axis, report)
    _draw_models(models_axis, report)
    lines = [f"{c['distilled']} vs {c['baseline']}: {c['verdict']}" for c in comparisons]
    figure.suptitle("\n".join(lines), fontsize="medium")
    return figure


def plot_metric(report: dict, path: Path) -> Path:
    """Draws :func:`draw_metric` into ``path`` (a PNG) and returns it."""
    draw_metric(report).savefig(path)
    return path
