"""The plots of a run's report: training curves, latency bars, size against quality (the quality figure, with the
verdict, is :mod:`hf_distill.reports.metric_figure`).

matplotlib is an optional dependency (``pip install hf_distill[report]``); it is imported only when plots
are drawn, and only through its object-oriented API with the Agg canvas, so drawing a report never
changes the pyplot backend of a notebook or script that imports hf_distill.
"""

from __future__ import annotations

import math
from pathlib import Path

from hf_distill.reports.format import format_count, is_number

# The loss parts the DistillationTrainer logs (unweighted: the objective is ``(1 - alpha) * loss_task + alpha *
# loss_kd + weight * loss_hidden + ...``). Any other logged ``loss_*`` key is a distillation term too.
LOSS_KEYS = ("loss", "loss_task", "loss_kd", "loss_hidden", "eval_loss")
TASK_LOSS_KEY = "loss_task"
_NOT_TERMS = ("loss", TASK_LOSS_KEY)
# Above this ratio of the largest to the smallest positive value a panel switches to a log scale.
_LOG_SCALE_RATIO = 100.0
_TERM_STYLES = ("-", "--", ":", "-.")

_TEACHER_COLOUR = "#555555"
_KIND_COLOURS = {"distilled": "#1f77b4", "no_kd_baseline": "#ff7f0e"}
_OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def new_figure(width: float, height: float):
    """A matplotlib ``Figure`` on its own Agg canvas (pyplot untouched), with a constrained layout.

    Raises:
        ImportError: when matplotlib is not installed, saying which extra installs it.
    """
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


def model_colours(report: dict) -> list[str]:
    """One colour per model, the teacher first then each student in the report's order: grey for the teacher,
    one colour for distilled students and one for no-KD baselines across every figure."""
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


def task_loss_key(entries: list[dict], prefix: str = "") -> str | None:
    """The key holding a run's task cross-entropy: ``loss_task`` for a distilled run, ``loss`` for a run
    that logged no distillation term (a plain Trainer: its loss is the task loss), else None (a run with
    ``alpha = 1`` has no task term)."""
    keys = {key for entry in entries for key in entry}
    if f"{prefix}{TASK_LOSS_KEY}" in keys:
        return f"{prefix}{TASK_LOSS_KEY}"
    if any(key.startswith(("loss_", "eval_loss_")) for key in keys):
        return None  # a distilled run: its ``loss`` is the objective, train or eval
    return f"{prefix}loss" if f"{prefix}loss" in keys else None


def distillation_term_keys(entries: list[dict]) -> list[str]:
    """The training log's distillation terms (``loss_kd``, ``loss_hidden``, ...), in first-logged order."""
    found = [k for e in entries for k in e if k.startswith("loss_") and k not in _NOT_TERMS]
    return list(dict.fromkeys(found))


def _set_value_scale(axis, values: list[float]) -> None:
    """From 0 on a linear scale, so a change of 0.001 never fills the panel; a log scale with labelled ticks
    when the values span more than ``_LOG_SCALE_RATIO`` (a KD term next to a hidden-state term)."""
    positive = [v for v in values if v > 0]
    if positive and min(values) > 0 and max(positive) / min(positive) > _LOG_SCALE_RATIO:
        from matplotlib.ticker import LogFormatterSciNotation

        axis.set_yscale("log")
        axis.yaxis.set_major_formatter(LogFormatterSciNotation(labelOnlyBase=False))
        return
    top = max(values, default=0.0)
    axis.set_ylim(0.0, top * 1.08 if top > 0 else 1.0)


def _plot_task_losses(axis, histories: dict[str, list[dict]], colour_of: dict[str, str]) -> bool:
    values: list[float] = []
    for name, entries in histories.items():
        for prefix, style, split in (("", "-", "train"), ("eval_", "--", "eval")):
            key = task_loss_key(entries, prefix)
            steps, ys = _curve(entries, key) if key else ([], [])
            if steps:
                marker = "." if len(steps) < 30 else None
                label = f"{name} ({split})"
                axis.plot(steps, ys, style, marker=marker, label=label, color=colour_of.get(name))
                values += ys
    axis.set_title("task cross-entropy (same loss for every run)")
    _set_value_scale(axis, values)
    return bool(values)


def _plot_distillation_terms(axis, histories: dict[str, list[dict]], colour_of: dict[str, str]) -> bool:
    values: list[float] = []
    for name, entries in histories.items():
        for index, key in enumerate(distillation_term_keys(entries)):
            steps, ys = _curve(entries, key)
            if steps:
                style = _TERM_STYLES[index % len(_TERM_STYLES)]
                axis.plot(steps, ys, style, label=f"{name}: {key}", color=colour_of.get(name))
                values += ys
    axis.set_title("distillation terms (unweighted)")
    _set_value_scale(axis, values)
    return bool(values)


def draw_loss_curves(report: dict):
    """The figure of :func:`plot_loss_curves`, or None when no run logged a loss it can show."""
    histories = report["log_history"]
    figure = new_figure(11, 4)
    task_axis, terms_axis = figure.subplots(1, 2)
    colour_of = dict(zip([s["name"] for s in report["students"]], model_colours(report)[1:]))
    has_task = _plot_task_losses(task_axis, histories, colour_of)
    has_terms = _plot_distillation_terms(terms_axis, histories, colour_of)
    if not has_task and not has_terms:
        return None
    for axis, drawn in ((task_axis, has_task), (terms_axis, has_terms)):
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        if drawn:
            axis.legend(fontsize="small")
        else:
            axis.text(0.5, 0.5, "nothing logged", ha="center", va="center", transform=axis.transAxes)
    figure.suptitle("Training curves")
    return figure


