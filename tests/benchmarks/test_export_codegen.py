"""Smoke test of ``benchmarks/export_codegen.py``'s plumbing: its ``--quick`` mode end to end (a tiny Llama
prompted through a chat template and a tiny GPT-2 prompted raw: the JSON's shape, fp32 ONNX tokens identical to
PyTorch's, the relative differences and rates computed from the values it records), greedy decoding that stops at
EOS alike on both sides, how ``--run`` finds a student, and every refusal before any export. Its timings are
never asserted on: they come from a quiet machine, never from here."""

from __future__ import annotations

import json
import math
import statistics
import sys

import pytest
import torch

from tests.helpers.paths import BENCHMARKS
from tests.helpers.tiny_models import make_wordpiece_tokenizer, tiny_bert_classifier, tiny_gpt2

pytest.importorskip("onnxruntime")

sys.path.insert(0, str(BENCHMARKS))
import export_codegen  # noqa: E402

from hf_distill.export import OnnxModel, export_student  # noqa: E402
from hf_distill.reports.timing import QUIET_CORES  # noqa: E402

VARIANTS = ["pytorch student", "onnx fp32 student", "onnx int8-dynamic student", "onnx int8-weights student"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    path = tmp_path_factory.mktemp("export_codegen") / "result.json"
    threads = torch.get_num_threads()
    returned = export_codegen.main(["--quick", "--output", str(path)])
    assert torch.get_num_threads() == threads  # the benchmark's thread count does not leak into the caller
    return returned, json.loads(path.read_text())


def test_quick_mode_measures_both_tiny_students(quick):
    returned, written = quick
    assert written == json.loads(json.dumps(returned))
    meta = written["meta"]
    assert (
        meta["quick"]
        and meta["threads"] == meta["torch_threads"] == meta["onnxruntime_intra_op_threads"] == 2
    )
    assert meta["prompts"] == len(meta["prompt_functions"]) == 3 and meta["max_new_tokens"] == 8
    assert meta["block_size"] == 128 and meta["test_texts"] == 2 and meta["timing_prompts"] == 1
    students = {s["name"]: s for s in written["students"]}
    assert list(students) == ["tiny-llama", "tiny-gpt2"]
    assert students["tiny-llama"]["architecture"] == "LlamaForCausalLM"
    assert students["tiny-llama"]["prompt_style"] == "chat" and students["tiny-gpt2"]["prompt_style"] == "raw"
    for student in students.values():
        tokens = student["greedy_tokens"]
        assert len(student["prompt_tokens"]) == len(tokens["pytorch_new_tokens"]) == 3
        assert all(1 <= n <= 8 for n in tokens["pytorch_new_tokens"])
        # The fp32 graph decodes over its past keys and values to exactly PyTorch's tokens.
        assert tokens["onnx fp32 student"] == {"first_difference": [None] * 3, "identical_share": 1.0}
        for scheme in ("onnx int8-dynamic student", "onnx int8-weights student"):
            int8 = tokens[scheme]
            assert all(d is None or 0 <= d <= 8 for d in int8["first_difference"])
            assert int8["identical_share"] == sum(d is None for d in int8["first_difference"]) / 3
        assert set(student["size_bytes"]) == set(VARIANTS) and min(student["size_bytes"].values()) > 0
        assert student["export_check"]["fp32_max_abs_difference"] < 1e-4


def test_bits_per_byte_differences_and_targets_come_from_the_recorded_values(quick):
    _, written = quick
    for student in written["students"]:
        bits = student["bits_per_byte"]
        values = bits["values"]
        assert set(values) == set(VARIANTS) and all(math.isfinite(v) and v > 0 for v in values.values())
        assert bits["tokens"] > 0 and bits["bytes"] > bits["tokens"] / 10
        fp32, int8, weights, pytorch = (
            values["onnx fp32 student"],
            values["onnx int8-dynamic student"],
            values["onnx int8-weights student"],
            values["pytorch student"],
        )
        assert bits["int8_vs_fp32_relative"] == pytest.approx((int8 - fp32) / fp32)
        assert bits["int8_weights_vs_fp32_relative"] == pytest.approx((weights - fp32) / fp32)
        assert bits["fp32_vs_pytorch_relative"] == pytest.approx((fp32 - pytorch) / pytorch)
        assert abs(bits["fp32_vs_pytorch_relative"]) < 1e-5  # the same logits, up to float rounding
        targets = student["targets"]
        assert targets["fp32_tokens_identical"] is True
        assert targets["int8_bits_per_byte_within_2_percent"] == (abs(int8 / fp32 - 1) <= 0.02)
        assert targets["int8_weights_bits_per_byte_within_2_percent"] == (abs(weights / fp32 - 1) <= 0.02)


def test_tokens_per_second_are_computed_from_the_recorded_medians(quick):
    _, written = quick
    for student in written["students"]:
        rows = student["tokens_per_second"]
        assert [row["variant"] for row in rows] == VARIANTS
        medians = {}
        for row in rows:
            assert len(row["runs"]) == len(row["own_cores"]) == len(row["other_cores"]) == 2
            quiet = [t for t, o in zip(row["runs"], row["other_cores"]) if o <= QUIET_CORES] or row["runs"]
            medians[row["variant"]] = statistics.median(quiet)
            assert row["median_s"] == pytest.approx(medians[row["variant"]])
            assert row["new_tokens_per_run"] == 8 * len(student["timing_prompt_tokens"]) == 8
            assert row["tokens_per_second"] == pytest.approx(
                row["new_tokens_per_run"] / medians[row["variant"]]
            )
        for row in rows:
            assert row["speedup_vs_pytorch_student"] == pytest.approx(
                medians["pytorch student"] / medians[row["variant"]]
            )


def test_first_difference():
    assert export_codegen.first_difference([1, 2, 3], [1, 2, 3]) is None
    assert export_codegen.first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert export_codegen.first_difference([4, 2], [1, 2]) == 0
    assert export_codegen.first_difference([1, 2, 3], [1, 2]) == 2  # stopped early: differs where it stopped
    assert export_codegen.first_difference([], [7]) == 0


def test_greedy_stops_at_eos_alike_and_fixed_length_ignores_it(tmp_path):
    model = tiny_gpt2(seed=2, vocab_size=60, positions=64).eval()
    with torch.no_grad():  # sharper logits, so greedy decoding moves between tokens
        for parameter in model.parameters():
            parameter.mul_(4.0)
    onnx_model = OnnxModel(export_student(model, tmp_path).onnx_path)
    ids = torch.randint(1, 60, (1, 6), generator=torch.Generator().manual_seed(4))
    free = export_codegen.greedy(model, ids, 12, None, 0, fixed=False)
    assert export_codegen.greedy(onnx_model, ids, 12, None, 0, fixed=False) == free and len(free) == 12
    eos = free[3]
    stop = free.index(eos) + 1  # generation ends with the first EOS, included
    for decoder in (model, onnx_model):
        assert export_codegen.greedy(decoder, ids, 12, eos, 0, fixed=False) == free[:stop]
        assert len(export_codegen.greedy(decoder, ids, 12, eos, 0, fixed=True)) == 12


def test_run_mode_finds_the_named_students_first_seed(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "codegen"
    for folder in ("students/kd-layers/seed-1", "students/kd-layers/seed-2", "students/kd-gpt2"):
        (run / folder).mkdir(parents=True)
    seeds = [{"seed": s, "output_dir": f"runs/codegen/students/kd-layers/seed-{s}"} for s in (1, 2)]
    report = {
        "students": [
            {"name": "no-kd", "kind": "no_kd_baseline", "output_dir": "runs/codegen/students/no-kd"},
            {"name": "kd-layers", "kind": "distilled", "output_dir": "x", "seeds": seeds},
            {"name": "kd-gpt2", "kind": "distilled", "output_dir": "runs/codegen/students/kd-gpt2"},
        ]
    }
    (run / "report.json").write_text(json.dumps(report))
    monkeypatch.chdir(tmp_path / "runs")  # the paths were written from tmp_path: found through the run's name
    assert export_codegen.run_student(run, None) == run / "students" / "kd-layers" / "seed-1"
    assert export_codegen.run_student(run, "kd-gpt2") == run / "students" / "kd-gpt2"
    with pytest.raises(SystemExit, match=r"has no student named 'kd'; its students: \['no-kd', 'kd-layers'"):
        export_codegen.run_student(run, "kd")
    with pytest.raises(
        SystemExit, match=r"report\.json is missing: pass the folder of a finished codegen run"
    ):
        export_codegen.run_student(tmp_path, None)


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "pass one of --student FOLDER, --run RUN_DIR"),
        (["--quick", "--student", "x"], "pass one of --student FOLDER, --run RUN_DIR"),
        (["--student", "x", "--name", "kd"], "--name picks a student of a run: pass it with --run"),
        (["--quick", "--prompts", "0"], "--prompts 0: it must be at least 1"),
        (["--quick", "--threads", "0"], "--threads 0: it must be at least 1"),
    ],
)
def test_bad_flags_are_refused(argv, message, capsys):
    with pytest.raises(SystemExit):
        export_codegen.main(argv)
    assert message in capsys.readouterr().err


