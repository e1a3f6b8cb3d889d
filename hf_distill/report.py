"""The teacher-vs-student report of a run: read ``report.json``, draw the plots, write Markdown and HTML.

A run directory written by the recipes holds ``report.json``::

    {"task": str, "metric_name": str, "higher_is_better": bool,
     "teacher": {"name_or_path", "revision", "metric", "parameters", "size_bytes",
                 "latency_ms_b1", "latency_ms_b32"},
     "students": [{"name", "kind", "init", "output_dir", "metric", "parameters", "size_bytes",
                   "latency_ms_b1", "latency_ms_b32", "retention", "speedup_b1", "speedup_b32"}, ...],
     "distillation": {"distillation_loss", "temperature", "alpha", "hidden_state_weight",
                      "hidden_state_loss", "hidden_layer_map"},
     "data": {"dataset", "train_size", "validation_size", "test_size"},
     "log_history": {"<student name>": [Trainer ``state.log_history`` entries]}}

``retention`` is student metric / teacher metric, or teacher / student when lower is better (perplexity),
so 100 % always means "as good as the teacher". ``speedup_b*`` is teacher latency / student latency.

matplotlib is an optional dependency (``pip install hf_distill[report]``); it is imported only when plots
are drawn, and only through its object-oriented API with the Agg canvas, so drawing a report never
changes the pyplot backend of a notebook or script that imports hf_distill.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

REPORT_FILENAME = "report.json"
NOT_MEASURED = "not measured"

# Expected type of each key: "str", "int", "float" (int accepted), "bool", "str?" (str or null).
TEACHER_SCHEMA = {
    "name_or_path": "str",
    "revision": "str?",
    "metric": "float",
    "parameters": "int",
    "size_bytes": "int",
    "latency_ms_b1": "float",
    "latency_ms_b32": "float",
}
STUDENT_SCHEMA = {
    "name": "str",
    "kind": "str",
    "init": "str",
    "output_dir": "str",
    "metric": "float",
    "parameters": "int",
    "size_bytes": "int",
    "latency_ms_b1": "float",
    "latency_ms_b32": "float",
    "retention": "float",
    "speedup_b1": "float",
    "speedup_b32": "float",
}
DISTILLATION_SCHEMA = {
    "distillation_loss": "str",
    "temperature": "float",
    "alpha": "float",
    "hidden_state_weight": "float",
    "hidden_state_loss": "str",
    "hidden_layer_map": "str",
}
DATA_SCHEMA = {"dataset": "str", "train_size": "int", "validation_size": "int", "test_size": "int"}
TOP_LEVEL_SCHEMA = {"task": "str", "metric_name": "str", "higher_is_better": "bool"}

# The loss parts the DistillationTrainer logs, in the order they are plotted.
LOSS_KEYS = ("loss", "loss_task", "loss_kd", "loss_hidden", "eval_loss")

_TYPE_WORDS = {
    "str": "a string",
    "str?": "a string or null",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "dict": "an object",
    "list": "a list",
}


def _has_type(value: Any, expected: str) -> bool:
    if expected == "str?":
        return value is None or isinstance(value, str)
    if expected == "str":
        return isinstance(value, str)
    if expected == "bool":
        return isinstance(value, bool)
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "dict":
        return isinstance(value, dict)
    if expected == "list":
        return isinstance(value, list)
    raise AssertionError(expected)  # a typo in the schemas above, not user input


class _Checker:
    """Walks a report and raises ``ValueError`` naming the key path and the file on the first problem."""

    def __init__(self, source: str, partial: bool):
        self.source = source
        self.partial = partial

    def key(self, mapping: dict, key: str, expected: str, where: str) -> Any:
        path = f"{where}.{key}" if where else key
        if key not in mapping:
            if self.partial:
                return None
            raise ValueError(f"{self.source}: missing key '{path}' (expected {_TYPE_WORDS[expected]}).")
        value = mapping[key]
        # A partial report (written while training) may hold null for what is not measured yet.
        if value is None and self.partial:
            return None
        if not _has_type(value, expected):
            raise ValueError(
                f"{self.source}: key '{path}' must be {_TYPE_WORDS[expected]}, "
                f"got {type(value).__name__} ({value!r:.60})."
            )
        return value

    def section(self, mapping: dict, key: str, schema: dict[str, str], where: str = "") -> None:
        section = self.key(mapping, key, "dict", where)
        if section is not None:
            path = f"{where}.{key}" if where else key
            for name, expected in schema.items():
                self.key(section, name, expected, path)


def validate_report(report: Any, source: str = "report", *, partial: bool = False) -> dict:
    """Checks ``report`` against the ``report.json`` schema and returns it unchanged.

    With ``partial=True`` (a report written during training) keys may be missing or null, but those
    present must have the right type. Extra keys are allowed everywhere.

    Raises:
        ValueError: naming ``source`` and the first missing or ill-typed key, e.g. ``'students[1].metric'``.
    """
    if not isinstance(report, dict):
        raise ValueError(f"{source}: a report must be a JSON object, got {type(report).__name__}.")
    check = _Checker(source, partial)
    for key, expected in TOP_LEVEL_SCHEMA.items():
        check.key(report, key, expected, "")
    check.section(report, "teacher", TEACHER_SCHEMA)
    check.section(report, "distillation", DISTILLATION_SCHEMA)
    check.section(report, "data", DATA_SCHEMA)
    students = check.key(report, "students", "list", "")
    names = []
    for index, student in enumerate(students or []):
        where = f"students[{index}]"
        if not isinstance(student, dict):
            raise ValueError(f"{source}: '{where}' must be an object, got {type(student).__name__}.")
        for name, expected in STUDENT_SCHEMA.items():
            check.key(student, name, expected, where)
        names.append(student.get("name"))
    duplicates = sorted({n for n in names if n is not None and names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"{source}: student names must be unique (log_history is keyed by them); repeated: {duplicates}."
        )
    histories = check.key(report, "log_history", "dict", "")
    for name, entries in (histories or {}).items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError(
                f"{source}: 'log_history.{name}' must be a list of objects (Trainer log entries)."
            )
    return report


def load_report(path: str | Path, *, partial: bool = False) -> dict:
    """Reads and validates ``report.json`` (``path`` is the file or the run directory that holds it).

    Raises:
        FileNotFoundError: when there is no such file.
        ValueError: when the file is not JSON, or a key is missing or has the wrong type (named with the file).
    """
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: pass a run directory written by a recipe (it holds {REPORT_FILENAME})."
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}).") from error
    return validate_report(report, str(path), partial=partial)


# ---- formatting -----------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_metric(value: Any) -> str:
    return f"{value:.4g}" if _is_number(value) else NOT_MEASURED


def format_count(value: Any) -> str:
    """Parameter counts as 4.39M / 1.10B."""
    if not _is_number(value):
        return NOT_MEASURED
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return str(int(value))


def format_bytes(value: Any) -> str:
    """Decimal units, as the Hub shows file sizes."""
    if not _is_number(value):
        return NOT_MEASURED
    for scale, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {suffix}"
    return f"{int(value)} B"


def format_ms(value: Any) -> str:
    return f"{value:.2f}" if _is_number(value) else NOT_MEASURED


def format_ratio(value: Any) -> str:
    return f"{value:.2f}x" if _is_number(value) else NOT_MEASURED


def format_percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if _is_number(value) else NOT_MEASURED


def comparison_table(report: dict, highlight: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the teacher-vs-students table; missing values read "not measured".

    The teacher row has retention 100 % and speed-up 1x by definition, when its own numbers are known.
    ``highlight`` marks one student's row (the model a card describes) in bold.
    """
    metric_name = report.get("metric_name") or "metric"
    direction = report.get("higher_is_better")
    if direction is not None:
        metric_name += " (higher is better)" if direction else " (lower is better)"
    header = [
        "Model",
        "Role",
        metric_name,
        "Retention",
        "Parameters",
        "Size on disk",
        "Latency b1 (ms)",
        "Latency b32 (ms)",
        "Speed-up b1",
        "Speed-up b32",
    ]
    teacher = report.get("teacher") or {}
    known = _is_number(teacher.get("metric"))
    rows = [
        [
            f"`{teacher.get('name_or_path') or NOT_MEASURED}`",
            "teacher",
            format_metric(teacher.get("metric")),
            format_percent(1.0 if known else None),
            format_count(teacher.get("parameters")),
            format_bytes(teacher.get("size_bytes")),
            format_ms(teacher.get("latency_ms_b1")),
            format_ms(teacher.get("latency_ms_b32")),
            format_ratio(1.0 if _is_number(teacher.get("latency_ms_b1")) else None),
            format_ratio(1.0 if _is_number(teacher.get("latency_ms_b32")) else None),
        ]
    ]
    for student in report.get("students") or []:
        name = student.get("name") or NOT_MEASURED
        rows.append(
            [
                f"**{name}** (this model)" if name == highlight else name,
                (student.get("kind") or "student").replace("_", " "),
                format_metric(student.get("metric")),
                format_percent(student.get("retention")),
                format_count(student.get("parameters")),
                format_bytes(student.get("size_bytes")),
                format_ms(student.get("latency_ms_b1")),
                format_ms(student.get("latency_ms_b32")),
                format_ratio(student.get("speedup_b1")),
                format_ratio(student.get("speedup_b32")),
            ]
        )
    return header, rows


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def _html_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def cell(tag: str, text: str) -> str:
        text = html.escape(str(text))
        # Undo the two Markdown marks the table uses, as HTML.
        if text.startswith("**"):
            name, _, rest = text[2:].partition("**")
            text = f"<strong>{name}</strong>{rest}"
        if text.startswith("`") and text.endswith("`"):
            text = f"<code>{text[1:-1]}</code>"
        return f"<{tag}>{text}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = "\n".join("<tr>" + "".join(cell("td", c) for c in row) + "</tr>" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


