"""The plots of a run's report: training curves, quality and latency bars, size against quality.

matplotlib is an optional dependency (``pip install hf_distill[report]``); it is imported only when plots
are drawn, and only through its object-oriented API with the Agg canvas, so drawing a report never
changes the pyplot backend of a notebook or script that imports hf_distill.
"""

from __future__ import annotations

import math
from pathlib import Path

from .report_format import format_count, is_number

# The loss parts the DistillationTrainer logs, in the order they are plotted.
LOSS_KEYS = ("loss", "loss_task", "loss_kd", "loss_hidden", "eval_loss")

_TEACHER_COLOUR = "#555555"
_KIND_COLOURS = {"distilled": "#1f77b4", "no_kd_baseline": "#ff7f0e"}
_OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _new_figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "Drawing the report needs matplotlib: pip install 'hf_distill[report]' (or pip install matplotlib)."
        ) from error
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _colours(report: dict) -> list[str]:
    colours = [_TEACHER_COLOUR]
    others = iter(_OTHER_COLOURS * 4)
    for student in report["students"]:
        colours.append(_KIND_COLOURS.get(student["kind"]) or next(others))
    return colours


def _curve(entries: list[dict], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for entry in entries:
        value = entry.get(key)
        if is_number(value) and math.isfinite(value) and is_number(entry.get("step")):
            steps.append(entry["step"])
            values.append(value)
    return steps, values


def plot_loss_curves(report: dict, path: Path) -> Path | None:
    """One panel per loss part (``LOSS_KEYS``), one line per student, against the optimizer step.

    Returns None (and draws nothing) when no student logged any of them.
    """
    histories = report["log_history"]
    keys = [k for k in LOSS_KEYS if any(_curve(entries, k)[0] for entries in histories.values())]
    if not keys:
        return None
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    figure = _new_figure(4.2 * ncols, 3.2 * nrows)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    colour_of = dict(zip([s["name"] for s in report["students"]], _colours(report)[1:]))
    for axis, key in zip(axes, keys):
        for name, entries in histories.items():
            steps, values = _curve(entries, key)
            if steps:
                axis.plot(
                    steps,
                    values,
                    marker="." if len(steps) < 30 else None,
                    label=name,
                    color=colour_of.get(name),
                )
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    for axis in axes[len(keys) :]:
        axis.set_visible(False)
    figure.suptitle("Training curves")
    figure.savefig(path)
    return path


def _bars(axis, labels: list[str], values: list[float], colours: list[str], title: str, fmt: str) -> None:
    positions = range(len(labels))
    bars = axis.bar(positions, values, color=colours)
    axis.bar_label(bars, labels=[format(v, fmt) for v in values], fontsize="small")
    axis.set_xticks(list(positions), labels, rotation=15)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    axis.margins(y=0.15)


def plot_metric_bars(report: dict, path: Path) -> Path:
    labels = ["teacher"] + [s["name"] for s in report["students"]]
    values = [report["teacher"]["metric"]] + [s["metric"] for s in report["students"]]
    direction = "higher" if report["higher_is_better"] else "lower"
    figure = _new_figure(1.6 * len(labels) + 3, 4)
    _bars(
        figure.subplots(),
        labels,
        values,
        _colours(report),
        f"{report['metric_name']} ({direction} is better)",
        ".4g",
    )
    figure.savefig(path)
    return path


def plot_latency_bars(report: dict, path: Path) -> Path:
    """Batch 1 and batch 32 side by side: their scales differ by an order of magnitude."""
    labels = ["teacher"] + [s["name"] for s in report["students"]]
    figure = _new_figure(2 * (1.3 * len(labels) + 2), 4)
    for axis, batch in zip(figure.subplots(1, 2), ("b1", "b32")):
        key = f"latency_ms_{batch}"
        values = [report["teacher"][key]] + [s[key] for s in report["students"]]
        _bars(
            axis, labels, values, _colours(report), f"latency, batch {batch[1:]} (ms, lower is better)", ".3g"
        )
        _interquartile_whiskers(axis, [report["teacher"], *report["students"]], batch, values)
    figure.savefig(path)
    return path


def _interquartile_whiskers(axis, entries: list[dict], batch: str, medians: list[float]) -> None:
    """Whiskers from the first to the third quartile of each model's per-round latency, where recorded."""
    spreads = [(entry.get("latency") or {}).get(batch) or {} for entry in entries]
    if not all("q25_ms" in s and "q75_ms" in s for s in spreads):
        return
    below = [m - s["q25_ms"] for m, s in zip(medians, spreads)]
    above = [s["q75_ms"] - m for m, s in zip(medians, spreads)]
    axis.errorbar(range(len(medians)), medians, yerr=[below, above], fmt="none", ecolor="black", capsize=4)
    axis.set_xlabel("whiskers: interquartile range over rounds", fontsize="small")


def plot_size_quality(report: dict, path: Path) -> Path:
    """Parameters against the metric, teacher included, one labelled point per model."""
    models = [("teacher", report["teacher"])] + [(s["name"], s) for s in report["students"]]
    figure = _new_figure(6, 4.5)
    axis = figure.subplots()
    for (name, model), colour in zip(models, _colours(report)):
        marker = "*" if name == "teacher" else "o"
        axis.scatter(model["parameters"], model["metric"], s=140, color=colour, marker=marker, zorder=3)
        axis.annotate(name, (model["parameters"], model["metric"]), textcoords="offset points", xytext=(6, 6))
    counts = [m["parameters"] for _, m in models]
    if min(counts) > 0 and max(counts) / min(counts) > 10:
        axis.set_xscale("log")
    axis.xaxis.set_major_formatter(lambda value, _: format_count(value))
    axis.set_xlabel("parameters")
    axis.set_ylabel(report["metric_name"])
    axis.set_title("size against quality")
    axis.grid(alpha=0.3)
    axis.margins(0.2)
    figure.savefig(path)
    return path
