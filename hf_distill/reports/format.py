"""How the numbers of a report read: values ("45.69M", "182.7 MB", "not measured") and the comparison table.

The model card (:mod:`hf_distill.hub.card`) and the run's report (:mod:`hf_distill.reports.report`) show the same table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

NOT_MEASURED = "not measured"


def is_number(value: Any) -> bool:
    """True for an int or a float, not for a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_metric(value: Any) -> str:
    return f"{value:.4g}" if is_number(value) else NOT_MEASURED


def format_count(value: Any) -> str:
    """Parameter counts as 4.39M / 1.10B."""
    if not is_number(value):
        return NOT_MEASURED
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return str(int(value))


def format_bytes(value: Any) -> str:
    """Decimal units, as the Hub shows file sizes."""
    if not is_number(value):
        return NOT_MEASURED
    for scale, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {suffix}"
    return f"{int(value)} B"


def format_ms(value: Any) -> str:
    return f"{value:.2f}" if is_number(value) else NOT_MEASURED


def format_ratio(value: Any) -> str:
    return f"{value:.2f}x" if is_number(value) else NOT_MEASURED


def format_percent(value: Any) -> str:
    return f"{100 * value:.1f}%" if is_number(value) else NOT_MEASURED


UNRELIABLE = "unreliable"


def format_latency(entry: dict, batch_size: int) -> str:
    """The median latency in ms with its interquartile range when known: ``"12.95 (12.10-13.40)"``."""
    stats = (entry.get("latency") or {}).get(f"b{batch_size}") or {}
    median = entry.get(f"latency_ms_b{batch_size}")
    if not (is_number(median) and is_number(stats.get("q25_ms")) and is_number(stats.get("q75_ms"))):
        return format_ms(median)
    return f"{median:.2f} ({stats['q25_ms']:.2f}-{stats['q75_ms']:.2f})"


def format_speedup(entry: dict, batch_size: int) -> str:
    """The speed-up with the quartiles of its round-level ratios, ``"3.10x (2.90-3.30)"``; a measurement
    flagged unreliable reads ``"unreliable (0.80-1.50x)"``, never as a speed-up."""
    stats = (entry.get("speedup") or {}).get(f"b{batch_size}") or {}
    value = entry.get(f"speedup_b{batch_size}")
    if not (is_number(value) and is_number(stats.get("q25")) and is_number(stats.get("q75"))):
        return format_ratio(value)
    spread = f"{stats['q25']:.2f}-{stats['q75']:.2f}"
    if not stats.get("reliable", False):
        return f"{UNRELIABLE} ({spread}x)"
    return f"{value:.2f}x ({spread})"


def latency_note(report: dict) -> str | None:
    """One sentence on how latency was measured and what the spread means, or None when not recorded."""
    how = report.get("latency_measurement") or {}
    if not how:
        return None
    share, others = how.get("own_cpu_share"), how.get("other_cores")
    cpu = (
        f"this process had {share:.0%} of its {how.get('threads')} thread(s), other processes kept "
        f"{others:.2f} of {how.get('cores')} cores busy"
        if is_number(share) and is_number(others)
        else "the machine's load was not measured"
    )
    note = (
        f"Latency: median over {how.get('rounds')} interleaved rounds of torch.utils.benchmark "
        f"blocked_autorange on {how.get('device')} with {how.get('threads')} thread(s), interquartile range in "
        f"brackets; speed-up = the median of the per-round ratios teacher / student, brackets their "
        f'quartiles, and "{UNRELIABLE}" where that range is wider than the speed-up\'s distance from 1, there '
        f"was one round only, or the CPU was busy ({cpu})."
    )
    return note + (" The CPU was busy: re-time on a quiet machine." if how.get("cpu_busy") else "")


def teacher_check_note(report: dict) -> str | None:
    """The sentence of the report's ``teacher_check`` (the teacher against the no-KD baseline on the
    validation split), or None when the report has none."""
    check = report.get("teacher_check") or {}
    return check.get("message") or None


