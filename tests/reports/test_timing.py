"""Latency you can trust: the statistics and the unreliable flag on fixed timings, the interleaved order of the
measurement (a fake timer records it), the pinned threads, and how the report shows spread and flag.
No test asserts on a measured time."""

from __future__ import annotations

import statistics
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hf_distill.recipes.latency import latency_entries, measure_latency
from hf_distill.recipes.report_json import with_latency
from hf_distill.reports.format import comparison_table, format_latency, format_speedup, latency_note
from hf_distill.reports.timing import (
    QUIET_CORES,
    Timings,
    cpu_was_busy,
    latency_stats,
    speedup_stats,
    time_models,
)


def reference_quartiles(values):
    """Quartiles as statistics.quantiles computes them ("inclusive" = linear interpolation between points)."""
    q25, median, q75 = statistics.quantiles(values, n=4, method="inclusive")
    return q25, median, q75


# ---- statistics on fixed numbers --------------------------------------------------------------------


def test_latency_stats_median_and_interquartile_range():
    stats = latency_stats([12.0, 10.0, 40.0, 11.0, 13.0], threads=2)
    # Sorted 10, 11, 12, 13, 40: median 12, quartiles at positions 1 and 3 (11 and 13), IQR 2.
    assert (stats["median_ms"], stats["q25_ms"], stats["q75_ms"], stats["iqr_ms"]) == (12.0, 11.0, 13.0, 2.0)
    assert stats["rounds"] == 5 and stats["threads"] == 2
    with pytest.raises(ValueError, match="empty or not finite: every round must time the model once"):
        latency_stats([1.0, float("nan")], threads=1)


def test_a_clear_speedup_is_reliable():
    stats = speedup_stats([10.0, 10.4, 9.8, 10.2, 10.0], [5.0, 5.1, 5.0, 4.9, 5.0], busy=False)
    # Hand: the ratios 2.0, 2.039, 1.96, 2.082, 2.0 have the median 2.0.
    assert stats["median"] == pytest.approx(2.0)
    ratios = [10.0 / 5.0, 10.4 / 5.1, 9.8 / 5.0, 10.2 / 4.9, 10.0 / 5.0]
    q25, _, q75 = reference_quartiles(ratios)
    assert (stats["q25"], stats["q75"]) == (pytest.approx(q25), pytest.approx(q75))
    assert stats["reliable"] and stats["why"] == ""


def test_a_spread_wider_than_the_effect_is_unreliable():
    teacher, student = [10.0, 10.0, 10.0, 10.0], [8.0, 12.0, 6.0, 9.0]
    stats = speedup_stats(teacher, student, busy=False)
    # Hand: ratios 1.25, 0.833, 1.667, 1.111; sorted quartiles 1.0417 and 1.3542 (spread 0.3125); speed-up
    # their median (1.111 + 1.25) / 2 = 1.1806, effect 0.1806 < 0.3125: unreliable.
    q25, _, q75 = reference_quartiles([t / s for t, s in zip(teacher, student)])
    assert stats["q25"] == pytest.approx(q25) == pytest.approx(1.0416667)
    assert stats["q75"] == pytest.approx(q75) == pytest.approx(1.3541667)
    assert stats["median"] == pytest.approx(1.1805556)
    assert not stats["reliable"] and "wider than the effect" in stats["why"]


def test_the_speedup_sits_inside_the_quartiles_printed_beside_it():
    """A demo run's batch-1 samples (ms): the teacher's median over the student's is 9.66 / 4.31 = 2.24, outside
    the per-round ratios' quartiles 2.06-2.11; the speed-up is the ratios' median, 2.074, inside them."""
    teacher, student = [10.06, 8.85, 9.66, 8.80, 9.88], [4.77, 4.31, 4.98, 4.24, 4.25]
    stats = speedup_stats(teacher, student, busy=False)
    ratios = sorted(t / s for t, s in zip(teacher, student))
    assert stats["median"] == pytest.approx(ratios[2]) == pytest.approx(8.80 / 4.24)
    assert stats["q25"] <= stats["median"] <= stats["q75"]


