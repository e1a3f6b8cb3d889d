"""The budget search's frontier figure: every candidate's validation metric against its latency, the budget's
lines, and the winner marked (``budget_frontier.png`` beside ``report.json``).

Drawn from the report's ``budget`` entry (:class:`hf_distill.students.budget.BudgetResult` ``.to_dict()``), so
it redraws from a finished run without the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hf_distill.reports.plots import new_figure

FRONTIER_FILENAME = "budget_frontier.png"
_STYLE = {  # status: (marker, colour, label)
    "trained": ("o", "#1f77b4", "short run, finished"),
    "pruned": ("x", "#d62728", "short run, pruned early"),
}


def draw_budget_frontier(budget: dict[str, Any], metric_name: str, teacher_metric: float | None = None):
    """The figure: one point per trained or pruned candidate at (latency, last validation metric), over-budget
    candidates as ticks on the latency axis (never trained, so no metric), the latency budget (in ms, or
    ``min_speedup`` times the teacher's speed) and the teacher's latency as vertical lines, the retention
    target (and the teacher's metric) as horizontal ones, and the winner as a star. The latency axis says what
    a millisecond is for (per forward, or per generated token for a causal LM)."""
    figure = new_figure(7.0, 4.5)
    axis = figure.add_subplot(1, 1, 1)
    candidates, limits = budget["candidates"], budget["budget"]
    for status, (marker, colour, label) in _STYLE.items():
        points = [c for c in candidates if c["status"] == status and c["metric"] is not None]
        if points:
            axis.scatter([c["latency_ms"] for c in points], [c["metric"] for c in points], marker=marker,
                         color=colour, label=label, zorder=3)  # fmt: skip
            for c in points:
                axis.annotate(c["name"], (c["latency_ms"], c["metric"]), textcoords="offset points",
                              xytext=(4, 4), fontsize=8)  # fmt: skip
    over = [c for c in candidates if c["status"] in ("over_budget", "over_params")]
    if over:
        axis.plot([c["latency_ms"] for c in over], [0] * len(over), "|", color="#7f7f7f", markersize=14,
                  transform=axis.get_xaxis_transform(), label="over budget, not trained")  # fmt: skip
    limit = limits.get("latency_limit_ms", limits.get("max_latency_ms"))
    if limit is not None:
        label = f"latency budget {limit:.3g} ms"
        if limits.get("min_speedup") is not None:
            label = f"{limits['min_speedup']:g}x the teacher's speed: {limit:.3g} ms"
        axis.axvline(limit, color="#2ca02c", linestyle="--", label=label)
    teacher_ms = limits.get("teacher_latency_ms")
    if teacher_ms is not None:
        axis.axvline(teacher_ms, color="#555555", linestyle="-.", label=f"teacher {teacher_ms:.3g} ms")
    reference = limits.get("reference_metric", teacher_metric)
    if reference is not None:
        axis.axhline(reference, color="#555555", linestyle=":", label="teacher (validation)")
        if limits.get("min_retention") is not None:
            target = reference * limits["min_retention"]
            axis.axhline(
                target, color="#9467bd", linestyle="--", label=f"{limits['min_retention']:.0%} retention"
            )
    winner = next(c for c in candidates if c["name"] == budget["winner"])
    if winner["metric"] is not None:
        axis.scatter([winner["latency_ms"]], [winner["metric"]], marker="*", s=260, color="#ff7f0e",
                     edgecolors="black", zorder=4, label=f"winner: {winner['name']}")  # fmt: skip
    latencies = [ms for ms in [c["latency_ms"] for c in candidates] + [limit, teacher_ms] if ms]
    if max(latencies) / min(latencies) > 20:  # a far budget or teacher line would crush the points
        axis.set_xscale("log")
    axis.set_xlabel(f"latency: ms {limits.get('latency', '')}".strip())
    axis.set_ylabel(f"validation {metric_name} after the short run")
    axis.set_title("Candidates: quality against latency")
    axis.legend(fontsize=8, loc="best")
    return figure


def plot_budget_frontier(budget: dict[str, Any], metric_name: str, path: Path) -> Path:
    """Draws :func:`draw_budget_frontier` and saves it to ``path``; returns ``path``."""
    draw_budget_frontier(budget, metric_name).savefig(path)
    return path