def report_notes(report: dict) -> list[str]:
    """The sentences printed under the comparison table: the teacher check, then how latency was measured."""
    return [note for note in (teacher_check_note(report), latency_note(report)) if note]


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
    known = is_number(teacher.get("metric"))
    rows = [
        [
            f"`{teacher.get('name_or_path') or NOT_MEASURED}`",
            "teacher",
            format_metric(teacher.get("metric")),
            format_percent(1.0 if known else None),
            format_count(teacher.get("parameters")),
            format_bytes(teacher.get("size_bytes")),
            format_latency(teacher, 1),
            format_latency(teacher, 32),
            format_ratio(1.0 if is_number(teacher.get("latency_ms_b1")) else None),
            format_ratio(1.0 if is_number(teacher.get("latency_ms_b32")) else None),
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
                format_latency(student, 1),
                format_latency(student, 32),
                format_speedup(student, 1),
                format_speedup(student, 32),
            ]
        )
    return header, rows


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [line(row) for row in rows]
    return "\n".join(lines)


def format_interval(values: Any) -> str:
    """``[low, high]`` of a 95% interval, or "not measured"."""
    if not isinstance(values, list | tuple) or len(values) != 2 or not all(map(is_number, values)):
        return NOT_MEASURED
    return f"[{format_metric(values[0])}, {format_metric(values[1])}]"


