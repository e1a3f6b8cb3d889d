"""Smoke test of ``benchmarks/gpu_check.py``'s plumbing: its tiny CPU mode end to end (the JSON it writes), and
that its equality checks compare (a loss or gradient off by a known amount fails, with that amount reported).
The numbers of the real check come from a GPU run, never from here."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from tests.helpers.paths import BENCHMARKS

sys.path.insert(0, str(BENCHMARKS))
import gpu_check  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpu_check") / "result.json"
    returned = gpu_check.main(["--device", "cpu", "--tiny", "--rounds", "1", "--output", str(path)])
    return returned, json.loads(path.read_text())


def test_tiny_cpu_mode_writes_every_part(tiny_run):
    returned, written = tiny_run
    assert written == json.loads(json.dumps(returned))
    assert {
        "device",
        "tiny",
        "machine",
        "loadavg",
        "equality",
        "memory_latency",
        "step_ratio",
        "seconds",
    } <= set(written)
    assert written["device"] == "cpu" and written["tiny"]
    for dtype in ("float32", "bfloat16"):
        for check in ("fused_vs_plain", "fused_vs_float64", "plain_vs_float64"):
            entry = written["equality"][dtype][check]
            assert set(entry) == {"loss", "loss_rel_diff", "grad_rel_diff", "finite", "passed"}
            assert set(entry["grad_rel_diff"]) == {"hidden", "weight"}
        # Two computations that round differently: the gradients differ, and the check sees it.
        assert 0 < max(written["equality"][dtype]["fused_vs_plain"]["grad_rel_diff"].values())
    assert written["equality"]["passed"], written["equality"]
    assert written["equality"]["tolerances"]["float32"] == {"loss_rel": 1e-5, "grad_rel": 1e-4}
    memory = written["memory_latency"]
    assert memory["out_of_memory"] == []
    assert set(memory["peak_mib"]) == {
        f"{d} {v}" for d in ("float32", "bfloat16") for v in ("plain", "fused")
    }
    for dtype in ("float32", "bfloat16"):
        assert set(memory["latency"][dtype]) == {"plain", "fused"}
        assert all(t["median_ms"] > 0 for t in memory["latency"][dtype].values())
    step = written["step_ratio"]
    assert step["fused_over_bound"] == pytest.approx(
        step["latency"]["fused"]["median_ms"] / step["latency"]["bound"]["median_ms"]
    )
    assert set(step["cpu_share"]) == {"bound", "fused"}


def test_compare_reports_the_difference_it_was_given():
    grad = torch.tensor([[1.0, -2.0], [0.5, 4.0]], dtype=torch.float64)
    want = (2.0, grad, grad)
    same = gpu_check.compare((2.0, grad.clone(), grad.clone()), want, (1e-5, 1e-4))
    assert same["passed"] and same["loss_rel_diff"] == 0
    # Loss 2.0 -> 2.01: relative 5e-3. Weight gradient off by 0.04 where max |g| is 4: relative 1e-2.
    off = grad.clone()
    off[0, 0] += 0.04
    result = gpu_check.compare((2.01, grad, off), want, (1e-2, 2e-2))
    assert result["loss_rel_diff"] == pytest.approx(5e-3)
    assert result["grad_rel_diff"] == {"hidden": 0.0, "weight": pytest.approx(1e-2)}
    assert result["passed"]
    assert not gpu_check.compare((2.01, grad, off), want, (1e-3, 2e-2))["passed"], "loss beyond tolerance"
    assert not gpu_check.compare((2.01, grad, off), want, (1e-2, 5e-3))["passed"], "gradient beyond tolerance"
    broken = grad.clone()
    broken[1, 1] = float("nan")
    nan = gpu_check.compare((2.0, broken, grad), want, (1e-2, 2e-2))
    assert not nan["finite"] and not nan["passed"], "a NaN gradient never passes"


def test_equality_fails_when_the_fused_loss_is_off(monkeypatch):
    real = gpu_check.loss_from_hidden

    def fused_one_percent_high(variant, *args):
        loss = real(variant, *args)
        return loss * 1.01 if variant == "fused" else loss

    monkeypatch.setattr(gpu_check, "loss_from_hidden", fused_one_percent_high)
    result = gpu_check.equality(gpu_check.TINY["equality"], torch.device("cpu"))
    assert not result["passed"]
    fp32 = result["float32"]["fused_vs_plain"]
    assert fp32["loss_rel_diff"] == pytest.approx(1e-2, rel=1e-3)
    # The scaled loss scales its gradients too: 1% off, beyond float32's tolerance.
    assert min(fp32["grad_rel_diff"].values()) > 5e-3
    assert result["float32"]["plain_vs_float64"]["passed"], "the plain path is untouched"


def test_a_variant_out_of_memory_is_recorded_not_fatal(monkeypatch):
    real = gpu_check.loss_step

    def plain_runs_out(variant, p):
        if variant != "plain":
            return real(variant, p)

        def step():
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        return step

    monkeypatch.setattr(gpu_check, "loss_step", plain_runs_out)
    result = gpu_check.memory_and_latency(gpu_check.TINY["memory"], torch.device("cpu"), rounds=1)
    assert result["out_of_memory"] == ["float32 plain", "bfloat16 plain"]
    assert result["peak_mib"]["float32 plain"] is None and result["peak_mib"]["float32 fused"] is not None
    assert set(result["latency"]["float32"]) == {"fused"} and result["fused_over_plain_peak"] == {}