def test_students_that_cannot_be_measured_are_refused_before_export(tmp_path):
    tokenizer = make_wordpiece_tokenizer()
    tiny_gpt2(vocab_size=len(tokenizer), positions=64).save_pretrained(tmp_path / "lm")
    with pytest.raises(SystemExit, match=r"holds no tokenizer, .* pass --tokenizer NAME_OR_FOLDER"):
        export_codegen.load_student(tmp_path / "lm", None, 8)
    tokenizer.save_pretrained(tmp_path / "lm")
    with pytest.raises(SystemExit, match=r"--max_new_tokens 64 fills the student's context of 64 positions"):
        export_codegen.load_student(tmp_path / "lm", None, 64)
    model, tokenizer = export_codegen.load_student(tmp_path / "lm", None, 8)
    assert not model.training and tokenizer is not None
    tiny_gpt2(vocab_size=len(tokenizer) - 1).save_pretrained(tmp_path / "small")
    tokenizer.save_pretrained(tmp_path / "small")
    with pytest.raises(
        SystemExit,
        match=rf"has {len(tokenizer)} tokens and the student's embeddings {len(tokenizer) - 1} rows",
    ):
        export_codegen.load_student(tmp_path / "small", None, 8)
    tiny_bert_classifier().save_pretrained(tmp_path / "classifier")
    with pytest.raises(SystemExit, match=r"BertForSequenceClassification, not a causal LM: .*export_latency"):
        export_codegen.load_student(tmp_path / "classifier", None, 8)
    with pytest.raises(SystemExit, match=r"is not a model folder: it needs config.json"):
        export_codegen.load_student(tmp_path / "missing", None, 8)
