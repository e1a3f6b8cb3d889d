"""Tests for the recipe pipeline's parts: config parsing, argument checks, latency, the report, the teacher check."""

from __future__ import annotations

import json
import math

import pytest
import torch
from datasets import Dataset, DatasetDict

from hf_distill.arguments import DistillationTrainingArguments
from hf_distill.recipes.arguments import (
    RECIPE_ARGUMENTS,
    DataArguments,
    ReportArguments,
    StudentArguments,
    TeacherArguments,
)
from hf_distill.recipes.config import load_config_file, parse_args_with_config, split_config_flag
from hf_distill.recipes.report_json import build_report
from hf_distill.recipes.students import build_student
from hf_distill.recipes.tasks import TaskData, ensure_test_split
from hf_distill.recipes.teacher import teacher_needs_fine_tune
from hf_distill.reports.report import validate_report
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2

# ---- config file + flags ------------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_config_file_values_and_flag_overrides(tmp_path):
    config = _write(
        tmp_path / "run.yaml",
        f"output_dir: {tmp_path / 'out'}\nteacher_model_name_or_path: some/teacher\nlearning_rate: 3.0e-4\n"
        "temperature: 4.0\nstudent_init: [teacher_layers, config]\nmax_train_samples: 100\nreport_to: none\n",
    )
    teacher, student, data, report, training = parse_args_with_config(
        RECIPE_ARGUMENTS, ["--config", str(config), "--temperature", "1.5", "--max_train_samples", "7"]
    )
    assert teacher.teacher_model_name_or_path == "some/teacher"
    assert training.learning_rate == pytest.approx(3e-4)
    assert training.output_dir == str(tmp_path / "out")
    # Flags win over the file; untouched file values survive.
    assert training.temperature == 1.5 and data.max_train_samples == 7
    assert student.student_init == ["teacher_layers", "config"]
    assert report.latency_rounds == ReportArguments().latency_rounds


def test_config_file_in_json_and_string_numbers(tmp_path):
    # YAML 1.1 reads "5e-5" (no dot) as a string; the flag's own type must still convert it.
    config = _write(tmp_path / "run.yaml", "learning_rate: 5e-5\nreport_to: none\n")
    *_, training = parse_args_with_config(RECIPE_ARGUMENTS, [f"--config={config}"])
    assert training.learning_rate == pytest.approx(5e-5)
    as_json = _write(tmp_path / "run.json", json.dumps({"alpha": 0.25, "report_to": "none"}))
    *_, training = parse_args_with_config(RECIPE_ARGUMENTS, ["--config", str(as_json)])
    assert training.alpha == 0.25


def test_config_file_with_an_unknown_key_is_refused(tmp_path):
    config = _write(tmp_path / "run.yaml", "temprature: 2.0\n")
    with pytest.raises(ValueError, match=r"no argument takes: 'temprature' \(did you mean 'temperature'"):
        parse_args_with_config(RECIPE_ARGUMENTS, ["--config", str(config)])


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist; pass the path of a YAML or JSON file"):
        load_config_file(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match=r"suffix '\.txt'; the parser reads \.yaml, \.yml or \.json"):
        load_config_file(_write(tmp_path / "run.txt", "a: 1"))
    with pytest.raises(ValueError, match="holds a list, not a mapping of field names"):
        load_config_file(_write(tmp_path / "list.yaml", "- 1\n- 2\n"))
    with pytest.raises(ValueError, match="--config needs a file path after it"):
        split_config_flag(["--alpha", "0.5", "--config"])
    assert load_config_file(_write(tmp_path / "empty.yaml", "")) == {}


def test_unknown_flag_is_refused():
    with pytest.raises(ValueError, match="Some specified arguments are not used"):
        parse_args_with_config(RECIPE_ARGUMENTS, ["--output_dir", "x", "--not_a_flag", "1"])


# ---- argument checks ------------------------------------------------------------------------------------


