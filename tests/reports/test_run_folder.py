"""``hf-distill report`` on a folder written by ``DistillationTrainer`` alone (no recipe ``report.json``)."""

from __future__ import annotations

import json

import pytest
from datasets import Dataset
from transformers import DataCollatorWithPadding

from hf_distill import DistillationTrainer, DistillationTrainingArguments, cli
from hf_distill.reports.plots import draw_loss_curves
from hf_distill.reports.report import make_report
from hf_distill.reports.run_folder import find_trainer_state, trainer_folder_report
from hf_distill.students.build import student_from_teacher
from hf_distill.training.metrics import accuracy_f1
from tests.helpers.tiny_models import make_sentences, tiny_bert_classifier

pytest.importorskip("matplotlib")


def _dataset(tokenizer, n: int, seed: int) -> Dataset:
    texts = make_sentences(n, seed=seed)
    return Dataset.from_dict(
        {**tokenizer(texts, truncation=True, max_length=16), "labels": [len(t.split()) % 2 for t in texts]}
    )


@pytest.fixture(scope="module")
def trainer_folder(tmp_path_factory, wordpiece_tokenizer):
    """What a user's own script leaves: checkpoint-4/ (with trainer_state.json) and the saved student."""
    folder = tmp_path_factory.mktemp("trainer_only") / "run"
    teacher = tiny_bert_classifier(seed=1, num_labels=2)
    args = DistillationTrainingArguments(
        output_dir=str(folder),
        per_device_train_batch_size=8,
        max_steps=4,
        learning_rate=1e-3,
        logging_steps=1,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=4,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        temperature=2.0,
        alpha=0.5,
    )
    trainer = DistillationTrainer(
        model=student_from_teacher(teacher, num_layers=1),
        teacher_model=teacher,
        args=args,
        train_dataset=_dataset(wordpiece_tokenizer, 32, seed=0),
        eval_dataset=_dataset(wordpiece_tokenizer, 16, seed=1),
        data_collator=DataCollatorWithPadding(wordpiece_tokenizer),
        processing_class=wordpiece_tokenizer,
        compute_metrics=accuracy_f1,
    )
    trainer.train()
    trainer.save_model()
    return folder


def test_report_of_a_trainer_only_folder_draws_its_loss_parts(trainer_folder, tmp_path):
    assert not (trainer_folder / "report.json").exists()
    state_path = find_trainer_state(trainer_folder)
    assert state_path == trainer_folder / "checkpoint-4" / "trainer_state.json"
    history = json.loads(state_path.read_text())["log_history"]

    assert cli.main(["report", str(trainer_folder), "--output_dir", str(tmp_path / "cli")]) == 0
    assert (tmp_path / "cli" / "figures" / "losses.png").is_file()
    written = make_report(trainer_folder, tmp_path)
    # The trainer measured the teacher and both latencies on the evaluation set: the card holds them.
    assert set(written) == {"losses", "metric", "latency", "md", "html"}
    report = trainer_folder_report(trainer_folder)
    task_axis, terms_axis = draw_loss_curves(report).axes
    task = {line.get_label(): list(line.get_ydata()) for line in task_axis.get_lines()}
    terms = {line.get_label(): list(line.get_ydata()) for line in terms_axis.get_lines()}
    assert task["distilled (train)"] == [e["loss_task"] for e in history if "loss_task" in e]
    assert task["distilled (eval)"] == [e["eval_loss_task"] for e in history if "eval_loss_task" in e]
    assert terms["distilled: loss_kd"] == [e["loss_kd"] for e in history if "loss_kd" in e]
    assert len(task["distilled (train)"]) == 4

    markdown = written["md"].read_text()
    # The card's numbers: the settings and the student's last evaluation.
    last_accuracy = [e for e in history if "eval_accuracy" in e][-1]["eval_accuracy"]
    assert report["students"][0]["metric"] == pytest.approx(last_accuracy)
    assert report["metric_name"] == "accuracy"
    assert report["teacher"]["latency_ms_b32"] > 0 and 0 < report["teacher"]["metric"] <= 1
    teacher, student = report["teacher"], report["students"][0]
    assert student["speedup_b1"] == pytest.approx(teacher["latency_ms_b1"] / student["latency_ms_b1"])
    assert student["size_bytes"] == (trainer_folder / "model.safetensors").stat().st_size
    assert "temperature 2.0, alpha 0.5" in markdown
    assert "32 train, 16 validation, not measured test examples" in markdown
    assert f"| distilled | distilled | {last_accuracy:.4g} |" in markdown
    assert "checkpoint-4/trainer_state.json and README.md (no report.json)" in markdown


def test_report_of_a_folder_with_nothing_usable_says_what_to_run(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    with pytest.raises(FileNotFoundError, match=r"holds neither report\.json .* nor trainer_state\.json"):
        make_report(tmp_path)
    assert cli.main(["report", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("hf-distill: error:") and "hf-distill train <task>" in error
    assert "trainer.save_state()" in error and "Traceback" not in error


def test_report_refuses_a_state_file_that_is_not_trainers(tmp_path):
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    with pytest.raises(ValueError, match=r"trainer_state\.json: has no 'log_history' list"):
        make_report(tmp_path)


def test_report_of_a_trainer_folder_without_a_card_draws_only_curves(trainer_folder, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(trainer_folder / "checkpoint-4", folder / "checkpoint-4")
    (folder / "checkpoint-4" / "README.md").unlink()
    written = make_report(folder, tmp_path / "out")
    assert set(written) == {"losses", "md", "html"}  # no bars of numbers no one measured
    assert "| distilled | distilled | not measured |" in written["md"].read_text()
