"""The teacher-vs-student report of a run: ``report.md`` and ``report.html`` around the run's plots.

The pieces live in their own modules and are re-exported here, where the CLI and the recipes import them:
the ``report.json`` schema and its validation in :mod:`hf_distill.reports.schema`, how values and the
comparison table read in :mod:`hf_distill.reports.format`, the matplotlib plots in
:mod:`hf_distill.reports.plots` and the quality figure, drawn first, in :mod:`hf_distill.reports.metric_figure`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path

from hf_distill.reports.format import (
    NOT_MEASURED,
    comparison_table,
    format_bytes,
    format_count,
    format_metric,
    format_ms,
    format_percent,
    format_ratio,
    is_number,
    markdown_table,
    report_notes,
    scorecard_table,
    verdict_lines,
)
from hf_distill.reports.metric_figure import plot_metric
from hf_distill.reports.plots import (
    LOSS_KEYS,
    plot_latency_bars,
    plot_loss_curves,
    plot_size_quality,
)
from hf_distill.reports.run_folder import trainer_folder_report
from hf_distill.reports.schema import (
    DATA_SCHEMA,
    DISTILLATION_SCHEMA,
    REPORT_FILENAME,
    STUDENT_SCHEMA,
    TEACHER_SCHEMA,
    TOP_LEVEL_SCHEMA,
    load_report,
    validate_report,
)

__all__ = [
    "DATA_SCHEMA",
    "DISTILLATION_SCHEMA",
    "FIGURES_DIRNAME",
    "LOSS_KEYS",
    "NOT_MEASURED",
    "REPORT_FILENAME",
    "REPORT_FORMATS",
    "STUDENT_SCHEMA",
    "TEACHER_SCHEMA",
    "TOP_LEVEL_SCHEMA",
    "comparison_table",
    "format_bytes",
    "format_count",
    "format_metric",
    "format_ms",
    "format_percent",
    "format_ratio",
    "load_report",
    "make_report",
    "markdown_table",
    "plot_latency_bars",
    "plot_loss_curves",
    "plot_metric",
    "plot_size_quality",
    "validate_report",
]

REPORT_FORMATS = ("md", "html")
FIGURES_DIRNAME = "figures"
_CAPTIONS = {
    "losses": "Training curves: every run's task cross-entropy, and the distillation terms apart",
    "metric": "The verdict: KD - no-KD with its 95% interval (left); each model's mean over seeds, its interval "
    "and each seed (right)",
    "latency": "Teacher against students: latency",
    "size_quality": "Parameters against quality",
}


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


def _html_scorecard(report: dict) -> str:
    """The "Over seeds" section: the scorecard table and the verdicts (empty without a scorecard)."""
    if not report.get("scorecard"):
        return ""
    verdicts = "".join(f"<li>{html.escape(line)}</li>" for line in verdict_lines(report))
    return f"<h2>Over seeds</h2>\n{_html_table(*scorecard_table(report))}\n<ul>{verdicts}</ul>\n"


def _known(value) -> str:
    return NOT_MEASURED if value is None else str(value)


def _settings_lines(report: dict) -> list[str]:
    teacher = report.get("teacher") or {}
    distillation, data = report.get("distillation") or {}, report.get("data") or {}
    setting = {key: _known(distillation.get(key)) for key in DISTILLATION_SCHEMA}
    sizes = {key: _known(data.get(key)) for key in DATA_SCHEMA}
    lines = [
        f"Task: {_known(report.get('task'))}; teacher `{teacher.get('name_or_path') or 'name not recorded'}`"
        f" (revision {teacher.get('revision') or 'not pinned'}).",
        f"Distillation loss: {setting['distillation_loss']}, temperature {setting['temperature']}, "
        f"alpha {setting['alpha']}; hidden-state weight {setting['hidden_state_weight']} "
        f"({setting['hidden_state_loss']}, layer map {setting['hidden_layer_map']}).",
        f"Data: {sizes['dataset']}: {sizes['train_size']} train, {sizes['validation_size']} validation, "
        f"{sizes['test_size']} test examples.",
    ]
    if report.get("source"):
        lines.append(f"Read from {report['source']}: what only a recipe measures reads {NOT_MEASURED}.")
    return lines


def _load_run(run_dir: Path) -> dict:
    """A recipe's ``report.json``, else the partial report of a DistillationTrainer output folder."""
    if run_dir.is_dir() and not (run_dir / REPORT_FILENAME).is_file():
        return trainer_folder_report(run_dir)
    return load_report(run_dir)


def _measured(report: dict, *keys: str) -> bool:
    models = [report.get("teacher") or {}, *report["students"]]
    return all(is_number(model.get(key)) for model in models for key in keys)


