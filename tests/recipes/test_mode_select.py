"""Every distillation mode reached from the recipes' flags and config files: parsing, errors raised before
any model is loaded, and a tiny end-to-end run per mode (the modes' own behaviour is tested in test_modes_*)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

from hf_distill.modes.multi_teacher import MultiTeacherTrainingArguments
from hf_distill.modes.on_policy import PROMPT_INPUT_IDS, OnPolicyDistillationTrainingArguments
from hf_distill.modes.self_distillation import SelfDistillationTrainingArguments
from hf_distill.recipes.arguments import parse_recipe_args
from hf_distill.recipes.mode_select import ModeArguments, mode_from_argv, split_blocks
from hf_distill.reports.report import load_report
from tests.helpers.recipes import (
    needs_rotten_tomatoes,
    run_recipe,
    save_tiny_code_teacher,
    save_tiny_teacher,
    tiny_flags,
)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# ---- parsing ----------------------------------------------------------------------------------------------


def test_mode_comes_from_the_flag_over_the_config_file(tmp_path):
    config = write_config(tmp_path, "distillation_mode: mutual\n")
    assert mode_from_argv([]) == "kd"
    assert mode_from_argv(["--config", str(config)]) == "mutual"
    assert mode_from_argv(["--config", str(config), "--distillation_mode", "self_distillation"]) == (
        "self_distillation"
    )
    assert mode_from_argv(["--distillation_mode=on_policy", "--config", str(config)]) == "on_policy"


def test_each_mode_parses_its_own_flags(tmp_path):
    out = ["--output_dir", str(tmp_path)]
    *_, mode, training = parse_recipe_args(
        [*out, "--distillation_mode", "self_distillation", "--ema_decay", "0.9"]
    )
    assert mode.distillation_mode == "self_distillation"
    assert type(training) is SelfDistillationTrainingArguments and training.ema_decay == 0.9
    *_, mode, training = parse_recipe_args(
        [
            *out,
            "--distillation_mode",
            "multi_teacher",
            "--extra_teachers",
            "a",
            "b",
            "--teacher_weighting",
            "entropy",
        ]
    )
    assert mode.extra_teachers == ["a", "b"]
    assert type(training) is MultiTeacherTrainingArguments and training.teacher_weighting == "entropy"
    config = write_config(
        tmp_path, "distillation_mode: on_policy\nlmbda: 1.0\nprompt_tokens: 8\nalpha: 1.0\n"
    )
    *_, mode, training = parse_recipe_args([*out, "--config", str(config)])
    assert type(training) is OnPolicyDistillationTrainingArguments and training.lmbda == 1.0
    assert mode.prompt_tokens == 8


def test_a_flag_of_another_mode_is_refused(tmp_path):
    out = ["--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="not used by the HfArgumentParser.*--ema_decay"):
        parse_recipe_args([*out, "--ema_decay", "0.9"])
    config = write_config(tmp_path, "lmbda: 1.0\n")
    with pytest.raises(ValueError, match="keys that no argument takes: 'lmbda'"):
        parse_recipe_args([*out, "--config", str(config)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"distillation_mode": "ensemble"}, "distillation_mode 'ensemble' is unknown; choose one of"),
        ({"extra_teachers": ["t"]}, "extra_teachers is set but distillation_mode is 'kd'"),
        ({"distillation_mode": "multi_teacher"}, "needs extra_teachers.*with a single teacher use"),
        ({"prompt_tokens": 0}, "prompt_tokens must be >= 1"),
        ({"teacher_max_new_tokens": 0}, "teacher_max_new_tokens must be >= 1"),
    ],
)
def test_mode_arguments_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModeArguments(**kwargs)


def test_unknown_mode_in_argv_is_refused():
    with pytest.raises(ValueError, match="distillation_mode 'ema' is unknown"):
        mode_from_argv(["--distillation_mode", "ema"])


def test_generation_modes_need_a_causal_lm_and_room_for_a_completion():
    with pytest.raises(ValueError, match="'on_policy' generates text, so it needs a causal-LM task"):
        ModeArguments(distillation_mode="on_policy").check_task("sequence_classification")
    with pytest.raises(ValueError, match="prompt_tokens=32 leaves no completion in blocks of 32 tokens"):
        ModeArguments(distillation_mode="sequence_kd").check_task("causal_lm", block_length=32)
    ModeArguments(distillation_mode="sequence_kd").check_task("causal_lm", block_length=33)


def test_split_blocks_masks_the_prompt():
    from datasets import Dataset

    blocks = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9]], "labels": [[5, 6, 7, 8, 9]]})
    row = split_blocks(blocks, 2)[0]
    assert row[PROMPT_INPUT_IDS] == [5, 6]
    assert row["labels"] == [-100, -100, 7, 8, 9] and row["input_ids"] == [5, 6, 7, 8, 9]


# ---- tiny end-to-end runs ---------------------------------------------------------------------------------


@needs_rotten_tomatoes
def test_sentiment_recipe_refuses_a_generation_mode_before_loading_the_teacher(tmp_path):
    flags = tiny_flags(tmp_path / "run", teacher_model_name_or_path=tmp_path / "missing")
    with pytest.raises(ValueError, match="needs a causal-LM task"):
        run_recipe("sentiment", [*flags, "--distillation_mode", "sequence_kd"])


def _steps(report: dict, name: str) -> list[dict]:
    return [e for e in report["log_history"][name] if "loss" in e]


def _sentiment_flags(tmp_path: Path, tokenizer, **overrides) -> list[str]:
    """Flags of a tiny sentiment run in ``tmp_path / "run"`` whose teacher (saved in ``tmp_path / "t"``) is
    fine-tuned for two steps."""
    teacher = save_tiny_teacher(tmp_path / "t", BertForSequenceClassification, tokenizer, num_labels=2)
    return tiny_flags(
        tmp_path / "run", teacher_model_name_or_path=teacher, fine_tune_teacher="always", teacher_max_steps=2,
        **overrides,
    )  # fmt: skip


@needs_rotten_tomatoes
def test_sentiment_recipe_multi_teacher(tmp_path, wordpiece_tokenizer):
    out, flags = tmp_path / "run", _sentiment_flags(tmp_path, wordpiece_tokenizer)
    first = tmp_path / "t"
    # The second teacher is the same checkpoint fine-tuned with the next seed: another teacher.
    report = run_recipe(
        "sentiment", [*flags, "--distillation_mode", "multi_teacher", "--extra_teachers", str(first)]
    )
    assert report["distillation"]["distillation_mode"] == "multi_teacher"
    (extra,) = report["distillation"]["extra_teachers"]
    assert extra["fine_tuned_dir"] == str(out / "teacher_1") and 0.0 <= extra["metric"] <= 1.0
    ones = BertForSequenceClassification.from_pretrained(out / "teacher").state_dict()
    twos = BertForSequenceClassification.from_pretrained(out / "teacher_1").state_dict()
    assert not torch.equal(ones["classifier.weight"], twos["classifier.weight"]), (
        "seed + 1 gives another teacher"
    )
    names = [s["name"] for s in load_report(out)["students"]]
    assert names == ["teacher_layers-1L-multi_teacher", "teacher_layers-1L-no_kd"]
    assert all("loss_kd" in e for e in _steps(report, names[0]))


@needs_rotten_tomatoes
def test_sentiment_recipe_self_distillation(tmp_path, wordpiece_tokenizer):
    flags = _sentiment_flags(tmp_path, wordpiece_tokenizer)
    report = run_recipe(
        "sentiment",
        [*flags, "--distillation_mode", "self_distillation", "--ema_decay", "0.5", "--alpha", "0.5"],
    )
    steps = _steps(report, "teacher_layers-1L-self_distillation")
    # The self-teacher starts as a copy of the (dropout-free) student: nothing to distil at step 1, then
    # the student moves away from its average and the term grows.
    assert steps[0]["loss_kd"] == pytest.approx(0.0, abs=1e-7)
    assert max(e["loss_kd"] for e in steps[1:]) > 1e-6


@needs_rotten_tomatoes
def test_sentiment_recipe_mutual_learning_saves_both_students(tmp_path, wordpiece_tokenizer):
    out, flags = tmp_path / "run", _sentiment_flags(tmp_path, wordpiece_tokenizer)
    report = run_recipe("sentiment", [*flags, "--distillation_mode", "mutual", "--run_baseline", "false"])
    (student,) = report["students"]
    folder = Path(student["output_dir"])
    assert folder == out / "students" / "teacher_layers-1L-mutual" / "student_a"
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()
    assert (folder.parent / "student_b" / "model.safetensors").is_file()
    steps = _steps(report, student["name"])
    assert all("loss_kd_a" in e and "loss_kd_b" in e for e in steps)


def _code_flags(tmp_path: Path, teacher: Path) -> list[str]:
    flags = tiny_flags(
        tmp_path / "run",
        teacher_model_name_or_path=teacher,
        max_files=12,
        max_train_samples=8,
        max_test_samples=8,
        per_device_train_batch_size=4,
        run_baseline="false",
    )
    return [*flags, "--student_init", "gpt2", "--student_config_overrides", '{"n_embd": 8, "n_head": 2}']


@pytest.mark.parametrize(
    "mode, extra",
    [
        ("sequence_kd", ["--prompt_tokens", "24", "--teacher_max_new_tokens", "4"]),
        ("on_policy", ["--prompt_tokens", "24", "--alpha", "1.0", "--lmbda", "1.0", "--max_new_tokens", "4"]),
    ],
)
def test_codegen_recipe_generation_modes(mode, extra, tmp_path, wordpiece_tokenizer):
    teacher = save_tiny_code_teacher(tmp_path / "teacher", wordpiece_tokenizer)
    flags = _code_flags(tmp_path, teacher)
    report = run_recipe("codegen", [*flags, "--distillation_mode", mode, *extra])
    (student,) = report["students"]
    assert student["name"] == f"gpt2-1L-{mode}" and report["distillation"]["distillation_mode"] == mode
    steps = _steps(report, student["name"])
    assert len(steps) == 2 and all("loss_kd" in e for e in steps)


def test_sequence_kd_data_is_the_prompt_and_the_teachers_greedy_completion(wordpiece_tokenizer):
    from datasets import Dataset

    from hf_distill.recipes.mode_select import mode_train_data

    wordpiece_tokenizer.eos_token = "[SEP]"
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(wordpiece_tokenizer), n_embd=16, n_layer=1, n_head=2, n_positions=64)
    teacher, student = GPT2LMHeadModel(config).eval(), GPT2LMHeadModel(config)
    blocks = [[int(t) for t in torch.randint(5, 80, (12,))] for _ in range(3)]
    train = Dataset.from_dict({"input_ids": blocks, "attention_mask": [[1] * 12] * 3, "labels": blocks})
    mode = ModeArguments(distillation_mode="sequence_kd", prompt_tokens=5)
    data, collator = mode_train_data(mode, train, teacher, wordpiece_tokenizer, student, batch_size=2)
    for row, block in zip(data, blocks):
        prompt = torch.tensor([block[:5]])
        expected = teacher.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=7,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=wordpiece_tokenizer.eos_token_id,
        )[0].tolist()
        ends = [i for i, t in enumerate(expected[5:]) if t == wordpiece_tokenizer.eos_token_id]
        expected = expected[: 5 + ends[0] + 1] if ends else expected
        assert row["input_ids"] == expected, "prompt + greedy teacher completion (up to EOS), not the block"
        assert row["labels"] == [-100] * 5 + expected[5:]
    assert PROMPT_INPUT_IDS not in data.column_names and collator([data[0]])["input_ids"].shape[0] == 1


@needs_rotten_tomatoes
def test_sentiment_recipe_attention_matching_switches_to_eager_attention(tmp_path, wordpiece_tokenizer):
    flags = _sentiment_flags(tmp_path, wordpiece_tokenizer)
    # The default (SDPA) attention returns no maps; the recipe loads both models with eager attention.
    report = run_recipe(
        "sentiment",
        [*flags, "--attention_weight", "1.0", "--hidden_layer_map", "1:2", "--run_baseline", "false"],
    )
    steps = _steps(report, "teacher_layers-1L-distilled")
    assert steps and all(e["loss_attention"] > 0 for e in steps)


def test_codegen_prompt_longer_than_a_block_is_refused_at_parse_time(tmp_path):
    flags = ["--output_dir", str(tmp_path), "--distillation_mode", "on_policy", "--alpha", "1.0"]
    with pytest.raises(ValueError, match="prompt_tokens=32 leaves no completion in blocks of 16 tokens"):
        parse_recipe_args([*flags, "--max_length", "16"], task="causal_lm")


def test_mode_trainer_errors(tmp_path):
    from transformers import BertConfig

    from hf_distill import DistillationTrainingArguments
    from hf_distill.recipes.mode_select import mode_trainer

    student = BertForSequenceClassification(
        BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    args = DistillationTrainingArguments(output_dir=str(tmp_path), report_to="none")
    with pytest.raises(TypeError, match="'self_distillation' needs SelfDistillationTrainingArguments, got"):
        mode_trainer(ModeArguments(distillation_mode="self_distillation"), student, [], args)
    with pytest.raises(ValueError, match="'mutual' needs `peer`, the second student"):
        mode_trainer(ModeArguments(distillation_mode="mutual"), student, [], args)