def test_identical_models_give_a_reliable_ratio_near_one_only_when_the_spread_is_small():
    # Two copies of one model: the effect is ~0, so any spread at all makes the speed-up unreliable; the
    # report then prints "unreliable", never a speed-up of 1.3x for a twin.
    noisy = speedup_stats([10.0, 13.0, 10.0, 12.0, 10.0], [10.0, 10.0, 13.0, 10.0, 12.0], busy=False)
    assert not noisy["reliable"]
    steady = speedup_stats([10.0] * 5, [10.0] * 5, busy=False)
    assert steady["median"] == 1.0 and steady["reliable"]  # no spread: the "no speed-up" is itself sure


def test_a_busy_cpu_or_a_single_round_is_unreliable():
    busy = speedup_stats([10.0, 10.0, 10.0], [2.0, 2.0, 2.0], busy=True)
    assert busy["median"] == pytest.approx(5.0) and not busy["reliable"] and "busy" in busy["why"]
    single = speedup_stats([10.0], [2.0], busy=False)
    assert not single["reliable"] and "one round only" in single["why"]
    with pytest.raises(ValueError, match="pairs the samples of the same round"):
        speedup_stats([10.0, 10.0], [2.0], busy=False)
    with pytest.raises(ValueError, match="must be positive"):
        speedup_stats([10.0], [0.0], busy=False)


def test_cpu_busy_when_other_processes_take_the_cores_the_threads_need():
    # 2 cores, 2 threads: any other load above the slack competes with the timed threads.
    assert cpu_was_busy(QUIET_CORES + 0.01, threads=2, cores=2)
    assert not cpu_was_busy(QUIET_CORES, threads=2, cores=2)
    # 1 of 2 cores pinned: one core is free for others.
    assert not cpu_was_busy(1.0, threads=1, cores=2) and cpu_was_busy(1.3, threads=1, cores=2)
    assert not cpu_was_busy(None, threads=2, cores=2)  # not measured: the report says so


# ---- the measurement's order and threads --------------------------------------------------------------