def _draw(report: dict, figures_dir: Path) -> dict[str, Path]:
    """The plots the report's numbers allow, the quality figure (the verdict) first: a trainer-only folder has
    curves, and the other figures only when measured."""
    written: dict[str, Path] = {}
    if _measured(report, "metric"):
        written["metric"] = plot_metric(report, figures_dir / "metric.png")
    curves = plot_loss_curves(report, figures_dir / "losses.png")
    if curves is not None:
        written["losses"] = curves
    if _measured(report, "latency_ms_b1", "latency_ms_b32"):
        written["latency"] = plot_latency_bars(report, figures_dir / "latency.png")
    if len(report["students"]) >= 2 and _measured(report, "metric", "parameters"):
        written["size_quality"] = plot_size_quality(report, figures_dir / "size_quality.png")
    return written


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f}%"


def generation_section(report: dict) -> list[str]:
    """The codegen recipe's ``generation`` part as Markdown blocks: the table of parse rate, degenerate share,
    doctest pass rate and bits per byte per model, then the sample completions; empty without it."""
    generation = report.get("generation")
    if not generation:
        return []
    header = ["model", "prompting", "parses", "degenerate", "doctests pass", "bits/byte"]
    rows = [
        [
            entry["name"],
            entry["prompt_style"],
            _rate(entry["parse_rate"]),
            _rate(entry["degenerate_rate"]),
            f"{_rate(entry['doctest_pass_rate'])} of {entry['doctest_prompts']}",
            "n/a" if entry.get("bits_per_byte") is None else f"{entry['bits_per_byte']:.3f}",
        ]
        for entry in generation["models"]
    ]
    blocks = [
        f"Greedy completions of {generation['prompts']} held-out functions (at most "
        f"{generation['max_new_tokens']} new tokens); doctests run in a sandboxed child process.",
        markdown_table(header, rows),
    ]
    for sample in generation.get("samples", []):
        blocks.append(f"### `{sample['function']}` ({sample['path']})\n\n```python\n{sample['prompt']}```")
        for name, completion in sample["completions"].items():
            blocks.append(f"{name}:\n\n```python\n{completion or '(blank)'}\n```")
    return blocks


def make_report(
    run_dir: str | Path, output_dir: str | Path | None = None, formats: Sequence[str] = REPORT_FORMATS
) -> dict[str, Path]:
    """Draws the plots of a run and writes ``report.md`` / ``report.html`` that embed them.

    Args:
        run_dir: the run directory (or its ``report.json``), or the ``output_dir`` of a ``DistillationTrainer``
            run without a recipe: its ``trainer_state.json`` and model card make a partial report
            (:mod:`hf_distill.reports.run_folder`); curves are drawn, numbers no one measured read "not measured".
        output_dir: where to write; defaults to the run directory. PNGs go to ``<output_dir>/figures/``
            and the documents link them by relative path, so the folder can be moved or zipped whole.
        formats: any of ``"md"``, ``"html"``; empty to draw the plots only.

    Returns:
        The written files by name: ``losses`` (absent when nothing was logged), ``metric``, ``latency``
        (each when measured for every model), ``size_quality`` (only with two or more students), ``md``, ``html``.

    Raises:
        FileNotFoundError: when ``run_dir`` holds neither ``report.json`` nor a Trainer state, naming what to run.
    """
    unknown = sorted(set(formats) - set(REPORT_FORMATS))
    if unknown:
        raise ValueError(f"Unknown report format(s) {unknown}; choose from {list(REPORT_FORMATS)}.")
    run_dir = Path(run_dir)
    report = _load_run(run_dir)
    output_dir = (
        Path(output_dir) if output_dir is not None else (run_dir if run_dir.is_dir() else run_dir.parent)
    )
    figures_dir = output_dir / FIGURES_DIRNAME
    figures_dir.mkdir(parents=True, exist_ok=True)

    written = _draw(report, figures_dir)
    figures = {name: f"{FIGURES_DIRNAME}/{path.name}" for name, path in written.items()}

    title = f"Distillation report: {_known(report.get('task'))}"
    header, rows = comparison_table(report)
    notes = [] if "losses" in written else ["No training logs in report.json, so no training curves."]
    if "md" in formats:
        parts = [f"# {title}", "\n".join(f"- {line}" for line in _settings_lines(report))]
        parts += ["## Teacher against students", markdown_table(header, rows), *report_notes(report)]
        if report.get("scorecard"):
            parts += ["## Over seeds", markdown_table(*scorecard_table(report))]
            parts += ["\n".join(f"- {line}" for line in verdict_lines(report))]
        parts += ["## Plots"]
        parts += [f"![{_CAPTIONS[name]}]({ref})" for name, ref in figures.items()] + notes
        generated = generation_section(report)
        parts += ["## Generated code", *generated] if generated else []
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
            f"{_html_table(header, rows)}\n"
            + "".join(f"<p>{html.escape(n)}</p>" for n in report_notes(report))
            + f"\n{_html_scorecard(report)}<h2>Plots</h2>\n{images}\n"
            + "".join(f"<p>{html.escape(n)}</p>" for n in notes)
            + "\n</body>\n</html>\n"
        )
        written["html"] = output_dir / "report.html"
        written["html"].write_text(page, encoding="utf-8")
    return written