# ---- plots ------------------------------------------------------------------------------------------------

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
        if _is_number(value) and math.isfinite(value) and _is_number(entry.get("step")):
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
    figure.savefig(path)
    return path


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


# ---- the report -------------------------------------------------------------------------------------------

REPORT_FORMATS = ("md", "html")
FIGURES_DIRNAME = "figures"
_CAPTIONS = {
    "losses": "Training curves of each part of the loss",
    "metric": "Teacher against students: quality",
    "latency": "Teacher against students: latency",
    "size_quality": "Parameters against quality",
}


def _settings_lines(report: dict) -> list[str]:
    distillation, data = report["distillation"], report["data"]
    return [
        f"Task: {report['task']}; teacher `{report['teacher']['name_or_path']}`"
        f" (revision {report['teacher']['revision'] or 'not pinned'}).",
        f"Distillation loss: {distillation['distillation_loss']}, temperature {distillation['temperature']}, "
        f"alpha {distillation['alpha']}; hidden-state weight {distillation['hidden_state_weight']} "
        f"({distillation['hidden_state_loss']}, layer map {distillation['hidden_layer_map']}).",
        f"Data: {data['dataset']}: {data['train_size']} train, {data['validation_size']} validation, "
        f"{data['test_size']} test examples.",
    ]


