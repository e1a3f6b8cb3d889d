"""``--seeds 1,2 --export onnx``: every seed's distilled student is exported to its own folder and scored, and
its deployment rows pool the seeds as the scorecard does (mean, interval, each seed's metric, the paired
difference against each seed's own PyTorch model), checked against the graphs re-scored and pooled here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy.stats import bootstrap
from transformers import BertForSequenceClassification

from hf_distill.export import OnnxModel
from hf_distill.recipes.deployment import DeploymentSource, load_seed_model
from hf_distill.recipes.vision_models import SmallCNN
from hf_distill.reports.report import load_report
from hf_distill.training.metrics import ExampleScores
from tests.helpers.recipes import needs_rotten_tomatoes, run_recipe, save_tiny_teacher, tiny_flags
from tests.helpers.tiny_models import tiny_bert_classifier


def _logits(model, rows, inputs) -> np.ndarray:
    """Each test row's logits, one row at a time (no padding, no batching: apart from the recipe's scorer)."""
    with torch.no_grad():
        return np.concatenate(
            [model(**{k: torch.tensor([row[k]]) for k in inputs if k in row}).logits.numpy() for row in rows]
        )


def _pooled_difference(onnx: np.ndarray, pytorch: np.ndarray) -> tuple[float, list[float]]:
    """Mean over seeds of (ONNX accuracy - PyTorch accuracy), and its 95% percentile interval resampling test
    examples, the same draw for every seed and both models (``(seeds, examples)`` arrays of 0/1)."""

    def statistic(a, b, axis=-1):
        return (a.mean(axis=axis) - b.mean(axis=axis)).mean(axis=0)

    result = bootstrap(
        (onnx, pytorch),
        statistic,
        n_resamples=2000,
        vectorized=True,
        paired=True,
        axis=-1,
        confidence_level=0.95,
        method="percentile",
        rng=np.random.default_rng(0),
    )
    low, high = result.confidence_interval
    return float(statistic(onnx, pytorch)), [float(low), float(high)]


@needs_rotten_tomatoes
def test_two_seeds_export_every_students_graphs_and_pool_their_rows(
    tmp_path, wordpiece_tokenizer, monkeypatch
):
    pytest.importorskip("onnxruntime")
    from hf_distill.recipes import run as run_module
    from hf_distill.reports.format import deployment_line

    seen = {}
    exported = run_module.deployment_report

    def keep_task(task, *args, **kwargs):
        seen["task"] = task
        return exported(task, *args, **kwargs)

    monkeypatch.setattr(run_module, "deployment_report", keep_task)
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    out = tmp_path / "run"
    # Grouped by length, as the sentiment configs train: transformers 5 then batches the test rows by length
    # too, in an order that changes with the seed, and the rows must still pair across seeds and runtimes.
    flags = tiny_flags(
        out,
        teacher_model_name_or_path=teacher,
        fine_tune_teacher="never",
        train_sampling_strategy="group_by_length",
    )
    argv = [
        "--seeds",
        "1,2",
        "--run_baseline",
        "false",
        "--export",
        "onnx",
        "--quantize",
        "int8-dynamic",
        "--latency_threads",
        "1",
    ]
    report = run_recipe("sentiment", [*flags, *argv, "--write_model_cards", "true"])
    on_disk = load_report(out)
    deployment = on_disk["deployment"]
    assert deployment["seeds"] == [1, 2] and deployment["latency_measurement"]["timed_seed"] == 1
    (student,) = [s for s in on_disk["students"] if s["kind"] == "distilled"]
    name, seeds = student["name"], student["seeds"]
    rows = {(r["model"], r["runtime"], r["precision"]): r for r in deployment["rows"]}
    assert {key for key in rows if key[0] == name} == {
        (name, "pytorch", "fp32"),
        (name, "onnxruntime", "fp32"),
        (name, "onnxruntime", "int8-dynamic"),
    }
    # The teacher is one model: exported once, where a single seed puts it, one value per row.
    assert (out / "onnx" / "teacher" / "onnx" / "model.onnx").is_file()
    assert all(len(r["per_seed"]) == 1 for (model, *_), r in rows.items() if model == "teacher")
    assert not (out / "onnx" / name / "onnx").exists(), "several seeds: one folder per seed"

    task = seen["task"]
    labels = np.array([row["labels"] for row in task.test])
    pytorch = [
        _logits(
            BertForSequenceClassification.from_pretrained(s["output_dir"]).eval(),
            task.test,
            task.model_inputs,
        )
        for s in seeds
    ]
    pytorch_correct = np.stack([(logits.argmax(-1) == labels).astype(float) for logits in pytorch])
    pytorch_row = rows[(name, "pytorch", "fp32")]
    assert pytorch_row["per_seed"] == pytest.approx([s["metric"] for s in seeds])
    assert pytorch_row["per_seed"] == pytest.approx(pytorch_correct.mean(axis=1).tolist())
    for precision, file in (("fp32", "model.onnx"), ("int8-dynamic", "model_quantized.onnx")):
        graphs = [out / "onnx" / name / f"seed-{s['seed']}" / "onnx" / file for s in seeds]
        onnx = [_logits(OnnxModel(path), task.test, task.model_inputs) for path in graphs]
        if precision == "fp32":
            # Each seed's graph is that seed's student: the second is read back from its folder, not the first's.
            assert all(np.allclose(o, p, atol=1e-4) for o, p in zip(onnx, pytorch))
            assert not np.allclose(onnx[0], onnx[1], atol=1e-3)
        correct = np.stack([(logits.argmax(-1) == labels).astype(float) for logits in onnx])
        row = rows[(name, "onnxruntime", precision)]
        assert row["per_seed"] == pytest.approx(correct.mean(axis=1).tolist())
        assert row["metric"] == pytest.approx(correct.mean())
        assert row["path"] == str(graphs[0]), "size and latency are the first seed's graph's"
        difference, interval = _pooled_difference(correct, pytorch_correct)
        assert row["versus_pytorch"]["difference"] == pytest.approx(difference, abs=1e-12)
        assert row["versus_pytorch"]["interval"] == pytest.approx(interval, abs=1e-12)

    int8 = rows[(name, "onnxruntime", "int8-dynamic")]
    line = deployment_line(report)
    assert line.startswith(f"{name} on onnxruntime int8-dynamic: accuracy ")
    assert " over 2 seeds, " in line and " vs its PyTorch models; " in line
    card = (Path(seeds[1]["output_dir"]) / "README.md").read_text()
    assert "The student's rows pool its 2 seeds (1, 2)" in card
    assert f"| {name} (2 seeds) | onnxruntime | int8-dynamic |" in card
    assert len(int8["per_seed"]) == 2


def _same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_later_seed_is_read_back_as_the_first_seeds_class(tmp_path):
    first, later = tiny_bert_classifier(seed=1), tiny_bert_classifier(seed=2)
    later.save_pretrained(tmp_path / "bert")
    loaded = load_seed_model(first, tmp_path / "bert")
    assert type(loaded) is BertForSequenceClassification and not loaded.training
    assert _same_weights(loaded, later) and not _same_weights(loaded, first)
    # The vision CNN has no save_pretrained: the Trainer saves its state dict alone.
    torch.manual_seed(1)
    first_cnn = SmallCNN(num_labels=3, num_channels=1)
    torch.manual_seed(2)
    later_cnn = SmallCNN(num_labels=3, num_channels=1)
    (tmp_path / "cnn").mkdir()
    save_file(later_cnn.state_dict(), tmp_path / "cnn" / "model.safetensors")
    loaded_cnn = load_seed_model(first_cnn, tmp_path / "cnn")
    assert _same_weights(loaded_cnn, later_cnn) and not _same_weights(first_cnn, later_cnn)
    assert loaded_cnn is not first_cnn and not loaded_cnn.training
    with pytest.raises(
        ValueError, match=r"holds no model.safetensors: the seed's student cannot be read back"
    ):
        load_seed_model(first_cnn, tmp_path / "bert-missing")


def test_a_deployment_source_refuses_scores_that_do_not_count_its_models(tmp_path):
    scores = ExampleScores(metrics={"accuracy": 1.0}, statistics={"correct": np.ones(2)})
    source = DeploymentSource(SmallCNN(2, 1), [scores, scores], seeds=[1, 2], later_folders=[tmp_path])
    assert source.folder(tmp_path, "kd", 1) == tmp_path / "onnx" / "kd" / "seed-2"
    assert (
        DeploymentSource(SmallCNN(2, 1), [scores]).folder(tmp_path, "teacher", 0)
        == tmp_path / "onnx" / "teacher"
    )
    with pytest.raises(ValueError, match=r"one PyTorch score per model: 1 scores, 2 seeds and 1 \+ 1 models"):
        DeploymentSource(SmallCNN(2, 1), [scores], seeds=[1, 2], later_folders=[tmp_path])
