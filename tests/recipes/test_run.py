"""The recipes end to end: tiny random models on tiny slices of the real offline data, one and two processes,
and (``slow``) the real default models on small subsets."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    BertForSequenceClassification,
    BertForTokenClassification,
)

from hf_distill.reports.report import load_report
from tests.helpers.paths import RECIPES, REPO
from tests.helpers.processes import free_port
from tests.helpers.recipes import (
    check_run,
    needs_minilm,
    needs_rotten_tomatoes,
    needs_smollm2,
    needs_wnut,
    real_flags,
    run_recipe,
    save_tiny_code_teacher,
    save_tiny_teacher,
    tiny_flags,
    write_conll,
)


@needs_rotten_tomatoes
def test_sentiment_recipe_on_tiny_models(tmp_path, wordpiece_tokenizer):
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    out = tmp_path / "run"
    report = run_recipe(
        "sentiment",
        tiny_flags(out, teacher_model_name_or_path=teacher, fine_tune_teacher="always", teacher_max_steps=3),
    )
    check_run(report, out, "sequence_classification", 2)
    assert report["metric_name"] == "accuracy" and 0.0 <= report["teacher"]["metric"] <= 1.0
    assert report["data"]["train_size"] == 32 and report["data"]["test_size"] == 16
    assert report["teacher"]["fine_tuned_dir"] == str(out / "teacher")
    assert len([e for e in report["teacher"]["log_history"] if "loss" in e]) == 3, "teacher_max_steps"
    assert (out / "teacher" / "model.safetensors").is_file()
    # Both students start from the same teacher layers, so their first losses agree on the task part.
    distilled, baseline = (report["log_history"][s["name"]] for s in report["students"])
    assert distilled[0]["loss_task"] == pytest.approx(baseline[0]["loss"], rel=1e-4)


@needs_wnut
def test_ner_recipe_on_conll_files(tmp_path, wordpiece_tokenizer):
    train = write_conll(tmp_path / "train.conll")
    teacher = save_tiny_teacher(
        tmp_path / "teacher",
        BertForTokenClassification,
        wordpiece_tokenizer,
        id2label={0: "O", 1: "B-x", 2: "I-x"},
    )
    out = tmp_path / "run"
    report = run_recipe(
        "ner", tiny_flags(out, teacher_model_name_or_path=teacher, train_file=train, max_train_samples=24)
    )
    check_run(report, out, "token_classification", 2)
    assert report["metric_name"] == "f1"
    assert report["data"]["dataset"] == str(train)
    # The tiny checkpoint's 3-label head names other labels than the file's (O, B-person, I-person), so the
    # teacher was fine-tuned; its folder holds the task's label names.
    config = json.loads((out / "teacher" / "config.json").read_text())
    assert set(config["id2label"].values()) == {"O", "B-person", "I-person"}


@needs_wnut
def test_a_teacher_worse_than_the_baseline_is_flagged(tmp_path, wordpiece_tokenizer, capsys):
    """A teacher that tags every word O (entity F1 0) used as it is, and a random student trained on the labels
    long enough to find some entities: the teacher is worse on the validation split, so report.json, the
    console and the card say it is not worth distilling."""
    train = write_conll(tmp_path / "train.conll")
    folder = save_tiny_teacher(
        tmp_path / "teacher",
        BertForTokenClassification,
        wordpiece_tokenizer,
        id2label={0: "O", 1: "B-person", 2: "I-person"},
    )
    teacher = BertForTokenClassification.from_pretrained(folder)
    with torch.no_grad():
        teacher.classifier.weight.zero_()
        teacher.classifier.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    teacher.save_pretrained(folder)
    out = tmp_path / "run"
    flags = tiny_flags(
        out,
        teacher_model_name_or_path=folder,
        train_file=train,
        fine_tune_teacher="never",
        student_init="config",
        num_train_epochs=6,
        learning_rate=1e-2,
        latency_threads=1,
    )
    report = run_recipe("ner", flags)
    # The run's latency: pinned threads recorded, each student's speed-up with its spread and flag.
    assert report["latency_measurement"]["threads"] == 1 and report["latency_measurement"]["rounds"] == 1
    for student in report["students"]:
        assert student["latency"]["b32"]["threads"] == 1
        assert student["speedup"]["b1"]["reliable"] is False, "one round: no spread to judge"
    check = load_report(out)["teacher_check"]
    assert check == report["teacher_check"]
    assert check["verdict"] == "teacher_not_better" and check["split"] == "validation"
    assert check["teacher_metric"] == 0.0 and all(v > 0.0 for v in check["baselines"].values())
    assert list(check["baselines"]) == [
        s["name"] for s in report["students"] if s["kind"] == "no_kd_baseline"
    ]
    assert "WARNING: the teacher is not better than the student trained alone" in capsys.readouterr().out
    card = (Path(report["students"][0]["output_dir"]) / "README.md").read_text()
    assert "the teacher is not better than the student trained alone" in card


def test_codegen_recipe_on_tiny_models(tmp_path, wordpiece_tokenizer):
    save_tiny_code_teacher(tmp_path / "teacher", wordpiece_tokenizer)
    out = tmp_path / "run"
    flags = tiny_flags(
        out,
        teacher_model_name_or_path=tmp_path / "teacher",
        max_files=12,
        max_train_samples=16,
        max_test_samples=8,
        student_config_overrides='{"n_embd": 8, "n_head": 2}',
    )
    report = run_recipe("codegen", [*flags, "--student_init", "teacher_layers", "gpt2"])
    check_run(report, out, "causal_lm", 4)
    assert report["metric_name"] == "perplexity" and report["higher_is_better"] is False
    assert [s["init"] for s in report["students"]] == ["teacher_layers", "teacher_layers", "gpt2", "gpt2"]
    assert "fine_tuned_dir" in report["teacher"] and report["teacher"]["fine_tuned_dir"] is None
    for student in report["students"]:
        assert student["retention"] == pytest.approx(report["teacher"]["metric"] / student["metric"])


# ---- one process against two ------------------------------------------------------------------------

# Two processes pad their halves of a batch separately and sum in another order: float32 rounding only.
RTOL = 1e-4
# A KD loss near 0 (student close to the teacher) is a difference of nearly equal float32 sums: the other
# reduction order of two processes moves it by ~1e-8 in absolute terms, far more than 1e-4 relative.
ATOL = 1e-7


def _launch(processes: int, output_dir: Path, flags: list[str]) -> dict:
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes)]
    # `accelerate launch --cpu --num_processes 2` starts a single process (its simple launcher), and --cpu
    # cannot be combined with --multi_gpu; --multi_gpu picks the torch.distributed launcher, and the recipe's
    # `--use_cpu true` (in the flags) keeps every process on the CPU with the gloo backend.
    if processes > 1:
        accelerate += [
            "--multi_gpu",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "--main_process_port",
            str(free_port()),
        ]
    else:
        accelerate += ["--cpu"]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }
    done = subprocess.run(
        [*accelerate, str(RECIPES / "sentiment.py"), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return load_report(output_dir)


@needs_rotten_tomatoes
def test_two_processes_match_one_process(tmp_path, wordpiece_tokenizer):
    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    reports = {}
    for processes in (1, 2):
        out = tmp_path / f"run{processes}"
        # Same global batch (8) and seed: per-device batch halves when the processes double.
        flags = tiny_flags(
            out,
            teacher_model_name_or_path=teacher,
            fine_tune_teacher="always",
            teacher_max_steps=2,
            per_device_train_batch_size=8 // processes,
            max_train_samples=24,
        )
        reports[processes] = _launch(processes, out, flags)
    one, two = reports[1], reports[2]
    assert one["teacher"]["metric"] == pytest.approx(two["teacher"]["metric"], abs=1e-9)
    teacher_steps = [[e["loss"] for e in r["teacher"]["log_history"] if "loss" in e] for r in (one, two)]
    assert len(teacher_steps[0]) == 2 and teacher_steps[1] == pytest.approx(teacher_steps[0], rel=RTOL)
    for want, got in zip(one["students"], two["students"]):
        assert want["name"] == got["name"]
        assert got["metric"] == pytest.approx(want["metric"], abs=1e-9), "test accuracy"
        curves = [[e for e in r["log_history"][want["name"]] if "loss" in e] for r in (one, two)]
        assert len(curves[0]) == len(curves[1]) == 3
        for a, b in zip(*curves):
            for key in ("loss", "loss_kd", "loss_task"):
                if key in a:
                    where = f"{want['name']} step {a['step']} {key}"
                    assert b[key] == pytest.approx(a[key], rel=RTOL, abs=ATOL), where


# ---- the real default models on small subsets ---------------------------------------------------------


@pytest.mark.slow
@needs_minilm
@needs_rotten_tomatoes
def test_sentiment_recipe_with_minilm(tmp_path):
    out = tmp_path / "run"
    report = run_recipe(
        "sentiment", [*real_flags(out), "--config", str(RECIPES / "configs" / "sentiment_smoke.yaml")]
    )
    check_run(report, out, "sequence_classification", 2)
    assert report["teacher"]["name_or_path"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert report["teacher"]["offline_alias"] == "minilm-l6" and report["teacher"]["parameters"] > 20_000_000
    assert [s["parameters"] < 0.8 * report["teacher"]["parameters"] for s in report["students"]] == [
        True,
        True,
    ]


@pytest.mark.slow
@needs_minilm
@needs_wnut
def test_ner_recipe_with_minilm(tmp_path):
    out = tmp_path / "run"
    report = run_recipe("ner", [*real_flags(out), "--config", str(RECIPES / "configs" / "ner_smoke.yaml")])
    check_run(report, out, "token_classification", 2)
    assert report["data"]["dataset"].startswith("wnut16")
    assert (
        len(json.loads((out / "teacher" / "config.json").read_text())["id2label"]) == 21
    )  # O + 10 types x B/I


@pytest.mark.slow
@needs_smollm2
def test_codegen_recipe_with_smollm2(tmp_path):
    out = tmp_path / "run"
    # Two steps per student on 32-token blocks: the 30-layer teacher runs beside every student step. One
    # generation prompt (the smoke config's two include a 1,171-character docstring, which the teacher's chat
    # answer repeats before the body: most of the run's time): the assertions need each model's row, not more.
    flags = real_flags(
        out,
        max_length=32,
        max_train_samples=8,
        max_test_samples=8,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        generation_prompts=1,
    )
    report = run_recipe("codegen", [*flags, "--config", str(RECIPES / "configs" / "codegen_smoke.yaml")])
    check_run(report, out, "causal_lm", 4)
    teacher = report["teacher"]["metric"]
    # A few steps cannot make a student as good as the 30-layer teacher on unseen stdlib files.
    assert all(s["metric"] > teacher for s in report["students"])
    # The smoke config's generation evaluation: the teacher through its chat template and raw, each student raw.
    generation = report["generation"]
    names = ["teacher", "teacher (raw)", *(s["name"] for s in report["students"])]
    assert [m["name"] for m in generation["models"]] == names
    assert generation["prompts"] == 1 and all(0 <= m["parse_rate"] <= 1 for m in generation["models"])


# ---- the process group's end, and resuming a killed recipe ----------------------------------------------

END_SCRIPT = """
import torch
from accelerate import PartialState
from hf_distill.recipes.run import end_process_group

