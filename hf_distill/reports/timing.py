"""Timing models side by side, and what the timings say: medians, spreads, speed-ups and whether to trust them.

A latency printed in a report (or a model card) is one number standing for many calls on a machine that does
other work. Two models of the same architecture timed one after the other on a shared machine can differ
threefold. So here:

* every timed sample is ``torch.utils.benchmark.Timer(...).blocked_autorange()``: blocks of calls whose
  per-call median is kept, with the accelerator synchronised around each block (the Timer's default timer
  calls ``torch.accelerator.synchronize()`` when one is present) and ``torch.set_num_threads`` pinned to
  the recorded thread count (the Timer sets it for the block and restores it after);
* models are timed in rounds, one sample per model and batch size per round, the order of the models
  rotated every round, after one untimed warm-up call each: a slow patch of the machine then falls on all
  models alike rather than on whichever ran last;
* each model's latency is the median over rounds with its quartiles, and a speed-up is teacher median /
  student median with the quartiles of the round-level ratios (teacher sample / student sample of the same
  round) as its spread;
* the share of the machine this process had while timing is recorded (process CPU time / wall time /
  threads, and the cores other processes kept busy, from ``/proc/stat``).

A speed-up is **unreliable** (:func:`speedup_stats`) when the middle half of its round-level ratios is wider
than the effect measured (``q75 - q25 > |speed-up - 1|``: the spread could turn the speed-up into none), when
there was only one round (no spread to judge), or when the CPU was busy (other processes kept more cores busy
than the measurement left free, :func:`cpu_was_busy`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

# Cores other processes may keep busy, beyond those the measurement leaves free, for it to count as quiet.
QUIET_CORES = 0.25
# Seconds each blocked_autorange sample runs at least (its blocks of calls add up to this).
MIN_RUN_TIME_S = 0.05


def busy_cpu_seconds() -> float:
    """CPU seconds the whole machine spent busy since boot, all cores together (Linux ``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class CpuMeter:
    """Measures, over a ``with`` block, this process's CPU share (CPU time / wall / ``threads``) and the
    cores other processes kept busy meanwhile (machine busy time from ``/proc/stat`` minus ours, / wall)."""

    def __init__(self, threads: int):
        self.threads = threads
        self.own_share: float | None = None
        self.other_cores: float | None = None

    def __enter__(self) -> CpuMeter:
        self._busy = _busy_or_none()
        self._cpu, self._wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        wall = max(time.perf_counter() - self._wall, 1e-9)
        own_cores = (time.process_time() - self._cpu) / wall
        self.own_share = own_cores / self.threads
        busy = _busy_or_none()
        if busy is not None and self._busy is not None:
            self.other_cores = max((busy - self._busy) / wall - own_cores, 0.0)


def _busy_or_none() -> float | None:
    try:
        return busy_cpu_seconds()
    except OSError:  # no /proc/stat: the other processes' share is not known
        return None


def cpu_was_busy(other_cores: float | None, threads: int, cores: int) -> bool:
    """True when other processes kept more cores busy than the measurement's ``threads`` left free (with
    :data:`QUIET_CORES` of slack): then the timed threads waited for a core, and timings are the machine's
    load as much as the model's. Unknown (None) counts as not busy; the report then says it was not measured."""
    if other_cores is None:
        return False
    return other_cores > max(cores - threads, 0) + QUIET_CORES


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """``(q25, median, q75)`` with linear interpolation (numpy's default), for one value or more."""
    q25, median, q75 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return float(q25), float(median), float(q75)


def latency_stats(samples_ms: list[float], threads: int) -> dict[str, Any]:
    """A model's latency at one batch size from its per-round samples (ms): median, quartiles, IQR."""
    if not samples_ms or not all(np.isfinite(samples_ms)):
        raise ValueError(
            f"latency samples {samples_ms!r} are empty or not finite: every round must time the model once; "
            "check that the timer returned a number."
        )
    q25, median, q75 = quartiles(samples_ms)
    return {
        "median_ms": median,
        "q25_ms": q25,
        "q75_ms": q75,
        "iqr_ms": q75 - q25,
        "rounds": len(samples_ms),
        "threads": threads,
        "samples_ms": list(samples_ms),
    }


def speedup_stats(teacher_ms: list[float], student_ms: list[float], *, busy: bool) -> dict[str, Any]:
    """Speed-up of a student over the teacher from the two models' samples of the same rounds (ms).

    ``median``, ``q25`` and ``q75`` are the quartiles of the round-level ratios ``teacher[r] / student[r]``
    (the two models timed in the same round share its machine state), so the speed-up always sits inside the
    range printed beside it; the ratio of the two models' own medians can fall outside it. ``reliable`` is
    False, with the reason in ``why``, when there was one round, when ``q75 - q25 > |median - 1|`` (the spread
    is wider than the effect), or when ``busy``.
    """
    if len(teacher_ms) != len(student_ms) or not teacher_ms:
        raise ValueError(
            f"the teacher has {len(teacher_ms)} latency samples and the student {len(student_ms)}: a speed-up "
            "pairs the samples of the same round, so both need one per round (and at least one)."
        )
    if min(student_ms) <= 0 or min(teacher_ms) <= 0:
        raise ValueError(f"latency samples must be positive, got {teacher_ms} and {student_ms}.")
    ratios = [t / s for t, s in zip(teacher_ms, student_ms)]
    q25, median, q75 = quartiles(ratios)
    spread, effect = q75 - q25, abs(median - 1.0)
    why = []
    if len(ratios) < 2:
        why.append("one round only: no spread to judge the speed-up by; use latency_rounds >= 5")
    elif spread > effect:
        why.append(
            f"the round-level ratios' interquartile range {q25:.2f}-{q75:.2f} ({spread:.2f}) is wider than "
            f"the effect |{median:.2f} - 1| = {effect:.2f}"
        )
    if busy:
        why.append("other processes kept the CPU busy while timing; re-run on a quiet machine")
    return {
        "median": median,
        "q25": q25,
        "q75": q75,
        "ratios": ratios,
        "reliable": not why,
        "why": "; ".join(why),
    }


def default_timer(stmt: str, globals: dict[str, Any], num_threads: int) -> Any:
    """``torch.utils.benchmark.Timer``: what :func:`time_models` times with unless a test gives another."""
    from torch.utils.benchmark import Timer

    return Timer(stmt=stmt, globals=globals, num_threads=num_threads)


@dataclass
class Timings:
    """What :func:`time_models` measured: per model and batch size one sample (ms) per round, the order the
    samples were taken in, and the machine's state meanwhile."""

    samples_ms: dict[str, dict[int, list[float]]]
    threads: int
    rounds: int
    device: str
    cores: int
    own_cpu_share: float | None = None
    other_cores: float | None = None
    order: list[tuple[str, int]] = field(default_factory=list)
    per: str = "forward"  # what one sample's milliseconds are for: a forward, or a generated token

    def medians(self) -> dict[str, dict[int, float]]:
        """The median sample (ms) per model and batch size: ``{model name: {batch size: ms}}``."""
        return {
            name: {size: latency_stats(samples, self.threads)["median_ms"] for size, samples in sizes.items()}
            for name, sizes in self.samples_ms.items()
        }

    @property
    def busy(self) -> bool:
        return cpu_was_busy(self.other_cores, self.threads, self.cores)

    def measurement(self) -> dict[str, Any]:
        """How the timings were taken: the report's ``latency_measurement``."""
        return {
            "timer": "torch.utils.benchmark.Timer.blocked_autorange",
            "rounds": self.rounds,
            "threads": self.threads,
            "warmup_calls": 1,
            "device": self.device,
            "cores": self.cores,
            "own_cpu_share": self.own_cpu_share,
            "other_cores": self.other_cores,
            "cpu_busy": self.busy,
            "per": self.per,
        }


@torch.inference_mode()
def time_models(
    models: Mapping[str, nn.Module],
    batches: Mapping[int, Mapping[str, torch.Tensor]],
    rounds: int = 5,
    *,
    threads: int | None = None,
    min_run_time: float = MIN_RUN_TIME_S,
    timer: Callable[[str, dict[str, Any], int], Any] = default_timer,
    call: Callable[[nn.Module, Mapping[str, torch.Tensor]], Any] | None = None,
) -> Timings:
    """Forward latency of every model at every batch size, interleaved (see the module docstring).

    ``batches``: ``{batch size: model inputs}``, moved to each model's device. ``threads``: the
    ``torch.set_num_threads`` value pinned while timing (default: the current one), restored afterwards.
    ``timer(stmt, globals, num_threads)`` builds the timer (a ``torch.utils.benchmark.Timer`` by default).
    ``call(model, inputs)``: what one timed call does instead of the forward ``model(**inputs)`` (a
    ``generate``, :mod:`hf_distill.reports.generation_timing`); its warm-up is a call too.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds} must be >= 1: every model needs one timed sample.")
    threads = threads or torch.get_num_threads()
    names = list(models)
    samples: dict[str, dict[int, list[float]]] = {name: {size: [] for size in batches} for name in names}
    inputs = {
        (name, size): {k: v.to(_device(model)) for k, v in batch.items()}
        for name, model in models.items()
        for size, batch in batches.items()
    }
    for model in models.values():
        model.eval()
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    order: list[tuple[str, int]] = []
    stmt = "model(**inputs)" if call is None else "call(model, inputs)"
    try:
        for (name, _), batch in inputs.items():  # warm-up: allocation, kernel choice, lazy init
            if call is None:
                models[name](**batch)
            else:
                call(models[name], batch)
        with CpuMeter(threads) as meter:
            for r in range(rounds):
                rotated = names[r % len(names) :] + names[: r % len(names)]
                for size in batches:
                    for name in rotated:
                        globals_ = {"model": models[name], "inputs": inputs[(name, size)], "call": call}
                        measured = timer(stmt, globals_, threads).blocked_autorange(min_run_time=min_run_time)
                        samples[name][size].append(float(measured.median) * 1000.0)
                        order.append((name, size))
    finally:
        torch.set_num_threads(previous)
    device = str(_device(next(iter(models.values())))) if models else "cpu"
    return Timings(
        samples, threads, rounds, device, available_cores(), meter.own_share, meter.other_cores, order
    )


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")
