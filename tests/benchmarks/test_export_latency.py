"""Smoke test of ``benchmarks/export_latency.py``'s plumbing: its ``--quick`` mode end to end (the JSON's shape,
the ratios computed from the medians it records) and how ``--run`` finds a run's models. Its timings are never
asserted on: they come from a quiet machine, never from here."""

from __future__ import annotations

import json
import statistics
import sys

import pytest

from tests.helpers.paths import BENCHMARKS

pytest.importorskip("onnxruntime")

sys.path.insert(0, str(BENCHMARKS))
import export_latency  # noqa: E402

from hf_distill.reports.timing import QUIET_CORES  # noqa: E402

VARIANTS = [
    "pytorch teacher",
    "pytorch student",
    "onnx fp32 student",
    "onnx int8-dynamic student",
    "onnx int8-weights student",
]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("export_latency") / "result.json"
    returned = export_latency.main(["--quick", "--output", str(path)])
    return returned, json.loads(path.read_text())


def test_quick_mode_writes_every_variant_at_both_batch_sizes(quick):
    returned, written = quick
    assert written == json.loads(json.dumps(returned))
    meta = written["meta"]
    assert meta["quick"] and meta["threads"] == meta["onnxruntime_intra_op_threads"] == 2
    assert meta["tokens"] == 64 and meta["batch_sizes"] == [1, 32]
    assert set(written["batches"]) == {"b1", "b32"}
    for rows in written["batches"].values():
        assert [row["variant"] for row in rows] == VARIANTS
        for row in rows:
            # Every round's sample is kept with the CPU share it ran under.
            assert len(row["runs"]) == len(row["own_cores"]) == len(row["other_cores"]) == meta["rounds"] == 2
            assert 0 <= row["quiet_runs"] <= meta["rounds"]
    assert set(written["size_bytes"]) == set(VARIANTS) and min(written["size_bytes"].values()) > 0
    agreement = written["argmax_agreement_with_pytorch_student"]
    assert set(agreement) == set(VARIANTS[2:]) and all(0.0 <= share <= 1.0 for share in agreement.values())
    assert agreement["onnx fp32 student"] >= 0.99  # the fp32 graph reproduces the student
    assert written["export_check_max_abs_difference"] < 1e-4
    assert set(written["machine"]) >= {"python", "torch", "threads"}


def test_ratios_are_computed_from_the_recorded_medians(quick):
    _, written = quick
    for rows in written["batches"].values():
        medians = {}
        for row in rows:
            quiet = [t for t, o in zip(row["runs"], row["other_cores"]) if o <= QUIET_CORES] or row["runs"]
            medians[row["variant"]] = statistics.median(quiet)
            assert row["median_s"] == pytest.approx(medians[row["variant"]])
            assert row["median_ms_per_call"] == pytest.approx(row["median_s"] / row["calls_per_run"] * 1000)
        for row in rows:
            assert row["speedup"] == pytest.approx(medians["pytorch teacher"] / medians[row["variant"]])
            assert row["ratio"] == pytest.approx(1 / row["speedup"])


def test_run_mode_finds_the_teacher_and_the_seeds_student(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "demo"
    for folder in ("teacher", "students/distilled/seed-1", "students/distilled/seed-2"):
        (run / folder).mkdir(parents=True)
    report = {
        "task": "sentiment",
        "teacher": {"name_or_path": "minilm-l6", "fine_tuned_dir": "runs/demo/teacher"},
        "students": [
            {
                "name": "distilled",
                "kind": "distilled",
                "output_dir": "runs/demo/students/distilled/seed-1",
                "seeds": [
                    {"seed": s, "output_dir": f"runs/demo/students/distilled/seed-{s}"} for s in (1, 2)
                ],
            }
        ],
    }
    (run / "report.json").write_text(json.dumps(report))
    monkeypatch.chdir(tmp_path / "runs")  # the paths were written from tmp_path: found through the run's name
    teacher, student = export_latency.run_models(run, seed=2)
    assert teacher == (run / "teacher").resolve() and student == run / "students" / "distilled" / "seed-2"
    with pytest.raises(SystemExit, match=r"distilled has no seed 3 in .*report\.json; seeds: \[1, 2\]"):
        export_latency.run_models(run, seed=3)
    with pytest.raises(SystemExit, match=r"report\.json is missing: pass the folder of a finished run"):
        export_latency.run_models(tmp_path, seed=1)


def test_it_needs_a_run_or_quick(capsys):
    with pytest.raises(SystemExit):
        export_latency.main([])
    assert "pass --run RUN_DIR (a finished run) or --quick" in capsys.readouterr().err