state = PartialState(cpu=True)
assert torch.distributed.is_initialized() and state.num_processes == 2, state
total = torch.ones(1)
torch.distributed.all_reduce(total)
end_process_group()
print(f"rank {state.process_index}: sum {total.item():.0f}, initialized {torch.distributed.is_initialized()}")
"""


def test_end_process_group_tears_a_gloo_group_down(tmp_path):
    from hf_distill.recipes.run import end_process_group

    end_process_group()  # one process, no group: nothing to do
    assert not torch.distributed.is_initialized()
    script = tmp_path / "end.py"
    script.write_text(END_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    for rank in (0, 1):
        assert f"rank {rank}: sum 2, initialized False" in done.stdout


@pytest.mark.parametrize("name", ["sentiment", "ner", "codegen", "multi_task"])
def test_recipe_scripts_end_their_process_group_after_the_run(name, tmp_path, monkeypatch):
    import hf_distill.recipes.multi_task as multi_task
    import hf_distill.recipes.run as run
    import hf_distill.recipes.tasks as tasks
    import hf_distill.recipes.teacher as teacher

    order = []

    def finished_run(*args, **kwargs):
        order.append("run")
        return {"report": name}

    monkeypatch.setattr(run, "end_process_group", lambda: order.append("end"))
    monkeypatch.setattr(run, "run_recipe", finished_run)
    monkeypatch.setattr(multi_task, "run_multi_task_recipe", finished_run)
    monkeypatch.setattr(teacher, "teacher_tokenizer", lambda *args, **kwargs: None)
    for prepare in ("prepare_sentiment", "prepare_ner", "prepare_code"):
        monkeypatch.setattr(tasks, prepare, lambda *args, **kwargs: None)
    monkeypatch.setattr(multi_task, "prepare_tasks", lambda *args, **kwargs: None)
    assert run_recipe(name, ["--output_dir", str(tmp_path), "--use_cpu", "true"]) == {"report": name}
    assert order == ["run", "end"]


def test_resume_point_of_each_run_of_a_recipe(tmp_path):
    from hf_distill import DistillationTrainingArguments
    from hf_distill.recipes.training import resume_point
    from hf_distill.training.checkpoints import SAVING_NAME

    def args(**kw):
        return DistillationTrainingArguments(output_dir=str(tmp_path / "student"), use_cpu=True, **kw)

    assert resume_point(args()) is None
    assert resume_point(args(resume_from_checkpoint="true")) is None  # this run never saved: start afresh
    checkpoint = tmp_path / "student" / "checkpoint-3"
    checkpoint.mkdir(parents=True)
    # Killed while writing its first checkpoint: nothing complete to resume from, so the run starts afresh.
    (checkpoint / SAVING_NAME).write_text("{}")
    assert resume_point(args(resume_from_checkpoint="true")) is None
    (checkpoint / SAVING_NAME).unlink()
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    assert resume_point(args()) is None
    assert resume_point(args(resume_from_checkpoint="true")) is True
    with pytest.raises(
        ValueError, match=r"a recipe trains several models .* Pass --resume_from_checkpoint true"
    ):
        resume_point(args(resume_from_checkpoint=str(tmp_path / "student" / "checkpoint-3")))


@needs_rotten_tomatoes
def test_recipe_resumes_each_run_from_its_last_checkpoint(tmp_path, wordpiece_tokenizer):
    from hf_distill.training.checkpoints import write_marker

    teacher = save_tiny_teacher(
        tmp_path / "teacher", BertForSequenceClassification, wordpiece_tokenizer, num_labels=2
    )
    common = dict(
        teacher_model_name_or_path=teacher,
        fine_tune_teacher="always",
        teacher_max_steps=2,
        max_train_samples=24,
        save_strategy="steps",
        save_steps=1,
    )
    reference = run_recipe("sentiment", tiny_flags(tmp_path / "reference", **common))
    out = tmp_path / "resumed"
    first = run_recipe("sentiment", tiny_flags(out, **common))
    # What a kill after the student's first step leaves: later checkpoints and the outputs are gone.
    name = first["students"][0]["name"]
    student_dir = out / "students" / name
    for path in sorted(student_dir.glob("checkpoint-*"))[1:]:
        shutil.rmtree(path)
    for path in student_dir.glob("*.safetensors"):
        path.unlink()
    (out / "report.json").unlink()
    # Marked, so the resumed run shows it continued from this checkpoint rather than starting afresh.
    state_file = student_dir / "checkpoint-1" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    (logged,) = [entry for entry in state["log_history"] if "loss" in entry]
    logged["loss"] = 1234.5
    state_file.write_text(json.dumps(state))
    write_marker(str(student_dir / "checkpoint-1"), 1)  # the marker lists file sizes: keep it true
    resumed = run_recipe("sentiment", tiny_flags(out, resume_from_checkpoint="true", **common))
    assert resumed["teacher"]["metric"] == reference["teacher"]["metric"]
    for want, got in zip(reference["students"], resumed["students"]):
        assert got["metric"] == want["metric"]
        curves = [
            [e["loss"] for e in r["log_history"][want["name"]] if "loss" in e] for r in (reference, resumed)
        ]
        assert len(curves[0]) == len(curves[1]) == 3
        if want["name"] == name:
            assert curves[1][0] == 1234.5 and curves[1][1:] == curves[0][1:]
        else:
            assert curves[1] == curves[0]