class _Named(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        return input_ids


class _FakeTimer:
    """Stands in for torch.utils.benchmark.Timer: records which model and batch it timed, and the thread
    count in force, and returns a per-call median that depends on the model and batch size."""

    log: list = []

    def __init__(self, stmt, globals, num_threads):
        assert stmt == "model(**inputs)"
        self.model, self.inputs, self.num_threads = globals["model"], globals["inputs"], num_threads

    def blocked_autorange(self, min_run_time):
        self.log.append((self.model.name, self.inputs["input_ids"].shape[0], torch.get_num_threads()))
        seconds = {"teacher": 0.010, "a": 0.004, "b": 0.002}[self.model.name] * self.inputs[
            "input_ids"
        ].shape[0]
        return SimpleNamespace(median=seconds)


def _batches():
    return {
        1: {"input_ids": torch.zeros(1, 3, dtype=torch.long)},
        4: {"input_ids": torch.zeros(4, 3, dtype=torch.long)},
    }


def test_models_are_interleaved_in_rotated_rounds_with_threads_pinned_and_restored():
    _FakeTimer.log = []
    models = {name: _Named(name) for name in ("teacher", "a", "b")}
    before = torch.get_num_threads()
    pinned = 1 if before != 1 else 2
    timings = time_models(models, _batches(), rounds=3, threads=pinned, timer=_FakeTimer)
    assert torch.get_num_threads() == before, "threads restored after the measurement"
    assert {threads for _, _, threads in _FakeTimer.log} == {pinned}
    order = [(name, size) for name, size, _ in _FakeTimer.log]
    assert order == timings.order
    # Each round times every model once per batch size; the order of the models rotates every round.
    assert order == [
        *[("teacher", 1), ("a", 1), ("b", 1), ("teacher", 4), ("a", 4), ("b", 4)],
        *[("a", 1), ("b", 1), ("teacher", 1), ("a", 4), ("b", 4), ("teacher", 4)],
        *[("b", 1), ("teacher", 1), ("a", 1), ("b", 4), ("teacher", 4), ("a", 4)],
    ]
    assert timings.samples_ms["teacher"][4] == pytest.approx([40.0] * 3)
    assert timings.samples_ms["b"][1] == pytest.approx([2.0] * 3)
    assert timings.threads == pinned and timings.rounds == 3
    how = timings.measurement()
    assert (
        how["threads"] == pinned and how["rounds"] == 3 and how["timer"].startswith("torch.utils.benchmark")
    )
    with pytest.raises(ValueError, match="rounds=0 must be >= 1"):
        time_models(models, _batches(), rounds=0, timer=_FakeTimer)


def test_real_timer_runs_and_medians_come_back():
    # torch.utils.benchmark for real, briefly: only that it yields a positive sample per round and model.
    models = {"teacher": nn.Linear(3, 3), "student": nn.Linear(3, 1)}
    batches = {2: {"input": torch.zeros(2, 3)}}
    timings = time_models(models, batches, rounds=2, min_run_time=0.001)
    assert all(len(s[2]) == 2 and min(s[2]) > 0 for s in timings.samples_ms.values())
    medians = measure_latency(models, batches, rounds=1, min_run_time=0.001)
    assert set(medians) == {"teacher", "student"} and medians["student"][2] > 0


# ---- report entries and how they read -----------------------------------------------------------------


def _timings(busy_cores: float = 0.0) -> Timings:
    samples = {
        "teacher": {1: [10.0, 10.2, 9.9, 10.1, 10.0], 32: [100.0, 101.0, 99.0, 100.0, 100.0]},
        "twin": {1: [10.0, 13.0, 7.0, 12.0, 9.0], 32: [50.0, 50.0, 51.0, 49.0, 50.0]},
    }
    return Timings(
        samples, threads=2, rounds=5, device="cpu", cores=2, own_cpu_share=0.9, other_cores=busy_cores
    )


def test_report_entries_carry_median_spread_and_flag():
    entries = latency_entries(_timings(), reference="teacher")
    assert "speedup" not in entries["teacher"]
    teacher, twin = entries["teacher"], entries["twin"]
    assert teacher["latency_ms_b1"] == 10.0 and teacher["latency"]["b1"]["iqr_ms"] == pytest.approx(
        0.1
    )  # 9.9 10 10 10.1 10.2
    assert twin["latency"]["b32"]["rounds"] == 5 and twin["latency"]["b32"]["threads"] == 2
    assert not twin["speedup"]["b1"]["reliable"]  # 10 / 10: a spread around no speed-up at all
    assert twin["speedup"]["b32"]["reliable"] and twin["speedup"]["b32"]["median"] == pytest.approx(2.0)
    busy = latency_entries(_timings(busy_cores=1.5), reference="teacher")["twin"]
    assert not busy["speedup"]["b32"]["reliable"] and "busy" in busy["speedup"]["b32"]["why"]
    with pytest.raises(ValueError, match=r"not measured at batch size\(s\) \[32\]"):
        with_latency({}, {"latency_ms_b1": 1.0})


def test_table_prints_unreliable_instead_of_a_speedup_and_shows_the_spread():
    timings = _timings()
    entries = latency_entries(timings, reference="teacher")
    twin = {**entries["twin"], "name": "twin", "kind": "distilled", "speedup_b1": 1.0, "speedup_b32": 2.0}
    report = {
        "teacher": {"name_or_path": "t", **entries["teacher"]},
        "students": [twin],
        "latency_measurement": timings.measurement(),
    }
    assert format_speedup(twin, 1).startswith("unreliable (") and "1.00x" not in format_speedup(twin, 1)
    assert format_speedup(twin, 32).startswith("2.00x (")
    assert format_latency(report["teacher"], 1) == "10.00 (10.00-10.10)"
    _, rows = comparison_table(report)
    assert rows[1][-2].startswith("unreliable") and rows[1][-1].startswith("2.00x")
    note = latency_note(report)
    assert "5 interleaved rounds" in note and "2 thread(s)" in note and "90%" in note
    # Old reports without the spread still read as before.
    assert format_speedup({"speedup_b1": 3.0}, 1) == "3.00x"


def test_the_default_timer_synchronises_the_accelerator(monkeypatch):
    # On a GPU the kernels run asynchronously: torch.utils.benchmark's default timer calls
    # torch.accelerator.synchronize() before reading the clock. Pretend an accelerator is there and count.
    synced = []
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: True)
    monkeypatch.setattr(torch.accelerator, "synchronize", lambda *a: synced.append(1))
    time_models({"m": nn.Linear(2, 2)}, {1: {"input": torch.zeros(1, 2)}}, rounds=1, min_run_time=0.001)
    assert len(synced) >= 2, "the clock is read after a synchronisation, before and after each block"
