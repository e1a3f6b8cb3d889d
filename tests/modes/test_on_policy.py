"""On-policy distillation (GKD) and sequence-level KD for causal LMs, on tiny random GPT-2 models."""

from __future__ import annotations

import copy

import pytest
import torch
from datasets import Dataset

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.modes.on_policy import (
    OnPolicyDistillationTrainer,
    OnPolicyDistillationTrainingArguments,
    PromptCompletionCollator,
    tokenize_prompt_completion,
)
from hf_distill.modes.sequence_kd import generate_teacher_completions
from tests.helpers.tiny_models import tiny_bert_classifier, tiny_gpt2

EOS = 0  # tiny_gpt2's EOS; with no tokenizer it also pads


def _args(tmp_path, cls=OnPolicyDistillationTrainingArguments, **kw):
    defaults = dict(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=1e-2,
        dataloader_pin_memory=False,
        save_strategy="no",
        max_new_tokens=6,
        generation_temperature=0.7,
    )
    if cls is not OnPolicyDistillationTrainingArguments:
        for name in ("max_new_tokens", "generation_temperature"):
            defaults.pop(name)
    defaults.update(kw)
    return cls(**defaults)


def _data(n: int = 16, prompt_length: int = 4, completion_length: int = 3, seed: int = 0) -> Dataset:
    """Prompts of equal length (no padding) and fixed completions that never contain EOS."""
    generator = torch.Generator().manual_seed(seed)
    prompts = torch.randint(1, 60, (n, prompt_length), generator=generator).tolist()
    completions = torch.randint(1, 60, (n, completion_length), generator=generator).tolist()
    return Dataset.from_dict(
        {
            "prompt_input_ids": prompts,
            "input_ids": [p + c for p, c in zip(prompts, completions)],
            "attention_mask": [[1] * (prompt_length + completion_length)] * n,
            "labels": [[-100] * prompt_length + c for c in completions],
        }
    )


def _sharp_teacher(seed: int = 1):
    """Random tiny models are near uniform; larger (tied) embeddings give the teacher peaked distributions."""
    teacher = tiny_gpt2(seed=seed)
    with torch.no_grad():
        teacher.transformer.wte.weight.mul_(8.0)
    return teacher