def scorecard_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the multi-seed scorecard: each model's mean over seeds, its 95% interval and the
    value of every seed (the teacher, trained once, has one)."""
    scorecard = report.get("scorecard") or {}
    seeds = scorecard.get("seeds") or []
    header = [
        "Model",
        f"{scorecard.get('metric_name') or 'metric'}: mean over {len(seeds)} seed(s)",
        f"{100 * (scorecard.get('confidence_level') or 0.95):.0f}% interval",
        "Per seed",
    ]
    rows = []
    for name, model in (scorecard.get("models") or {}).items():
        per_seed = ", ".join(format_metric(v) for v in model.get("per_seed") or [])
        rows.append(
            [name, format_metric(model.get("mean")), format_interval(model.get("interval")), per_seed]
        )
    return header, rows


def verdict_lines(report: dict) -> list[str]:
    """One line per distilled student: "<name> vs <baseline>: <verdict>"."""
    return [
        f"{comparison.get('distilled')} vs {comparison.get('baseline')}: {comparison.get('verdict')}"
        for comparison in (report.get("scorecard") or {}).get("comparisons") or []
    ]


def scorecard_lines(student: dict, seed: int | None = None) -> list[str]:
    """What a model card says of the student's ``scorecard`` (Markdown list items): mean and interval over
    seeds, and the verdict against the same student trained without the teacher. Empty without a scorecard.

    With ``seed`` (the card of one seed's weights), ``student`` is that seed's entry
    (:func:`hf_distill.reports.seed_report.seed_report`): its own metric comes first, and the lines over
    seeds say they are the mean of the student's seeds, not this model's score."""
    scorecard = student.get("scorecard") if isinstance(student, dict) else None
    if not scorecard:
        return []
    seeds = scorecard.get("seeds") or []
    metric_name = scorecard.get("metric_name")
    lines = []
    if seed is not None:
        lines.append(
            f"- This model (seed {seed}): {metric_name} {format_metric(student.get('metric'))} on "
            f"{scorecard.get('test_examples')} test examples."
        )
    whose = " (the mean of this student's seeds, not this model's own score)" if seed is not None else ""
    lines.append(
        f"- {metric_name} over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}) on "
        f"{scorecard.get('test_examples')} test examples: mean {format_metric(scorecard.get('mean'))}, 95% "
        f"interval {format_interval(scorecard.get('interval'))}{whose}."
    )
    versus = scorecard.get("versus_no_kd")
    if versus:
        lines.append(f"- Against the same student trained without the teacher: {versus.get('verdict')}.")
    return lines


def seed_count(row: dict) -> int:
    """How many seeds' models a deployment row pools (its ``per_seed``; 1 in reports written before)."""
    return len(row.get("per_seed") or [None])


def deployment_note(report: dict) -> str:
    """How the deployment rows were made (the model card's words above their table): what was exported, what
    the difference is against, the timing's threads and, with several seeds, how the student's rows pool them."""
    deployment = report.get("deployment") or {}
    threads = (deployment.get("latency_measurement") or {}).get("threads")
    seeds = deployment.get("seeds") or []
    pooled = (
        f" The student's rows pool its {len(seeds)} seeds ({', '.join(map(str, seeds))}): every seed's student "
        "exported and scored, the metric their mean, the difference paired by seed and example; latency and size "
        "are the first seed's (every seed's graph has the same shape)."
        if len(seeds) > 1
        else ""
    )
    return (
        "The student and its teacher exported to ONNX (`onnx/model.onnx`; int8: `onnx/model_quantized.onnx`) "
        "and scored with ONNX Runtime on the same test split; the difference is against the PyTorch model "
        f"each came from, paired by example. Latency side by side, {threads} thread(s) for torch and ONNX "
        f"Runtime alike; speed-up against the PyTorch teacher.{pooled}"
    )


def deployment_table(report: dict, model: str | None = None) -> tuple[list[str], list[list[str]]] | None:
    """The report's deployment rows (``--export onnx``) as a table, those of ``model`` and the teacher when
    given; a student pooled over several seeds is named with their count. None when the run exported nothing."""
    rows = (report.get("deployment") or {}).get("rows") or []
    if model is not None:
        rows = [r for r in rows if r.get("model") in (model, "teacher")]
    if not rows:
        return None
    header = [
        "model",
        "runtime",
        "precision",
        str(report.get("metric_name", "metric")),
        "vs PyTorch [95% CI]",
        "latency b1 (ms)",
        "latency b32 (ms)",
        "speed-up b1 / b32",
        "size",
    ]
    body = [
        [
            f"{r['model']} ({seed_count(r)} seeds)" if seed_count(r) > 1 else r["model"],
            r["runtime"],
            r["precision"],
            f"{format_metric(r['metric'])} {format_interval(r.get('interval'))}",
            f"{format_metric((r.get('versus_pytorch') or {}).get('difference'))} "
            f"{format_interval((r.get('versus_pytorch') or {}).get('interval'))}",
            format_latency(r, 1),
            format_latency(r, 32),
            f"{format_ratio(r.get('speedup_b1'))} / {format_ratio(r.get('speedup_b32'))}",
            format_bytes(r.get("size_bytes")),
        ]
        for r in rows
    ]
    return header, body


def deployment_line(report: dict) -> str | None:
    """The shipped student in one line (``make demo`` prints it): the first distilled student's ONNX Runtime row
    at the run's quantization (fp32 when it did not quantize): runtime and precision, the metric with its
    interval, the paired difference against the PyTorch model it came from, the speed-up over the PyTorch teacher
    at batch 1 and 32 (flagged when unreliable) and the size; with several seeds the metric is their mean and
    the difference pooled over them ("over N seeds"), latency and size the first seed's. None when the run
    exported nothing."""
    deployment = report.get("deployment") or {}
    rows = [
        r
        for r in deployment.get("rows") or []
        if r.get("model") != "teacher" and r.get("runtime") != "pytorch"
    ]
    if not rows:
        return None
    precision = deployment.get("quantize") or "fp32"
    row = next(
        (r for r in rows if r["model"] == rows[0]["model"] and r.get("precision") == precision), rows[0]
    )
    versus = row.get("versus_pytorch") or {}
    seeds = seed_count(row)
    pooled, models = (f" over {seeds} seeds", "models") if seeds > 1 else ("", "model")
    return (
        f"{row['model']} on {row['runtime']} {row['precision']}: {report.get('metric_name', 'metric')} "
        f"{format_metric(row.get('metric'))} {format_interval(row.get('interval'))}{pooled}, "
        f"{format_metric(versus.get('difference'))} {format_interval(versus.get('interval'))} vs its PyTorch "
        f"{models}; {format_speedup(row, 1)} faster than the PyTorch teacher at batch 1, {format_speedup(row, 32)} "
        f"at batch 32; {format_bytes(row.get('size_bytes'))}"
    )