def test_argument_errors():
    with pytest.raises(ValueError, match="fine_tune_teacher='sometimes' is not one of"):
        TeacherArguments(fine_tune_teacher="sometimes")
    with pytest.raises(
        ValueError, match=r"student_init \['layers'\] holds \['layers'\]; each entry must be one of"
    ):
        StudentArguments(student_init=["layers"])
    with pytest.raises(ValueError, match="student_init 'pretrained' needs student_model_name_or_path"):
        StudentArguments(student_init=["pretrained"])
    with pytest.raises(ValueError, match="is not valid JSON"):
        StudentArguments(student_config_overrides="{hidden_size: 8}")
    with pytest.raises(ValueError, match="must be a JSON object of config fields, got list"):
        StudentArguments(student_config_overrides="[1, 2]")
    with pytest.raises(ValueError, match=r"max_test_samples=0 must be >= 1"):
        DataArguments(max_test_samples=0)
    with pytest.raises(ValueError, match=r"max_length=1 must be >= 2"):
        DataArguments(max_length=1)
    with pytest.raises(ValueError, match="latency_rounds=0 must be >= 1"):
        ReportArguments(latency_rounds=0)
    with pytest.raises(ValueError, match="latency_threads=0 must be >= 1"):
        ReportArguments(latency_threads=0)
    assert StudentArguments(student_init="teacher_layers, gpt2").student_init == ["teacher_layers", "gpt2"]


def _task(kind: str, auto_class=None, **kw) -> TaskData:
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


def test_gpt2_student_for_a_classifier_is_refused():
    teacher = tiny_bert_classifier()
    with pytest.raises(ValueError, match="student_init 'gpt2' builds a causal LM, but this task is"):
        build_student(
            "gpt2", teacher, StudentArguments(student_init=["gpt2"]), _task("sequence_classification")
        )


def test_students_of_each_kind(tmp_path):
    teacher = tiny_bert_classifier(num_labels=2)
    task = _task("sequence_classification")
    args = StudentArguments(student_num_layers=1, student_config_overrides='{"hidden_size": 16}')
    layered = build_student("teacher_layers", teacher, StudentArguments(student_num_layers=1), task)
    assert layered.config.num_hidden_layers == 1
    torch.testing.assert_close(
        layered.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[0].output.dense.weight
    )
    from_config = build_student("config", teacher, args, task)
    assert (from_config.config.num_hidden_layers, from_config.config.hidden_size) == (1, 16)
    teacher.save_pretrained(tmp_path / "given")
    given = build_student(
        "pretrained",
        teacher,
        StudentArguments(student_init=["pretrained"], student_model_name_or_path=str(tmp_path / "given")),
        _task("sequence_classification", label_kwargs={"num_labels": 2}),
    )
    torch.testing.assert_close(given.classifier.weight, teacher.classifier.weight)
    lm_teacher = tiny_gpt2()
    gpt2 = build_student("gpt2", lm_teacher, StudentArguments(student_num_layers=1), _task("causal_lm"))
    assert gpt2.config.vocab_size == lm_teacher.config.vocab_size and gpt2.config.n_layer == 1


def test_teacher_needs_fine_tune(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, BertModel

    from tests.helpers.tiny_models import bert_config

    classifier = tiny_bert_classifier(num_labels=2)
    classifier.save_pretrained(tmp_path / "classifier")
    BertModel(bert_config()).save_pretrained(tmp_path / "base")
    two_labels = {"num_labels": 2, "id2label": {0: "negative", 1: "positive"}}
    task = _task("sequence_classification", AutoModelForSequenceClassification, label_kwargs=two_labels)
    assert not teacher_needs_fine_tune(str(tmp_path / "classifier"), task, "auto")
    assert teacher_needs_fine_tune(str(tmp_path / "base"), task, "auto")
    three = _task(
        "sequence_classification",
        AutoModelForSequenceClassification,
        label_kwargs={"id2label": dict(enumerate("abc"))},
    )
    assert teacher_needs_fine_tune(str(tmp_path / "classifier"), three, "auto"), "label count differs"
    # LABEL_0, LABEL_1 say nothing, so the head is trusted; a head for other named labels is not.
    classifier.config.id2label = {0: "rotten", 1: "fresh"}
    classifier.config.label2id = {"rotten": 0, "fresh": 1}
    classifier.save_pretrained(tmp_path / "other_labels")
    assert teacher_needs_fine_tune(str(tmp_path / "other_labels"), task, "auto")
    classifier.config.id2label = {0: "negative", 1: "positive"}
    classifier.config.label2id = {"negative": 0, "positive": 1}
    classifier.save_pretrained(tmp_path / "same_labels")
    assert not teacher_needs_fine_tune(str(tmp_path / "same_labels"), task, "auto")
    tagger = _task("token_classification", AutoModelForTokenClassification, label_kwargs=two_labels)
    assert teacher_needs_fine_tune(str(tmp_path / "classifier"), tagger, "auto"), "wrong head"
    assert teacher_needs_fine_tune(str(tmp_path / "classifier"), task, "always")
    assert not teacher_needs_fine_tune(str(tmp_path / "classifier"), task, "never")
    # 'never' on a checkpoint without the head would distil from a random head: refused.
    with pytest.raises(
        ValueError, match="fine_tune_teacher='never', but .* has no SequenceClassification head"
    ):
        teacher_needs_fine_tune(str(tmp_path / "base"), task, "never")
    assert not teacher_needs_fine_tune("unused", _task("causal_lm"), "auto"), "an LM teacher is used as it is"


def test_hub_dataset_without_test_split_gets_one_from_validation():
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"x": list(range(50))}),
            "validation": Dataset.from_dict({"x": [100, 101]}),
        }
    )
    done = ensure_test_split(splits, seed=0)
    assert done["test"]["x"] == [100, 101]
    assert len(done["validation"]) == 5 and len(done["train"]) == 45
    assert not set(done["validation"]["x"]) & set(done["train"]["x"])
    alone = ensure_test_split(DatasetDict({"train": splits["train"]}), seed=0)
    assert [len(alone[s]) for s in ("train", "validation", "test")] == [40, 5, 5]
    assert len(set(alone["train"]["x"]) | set(alone["validation"]["x"]) | set(alone["test"]["x"])) == 50
    with pytest.raises(ValueError, match="but no 'train' split: the recipe trains on it"):
        ensure_test_split(DatasetDict({"validation": splits["validation"]}), seed=0)