class _Recording(OnPolicyDistillationTrainer):
    """Records each generation's inputs, RNG state and student weights, and what compute_loss trains on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.generations, self.trained, self.teacher_inputs = [], [], []
        self.teacher.register_forward_pre_hook(
            lambda module, a, kw: self.teacher_inputs.append(kw["input_ids"].clone()), with_kwargs=True
        )

    def generate_completions(self, model, prompt_input_ids, prompt_attention_mask):
        state = copy.deepcopy(model.state_dict())
        self.generations.append((torch.get_rng_state(), state, prompt_input_ids.clone()))
        return super().generate_completions(model, prompt_input_ids, prompt_attention_mask)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self.trained.append(({k: v.clone() for k, v in inputs.items()}, num_items_in_batch))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def test_lmbda_one_trains_on_the_students_own_samples_and_scores_the_teacher_on_them(tmp_path):
    trainer = _Recording(
        tiny_gpt2(seed=0), _sharp_teacher(), args=_args(tmp_path, lmbda=1.0), train_dataset=_data()
    )
    trainer.train()
    assert len(trainer.generations) == len(trainer.trained) == 3
    for (rng_state, state, prompts), (inputs, num_items) in zip(trainer.generations, trainer.trained):
        replay = tiny_gpt2(seed=5)
        replay.load_state_dict(state)
        replay.eval()
        torch.set_rng_state(rng_state)
        sequences = replay.generate(
            input_ids=prompts,
            attention_mask=torch.ones_like(prompts),
            do_sample=True,
            temperature=0.7,
            top_k=0,
            top_p=1.0,
            max_new_tokens=6,
            pad_token_id=EOS,
            eos_token_id=EOS,
        )
        for row, sequence in enumerate(sequences.tolist()):
            completion = sequence[4:]
            if EOS in completion:
                completion = completion[: completion.index(EOS) + 1]
            length = 4 + len(completion)
            assert inputs["input_ids"][row, :length].tolist() == prompts[row].tolist() + completion
            assert inputs["labels"][row].tolist() == [-100] * 4 + completion + [-100] * (
                inputs["labels"].shape[1] - length
            )
            assert inputs["attention_mask"][row].sum() == length
        # Counted after generation: the completion tokens trained on, not the dataset's 3 per row.
        assert num_items == (inputs["labels"] != -100).sum()
        assert "prompt_input_ids" in inputs  # reached compute_loss, and was kept away from the models
    assert len(trainer.teacher_inputs) == 3
    for teacher_ids, (inputs, _) in zip(trainer.teacher_inputs, trainer.trained):
        assert torch.equal(teacher_ids, inputs["input_ids"])


def test_lmbda_zero_trains_on_the_datasets_completions(tmp_path):
    data = _data()
    trainer = _Recording(
        tiny_gpt2(seed=0), _sharp_teacher(), args=_args(tmp_path, lmbda=0.0), train_dataset=data
    )
    trainer.train()
    assert trainer.generations == []
    rows = {tuple(r) for r in data["input_ids"]}
    label_rows = {tuple(r) for r in data["labels"]}
    for inputs, num_items in trainer.trained:
        assert {tuple(r) for r in inputs["input_ids"].tolist()} <= rows
        assert {tuple(r) for r in inputs["labels"].tolist()} <= label_rows
        assert num_items == 4 * 3
    for teacher_ids, (inputs, _) in zip(trainer.teacher_inputs, trainer.trained):
        assert torch.equal(teacher_ids, inputs["input_ids"])


def test_lmbda_picks_generated_batches_at_that_rate(tmp_path):
    trainer = _Recording(
        tiny_gpt2(seed=0), _sharp_teacher(), args=_args(tmp_path, lmbda=0.3), train_dataset=_data()
    )
    # generate is not what is measured here: a one-token stand-in keeps 400 draws fast.
    trainer.generate_completions = lambda model, ids, mask: torch.cat(
        [ids, torch.full_like(ids[:, :1], 7)], 1
    )
    batch = PromptCompletionCollator(EOS)([_data()[i] for i in range(4)])
    generated = sum(trainer._on_policy_or_dataset(batch)["input_ids"].shape[1] == 5 for _ in range(400))
    assert 80 <= generated <= 160  # Binomial(400, 0.3) has mean 120 and sd 9.2


def test_on_policy_distillation_brings_the_student_to_the_teacher(tmp_path):
    train, held_out = _data(n=32, seed=0), _data(n=16, seed=1)
    args = _args(
        tmp_path,
        lmbda=0.5,
        max_steps=20,
        eval_strategy="no",
        per_device_eval_batch_size=16,
    )
    trainer = OnPolicyDistillationTrainer(
        tiny_gpt2(seed=0), _sharp_teacher(), args=args, train_dataset=train, eval_dataset=held_out
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    assert after < 0.8 * before


def test_prompt_completion_collator_pads_prompts_left_and_sequences_right():
    collate = PromptCompletionCollator(pad_token_id=9)
    batch = collate(
        [
            {"prompt_input_ids": [5], "input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
            {"prompt_input_ids": [3, 4], "input_ids": [3, 4, 8, 2], "labels": [-100, -100, 8, 2]},
        ]
    )
    assert batch["prompt_input_ids"].tolist() == [[9, 5], [3, 4]]
    assert batch["prompt_attention_mask"].tolist() == [[0, 1], [1, 1]]
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9], [3, 4, 8, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert batch["labels"].tolist() == [[-100, 6, 7, -100], [-100, -100, 8, 2]]


def test_tokenize_prompt_completion_masks_the_prompt(wordpiece_tokenizer):
    tokenizer = copy.deepcopy(wordpiece_tokenizer)
    tokenizer.eos_token = "[SEP]"
    data = Dataset.from_dict({"prompt": ["the movie was", "a plot"], "completion": ["great fun", "boring"]})
    out = tokenize_prompt_completion(data, tokenizer, max_prompt_length=2)
    for row, (prompt, completion) in enumerate(zip(data["prompt"], data["completion"])):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][-2:]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [
            tokenizer.eos_token_id
        ]
        assert out[row]["prompt_input_ids"] == prompt_ids
        assert out[row]["input_ids"] == prompt_ids + completion_ids
        assert out[row]["labels"] == [-100] * len(prompt_ids) + completion_ids


def test_sequence_kd_dataset_holds_the_teachers_greedy_completions(tmp_path):
    teacher = _sharp_teacher()
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    out = generate_teacher_completions(
        teacher, None, Dataset.from_dict({"prompt_input_ids": prompts}), max_new_tokens=5, batch_size=3
    )
    for row, prompt in enumerate(prompts):
        sequence = teacher.generate(
            torch.tensor([prompt]), max_new_tokens=5, do_sample=False, pad_token_id=EOS, eos_token_id=EOS
        )[0].tolist()
        completion = sequence[len(prompt) :]
        if EOS in completion:
            completion = completion[: completion.index(EOS) + 1]
        assert out[row]["prompt_input_ids"] == prompt
        assert out[row]["input_ids"] == prompt + completion
        assert out[row]["labels"] == [-100] * len(prompt) + completion

    # Then the plain trainer learns the teacher on its own outputs.
    train = generate_teacher_completions(
        teacher, None, _data(n=32).select_columns(["prompt_input_ids"]), max_new_tokens=5
    )
    args = _args(
        tmp_path,
        cls=DistillationTrainingArguments,
        alpha=0.5,
        max_steps=20,
        learning_rate=3e-2,
        per_device_eval_batch_size=32,
    )
    trainer = DistillationTrainer(
        tiny_gpt2(seed=0),
        teacher,
        args=args,
        train_dataset=train,
        eval_dataset=train,
        data_collator=PromptCompletionCollator(EOS),
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < 0.85 * before


def test_errors(tmp_path, wordpiece_tokenizer):
    with pytest.raises(ValueError, match="lmbda must be in"):
        _args(tmp_path, lmbda=1.5)
    with pytest.raises(ValueError, match="max_new_tokens must be > 0"):
        _args(tmp_path, max_new_tokens=0)
    with pytest.raises(ValueError, match="generation_temperature must be > 0"):
        _args(tmp_path, generation_temperature=0.0)
    with pytest.raises(ValueError, match="student's own samples"):
        _args(tmp_path, lmbda=0.5, alpha=0.5)
    _args(tmp_path, lmbda=0.0, alpha=0.5)  # supervised KD may keep a task term
    with pytest.raises(TypeError, match="needs OnPolicyDistillationTrainingArguments"):
        OnPolicyDistillationTrainer(
            tiny_gpt2(), tiny_gpt2(), args=_args(tmp_path, cls=DistillationTrainingArguments)
        )
    with pytest.raises(ValueError, match="needs a causal LM"):
        OnPolicyDistillationTrainer(tiny_bert_classifier(), tiny_bert_classifier(), args=_args(tmp_path))
    no_prompts = _data().remove_columns(["prompt_input_ids"])
    with pytest.raises(ValueError, match="has no 'prompt_input_ids' column"):
        OnPolicyDistillationTrainer(tiny_gpt2(), tiny_gpt2(), args=_args(tmp_path), train_dataset=no_prompts)
    dropping = PromptCompletionCollator(EOS)
    trainer = OnPolicyDistillationTrainer(
        tiny_gpt2(),
        tiny_gpt2(),
        args=_args(tmp_path, lmbda=1.0),
        train_dataset=_data(),
        data_collator=lambda features: dropping(
            [{k: v for k, v in f.items() if "prompt" not in k} for f in features]
        ),
    )
    with pytest.raises(ValueError, match="has no 'prompt_input_ids', so the student has no prompt"):
        trainer.train()

    text = Dataset.from_dict({"prompt": ["the movie", ""], "completion": ["was fun", "bad"]})
    with pytest.raises(ValueError, match=r"no column\(s\) \['text'\]"):
        tokenize_prompt_completion(text, wordpiece_tokenizer, prompt_column="text")
    with pytest.raises(ValueError, match="has no eos_token"):
        tokenize_prompt_completion(text, wordpiece_tokenizer)
    with pytest.raises(ValueError, match="tokenizes to no token"):
        tokenize_prompt_completion(text, wordpiece_tokenizer, add_eos=False)
    with pytest.raises(ValueError, match="max_prompt_length must be >= 1"):
        tokenize_prompt_completion(text, wordpiece_tokenizer, max_prompt_length=0, add_eos=False)

    prompts = Dataset.from_dict({"prompt_input_ids": [[5, 6], []]})
    with pytest.raises(ValueError, match="max_new_tokens must be > 0"):
        generate_teacher_completions(tiny_gpt2(), None, prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate_teacher_completions(tiny_gpt2(), None, prompts, max_new_tokens=2, batch_size=0)
    with pytest.raises(ValueError, match="neither a 'text' text column"):
        generate_teacher_completions(tiny_gpt2(), None, text, max_new_tokens=2, prompt_column="text")
    with pytest.raises(ValueError, match=r"Prompts at rows \[1\] have no token"):
        generate_teacher_completions(tiny_gpt2(), None, prompts, max_new_tokens=2)
    config_without_tokens = tiny_gpt2()
    config_without_tokens.config.eos_token_id = None
    config_without_tokens.generation_config.eos_token_id = None
    with pytest.raises(ValueError, match="defines a pad or EOS token"):
        generate_teacher_completions(config_without_tokens, None, prompts.select([0]), max_new_tokens=2)