def make_report(
    run_dir: str | Path, output_dir: str | Path | None = None, formats: Sequence[str] = REPORT_FORMATS
) -> dict[str, Path]:
    """Draws the plots of a run and writes ``report.md`` / ``report.html`` that embed them.

    Args:
        run_dir: the run directory (or its ``report.json``).
        output_dir: where to write; defaults to the run directory. PNGs go to ``<output_dir>/figures/``
            and the documents link them by relative path, so the folder can be moved or zipped whole.
        formats: any of ``"md"``, ``"html"``; empty to draw the plots only.

    Returns:
        The written files by name: ``losses`` (absent when nothing was logged), ``metric``, ``latency``,
        ``size_quality`` (only with two or more students), ``md``, ``html``.
    """
    unknown = sorted(set(formats) - set(REPORT_FORMATS))
    if unknown:
        raise ValueError(f"Unknown report format(s) {unknown}; choose from {list(REPORT_FORMATS)}.")
    run_dir = Path(run_dir)
    report = load_report(run_dir)
    output_dir = (
        Path(output_dir) if output_dir is not None else (run_dir if run_dir.is_dir() else run_dir.parent)
    )
    figures_dir = output_dir / FIGURES_DIRNAME
    figures_dir.mkdir(parents=True, exist_ok=True)

    written: dict[str, Path] = {}
    curves = plot_loss_curves(report, figures_dir / "losses.png")
    if curves is not None:
        written["losses"] = curves
    written["metric"] = plot_metric_bars(report, figures_dir / "metric.png")
    written["latency"] = plot_latency_bars(report, figures_dir / "latency.png")
    if len(report["students"]) >= 2:
        written["size_quality"] = plot_size_quality(report, figures_dir / "size_quality.png")
    figures = {name: f"{FIGURES_DIRNAME}/{path.name}" for name, path in written.items()}

    title = f"Distillation report: {report['task']}"
    header, rows = comparison_table(report)
    notes = [] if curves is not None else ["No training logs in report.json, so no training curves."]
    if "md" in formats:
        parts = [f"# {title}", "\n".join(f"- {line}" for line in _settings_lines(report))]
        parts += ["## Teacher against students", markdown_table(header, rows), "## Plots"]
        parts += [f"![{_CAPTIONS[name]}]({ref})" for name, ref in figures.items()] + notes
        written["md"] = output_dir / "report.md"
        written["md"].write_text("\n\n".join(parts) + "\n", encoding="utf-8")
    if "html" in formats:
        settings = "".join(
            f"<li>{html.escape(line.replace('`', ''))}</li>" for line in _settings_lines(report)
        )
        images = "\n".join(
            f'<figure><img src="{html.escape(ref)}" alt="{_CAPTIONS[name]}">'
            f"<figcaption>{_CAPTIONS[name]}</figcaption></figure>"
            for name, ref in figures.items()
        )
        page = (
            '<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title>\n<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "img{max-width:100%}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n<ul>{settings}</ul>\n<h2>Teacher against students</h2>\n"
            f"{_html_table(header, rows)}\n<h2>Plots</h2>\n{images}\n"
            + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
            + "\n</body>\n</html>\n"
        )
        written["html"] = output_dir / "report.html"
        written["html"].write_text(page, encoding="utf-8")
    return written