# ---- report -------------------------------------------------------------------------------------------


def _entry(metric, b1, b32):
    return {"metric": metric, "parameters": 10, "size_bytes": 40, "latency_ms_b1": b1, "latency_ms_b32": b32}


@pytest.mark.parametrize("higher_is_better", [True, False])
def test_report_retention_and_speedup(tmp_path, higher_is_better):
    task = _task("causal_lm")
    task.higher_is_better = higher_is_better
    task.metric_name = "accuracy" if higher_is_better else "perplexity"
    teacher = {"name_or_path": "t", "revision": None, **_entry(8.0, 10.0, 40.0)}
    student = {"name": "s", "kind": "distilled", "init": "gpt2", "output_dir": "o", **_entry(10.0, 5.0, 10.0)}
    args = DistillationTrainingArguments(output_dir=str(tmp_path), report_to="none", temperature=3.0)
    report = build_report(task, teacher, [student], args, {"s": [{"loss": 1.0, "step": 1}]})
    validate_report(report)
    expected = 10.0 / 8.0 if higher_is_better else 8.0 / 10.0
    assert report["students"][0]["retention"] == pytest.approx(expected)
    assert report["students"][0]["speedup_b1"] == pytest.approx(2.0)
    assert report["students"][0]["speedup_b32"] == pytest.approx(4.0)
    assert report["distillation"]["temperature"] == 3.0
    assert report["data"]["train_size"] == 1 and not math.isnan(report["students"][0]["retention"])


def test_code_task_from_a_dataset_folder_with_a_content_column(tmp_path, wordpiece_tokenizer):
    """A `datasets` name (here a local folder, loaded the same way as a Hub id) with codeparrot's column name."""
    from hf_distill.recipes.tasks import prepare_code

    tokenizer = wordpiece_tokenizer
    tokenizer.eos_token = "[SEP]"
    folder = tmp_path / "code"
    folder.mkdir()
    rows = [{"content": "the movie was great " * 20, "repo": str(i)} for i in range(10)]
    (folder / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (folder / "validation.jsonl").write_text(json.dumps(rows[0]), encoding="utf-8")
    task = prepare_code(DataArguments(dataset_name=str(folder), max_length=8), tokenizer)
    # No test split in the folder: its validation rows became the test split.
    assert len(task.test) == len(tokenizer(rows[0]["content"])["input_ids"]) // 8
    assert task.dataset_label == str(folder) and len(task.train[0]["input_ids"]) == 8
    (folder / "validation.jsonl").write_text(json.dumps({"source": "x"}), encoding="utf-8")
    (folder / "train.jsonl").write_text(json.dumps({"source": "x"}), encoding="utf-8")
    with pytest.raises(ValueError, match=r"has none of the columns \('text', 'content', 'code'\)"):
        prepare_code(DataArguments(dataset_name=str(folder), max_length=8), tokenizer)