def plot_loss_curves(report: dict, path: Path) -> Path | None:
    """Two panels against the optimizer step: the task cross-entropy of every run (a distilled run's
    ``loss_task``, a plain run's ``loss``; dashed: evaluation), so runs compare like with like; and the
    distillation terms (``loss_kd``, ``loss_hidden``, ...) on their own. The combined objective is not drawn:
    it mixes terms with the run's weights and no other run has it.

    Returns None (and draws nothing) when no student logged any of them.
    """
    figure = draw_loss_curves(report)
    if figure is None:
        return None
    figure.savefig(path)
    return path


def _bars(axis, labels: list[str], values: list[float], colours: list[str], title: str) -> list[float]:
    """Bars with their positions; returns their x positions."""
    positions = list(range(len(labels)))
    axis.bar(positions, values, color=colours)
    axis.set_xticks(positions, labels, rotation=15)
    axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    axis.margins(y=0.15)
    return positions


def plot_latency_bars(report: dict, path: Path) -> Path:
    """Batch 1 and batch 32 side by side: their scales differ by an order of magnitude. Each bar's median is
    written above its interquartile whisker, never on it."""
    labels = ["teacher"] + [s["name"] for s in report["students"]]
    figure = new_figure(2 * (1.3 * len(labels) + 2), 4)
    for axis, batch in zip(figure.subplots(1, 2), ("b1", "b32")):
        key = f"latency_ms_{batch}"
        values = [report["teacher"][key]] + [s[key] for s in report["students"]]
        title = f"latency, batch {batch[1:]} (ms, lower is better)"
        positions = _bars(axis, labels, values, model_colours(report), title)
        tops = _interquartile_whiskers(axis, [report["teacher"], *report["students"]], batch, values)
        for x, value, top in zip(positions, values, tops):
            axis.annotate(
                format(value, ".3g"),
                (x, top),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize="small",
            )
    figure.savefig(path)
    return path


def _interquartile_whiskers(axis, entries: list[dict], batch: str, medians: list[float]) -> list[float]:
    """Whiskers from the first to the third quartile of each model's per-round latency, where recorded.
    Returns the top of each bar's drawing (its whisker's, else the bar's), where its label goes."""
    spreads = [(entry.get("latency") or {}).get(batch) or {} for entry in entries]
    if not all("q25_ms" in s and "q75_ms" in s for s in spreads):
        return list(medians)
    below = [m - s["q25_ms"] for m, s in zip(medians, spreads)]
    above = [s["q75_ms"] - m for m, s in zip(medians, spreads)]
    axis.errorbar(range(len(medians)), medians, yerr=[below, above], fmt="none", ecolor="black", capsize=4)
    axis.set_xlabel("whiskers: interquartile range over rounds", fontsize="small")
    return [max(m, s["q75_ms"]) for m, s in zip(medians, spreads)]


_MARKERS = ("o", "s", "D", "^", "v", "P", "X")


def draw_size_quality(report: dict):
    """The figure of :func:`plot_size_quality`: models are named in a legend, with their numbers, rather than
    beside their points, where students of one size and close scores would print over each other. With the
    run's scorecard, each point is the mean over seeds with its 95% interval as a vertical bar."""
    models = [("teacher", report["teacher"])] + [(s["name"], s) for s in report["students"]]
    intervals = (report.get("scorecard") or {}).get("models") or {}
    figure = new_figure(7, 4.5)
    axis = figure.subplots()
    for index, ((name, model), colour) in enumerate(zip(models, model_colours(report))):
        marker = "*" if name == "teacher" else _MARKERS[(index - 1) % len(_MARKERS)]
        interval = (intervals.get(name) or {}).get("interval")
        label = f"{name}: {format_count(model['parameters'])}, {model['metric']:.4g}"
        if interval:
            low, high = interval
            label += f" [{low:.4g}, {high:.4g}]"
            yerr = [[model["metric"] - low], [high - model["metric"]]]
            axis.errorbar([model["parameters"]], [model["metric"]], yerr=yerr, fmt="none", ecolor=colour)
        # Hollow markers from the second on, so a point drawn on top of another leaves it visible.
        face = colour if index < 2 else "none"
        axis.scatter(
            model["parameters"],
            model["metric"],
            s=140 if index < 2 else 90,
            facecolors=face,
            edgecolors=colour,
            linewidths=2,
            marker=marker,
            zorder=3,
            label=label,
        )
    counts = [m["parameters"] for _, m in models]
    if min(counts) > 0 and max(counts) / min(counts) > 10:
        axis.set_xscale("log")
    else:
        from matplotlib.ticker import MaxNLocator

        axis.xaxis.set_major_locator(MaxNLocator(nbins=5))
    from matplotlib.ticker import EngFormatter

    # "40M", "1.1G": short enough that the ticks never run into each other.
    axis.xaxis.set_major_formatter(EngFormatter(sep=""))
    axis.set_xlabel("parameters")
    axis.set_ylabel(report["metric_name"])
    axis.set_title("size against quality")
    axis.grid(alpha=0.3)
    axis.margins(0.2)
    title = "model: size, metric [95% interval]" if intervals else "model: size, metric"
    axis.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5), title=title)
    return figure


def plot_size_quality(report: dict, path: Path) -> Path:
    """Parameters against the metric, teacher included, one point per model (see :func:`draw_size_quality`)."""
    draw_size_quality(report).savefig(path)
    return path
