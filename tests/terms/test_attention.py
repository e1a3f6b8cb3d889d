"""Attention-map and value-relation matching (TinyBERT / MiniLM) in DistillationTrainer."""

from __future__ import annotations

import math

import pytest
import torch

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.losses.divergences import distillation_loss
from hf_distill.terms.attention import (
    attention_layer_pairs,
    attention_map_loss,
    value_projections,
    value_relation,
    value_relation_loss,
)
from tests.helpers.modes import batch_of, classification_data, tiny_bert, tiny_gpt2

EAGER = dict(attn_implementation="eager", attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0)


def _naive_kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) of every row of (..., T, T), written out element by element."""
    out = torch.zeros(p.shape[:-1], dtype=torch.float64)
    for index in torch.cartesian_prod(*[torch.arange(n) for n in p.shape[:-1]]):
        index = tuple(index.tolist())
        out[index] = sum(
            float(p[index][k]) * (math.log(float(p[index][k])) - math.log(float(q[index][k])))
            for k in range(p.shape[-1])
            if p[index][k] > 0
        )
    return out


def _random_maps(batch, heads, length, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, heads, length, length, generator=generator).softmax(-1)


def test_attention_map_loss_matches_a_naive_reference():
    student, teacher = _random_maps(2, 3, 4, 0).double(), _random_maps(2, 3, 4, 1).double()
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    expected = (_naive_kl_rows(teacher, student).mean(1) * mask).sum()
    torch.testing.assert_close(attention_map_loss(student, teacher, mask), expected)


def test_attention_map_loss_by_hand_and_edge_cases():
    # One head, two queries: rows (0.5, 0.5) vs (0.25, 0.75) give 0.5 log(2) + 0.5 log(2/3); identical rows give 0.
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75], [1.0, 0.0]]]])
    by_hand = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert attention_map_loss(student, teacher).item() == pytest.approx(by_hand, rel=1e-6)
    assert attention_map_loss(teacher, teacher).item() == 0.0
    assert attention_map_loss(student, teacher, torch.zeros(1, 2)).item() == 0.0


def test_different_head_counts_compare_head_averaged_maps():
    student, teacher = _random_maps(2, 2, 5, 0), _random_maps(2, 4, 5, 1)
    expected = attention_map_loss(student.mean(1, keepdim=True), teacher.mean(1, keepdim=True))
    torch.testing.assert_close(attention_map_loss(student, teacher), expected)


def test_value_relation_loss_matches_a_naive_reference_across_widths():
    generator = torch.Generator().manual_seed(0)
    student_values = torch.randn(2, 5, 8, generator=generator)
    teacher_values = torch.randn(2, 5, 12, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 0, 0]])

    def relation(values, heads):
        rows = []
        for h in range(heads):
            width = values.shape[-1] // heads
            v = values[..., h * width : (h + 1) * width]
            scores = v @ v.transpose(-1, -2) / math.sqrt(width)
            scores = scores.masked_fill(mask[:, None, :] == 0, -1e30)
            rows.append(scores.softmax(-1))
        return torch.stack(rows, 1)

    expected = (_naive_kl_rows(relation(teacher_values, 2), relation(student_values, 2)).mean(1) * mask).sum()
    got = value_relation_loss(student_values, teacher_values, 2, mask)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-6)
    assert value_relation_loss(teacher_values, teacher_values, 2, mask).abs().item() < 1e-6


def _trainer(tmp_path, student=None, teacher=None, **kw):
    settings = dict(
        output_dir=str(tmp_path),
        report_to="none",
        per_device_train_batch_size=8,
        max_steps=3,
        learning_rate=1e-2,
        dataloader_pin_memory=False,
        logging_steps=5,
    )
    args = DistillationTrainingArguments(**{**settings, **kw})
    student = student if student is not None else tiny_bert(seed=0, hidden=16, **EAGER)
    teacher = teacher if teacher is not None else tiny_bert(seed=1, hidden=24, layers=4, heads=4, **EAGER)
    return DistillationTrainer(student, teacher_model=teacher, args=args, train_dataset=classification_data())


def test_trainer_adds_the_attention_term_over_the_layer_map(tmp_path):
    trainer = _trainer(tmp_path, alpha=1.0, attention_weight=2.0, hidden_layer_map="1:2,2:4")
    student, teacher = trainer.model, trainer.teacher
    batch = batch_of(classification_data())
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    student.eval()
    with torch.no_grad():
        got = trainer.compute_loss(student, batch)
        s, t = student(**inputs, output_attentions=True), teacher(**inputs, output_attentions=True)
    mask = inputs["attention_mask"]
    attention = sum(attention_map_loss(s.attentions[i], t.attentions[j], mask) for i, j in [(0, 1), (1, 3)])
    expected = distillation_loss(s.logits, t.logits, temperature=2.0) + 2.0 * attention / mask.sum()
    torch.testing.assert_close(got, expected)
    assert "loss_attention" in trainer.loss_log.parts["eval"]


def test_training_with_attention_matching_brings_the_maps_closer(tmp_path):
    trainer = _trainer(tmp_path, alpha=1.0, attention_weight=10.0, max_steps=15)
    batch = batch_of(classification_data())
    inputs = {k: v for k, v in batch.items() if k != "labels"}

    def attention_gap():
        trainer.model.eval()
        with torch.no_grad():
            s = trainer.model(**inputs, output_attentions=True)
            t = trainer.teacher(**inputs, output_attentions=True)
        return sum(attention_map_loss(s.attentions[i], t.attentions[j]) for i, j in [(0, 1), (1, 3)]).item()

    start = attention_gap()
    trainer.train()
    assert attention_gap() < 0.5 * start
    logged = [entry for entry in trainer.state.log_history if "loss_attention" in entry]
    assert logged and all(math.isfinite(entry["loss_attention"]) for entry in logged)


def test_trainer_adds_the_value_relation_term(tmp_path):
    trainer = _trainer(tmp_path, alpha=1.0, value_relation_weight=3.0, value_relation_heads=2)
    student, teacher = trainer.model, trainer.teacher
    batch = batch_of(classification_data())
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    student.eval()
    with torch.no_grad():
        got = trainer.compute_loss(student, batch)
        captured = {}
        hooks = [
            module.register_forward_hook(lambda m, i, o, key=(who, n): captured.__setitem__(key, o))
            for who, model in (("s", student), ("t", teacher))
            for n, module in enumerate(value_projections(model))
        ]
        s, t = student(**inputs), teacher(**inputs)
        for hook in hooks:
            hook.remove()
    mask = inputs["attention_mask"]
    relation = sum(
        value_relation_loss(captured[("s", i)], captured[("t", j)], 2, mask) for i, j in [(0, 1), (1, 3)]
    )
    expected = distillation_loss(s.logits, t.logits, temperature=2.0) + 3.0 * relation / mask.sum()
    torch.testing.assert_close(got, expected)


def test_attention_errors(tmp_path):
    with pytest.raises(ValueError, match="attn_implementation='sdpa'"):
        _trainer(tmp_path, student=tiny_bert(seed=0), attention_weight=1.0)
    with pytest.raises(ValueError, match="pairs only embedding outputs"):
        _trainer(tmp_path, attention_weight=1.0, hidden_layer_map="0:0")
    with pytest.raises(ValueError, match="hidden_layer_map names teacher layer 9"):
        _trainer(tmp_path, attention_weight=1.0, hidden_layer_map="1:9")
    with pytest.raises(ValueError, match="value_relation_heads must be >= 1"):
        DistillationTrainingArguments(output_dir=str(tmp_path), value_relation_heads=0)
    with pytest.raises(ValueError, match="value_relation_weight must be >= 0"):
        DistillationTrainingArguments(output_dir=str(tmp_path), value_relation_weight=-1.0)
    with pytest.raises(ValueError, match="not divisible by value_relation_heads=3"):
        value_relation(torch.zeros(1, 2, 16), 3, None)
    with pytest.raises(ValueError, match="Found no value projections in GPT2LMHeadModel"):
        value_projections(tiny_gpt2())
    with pytest.raises(ValueError, match="cover different sequence lengths"):
        attention_map_loss(_random_maps(1, 1, 3, 0), _random_maps(1, 1, 4, 0))
    assert attention_layer_pairs([(0, 0), (2, 4)]) == [(1, 3)]
