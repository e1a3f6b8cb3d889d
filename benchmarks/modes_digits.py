"""Distillation modes against plain KD and no KD on real data that ships offline: scikit-learn's digits.

Two CNN teachers are trained on the training split; a small MLP student (64 -> 16 -> 10) is then trained the
same way (epochs, batch, learning rate, alpha, T) as
  no_kd        task loss only (alpha = 0),
  kd           plain KD from teacher A,
  multi_kd     KD from the equal mixture of teachers A and B,
  self_ema     self-distillation from an EMA of the student (no teacher),
  mutual       mutual learning of two students (the first one is scored),
and scored on the held-out split. Each variant runs for several seeds; the table shows the mean and spread.

    python benchmarks/modes_digits.py --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile

import numpy as np
import torch
from _common import RESULTS
from datasets import Dataset
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from hf_distill import (
    DistillationTrainer,
    DistillationTrainingArguments,
    MultiTeacherDistillationTrainer,
    MultiTeacherTrainingArguments,
    MutualLearningTrainer,
    SelfDistillationTrainer,
    SelfDistillationTrainingArguments,
)


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Linear(16 * 64, 10)

    def forward(self, pixel_values):
        return self.head(self.conv(pixel_values.view(-1, 1, 8, 8)).flatten(1))


class MLP(nn.Module):
    def __init__(self, hidden: int = 16):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def forward(self, pixel_values):
        return self.net(pixel_values)


def train_teacher(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    model = CNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model = model.cpu().eval()
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def run_variant(name: str, seed: int, train: Dataset, teachers: list[nn.Module], common: dict) -> nn.Module:
    torch.manual_seed(seed)
    student = MLP()
    with tempfile.TemporaryDirectory() as out:
        common = {**common, "output_dir": out, "seed": seed}
        if name == "no_kd":
            trainer = DistillationTrainer(
                model=student,
                teacher_model=teachers[0],
                args=DistillationTrainingArguments(**{**common, "alpha": 0.0}),
            )
        elif name == "kd":
            trainer = DistillationTrainer(
                model=student, teacher_model=teachers[0], args=DistillationTrainingArguments(**common)
            )
        elif name == "multi_kd":
            trainer = MultiTeacherDistillationTrainer(
                model=student, teacher_models=teachers, args=MultiTeacherTrainingArguments(**common)
            )
        elif name == "self_ema":
            trainer = SelfDistillationTrainer(
                model=student,
                args=SelfDistillationTrainingArguments(**common, self_teacher="ema", ema_decay=0.99),
            )
        elif name == "mutual":
            torch.manual_seed(seed + 1000)
            trainer = MutualLearningTrainer(
                model=student, peer_model=MLP(), args=DistillationTrainingArguments(**common)
            )
        else:
            raise ValueError(name)
        trainer.train_dataset = train
        trainer.train()
    return student


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--temperature", type=float, default=4.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    cli = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)
    xs, ys, xt, yt = (torch.from_numpy(a) for a in (x_train, y_train, x_test, y_test))
    teachers = [train_teacher(xs, ys, seed=s) for s in (100, 101)]
    teacher_acc = [accuracy(t, xt, yt) for t in teachers]
    train = Dataset.from_dict({"pixel_values": x_train.tolist(), "labels": y_train.tolist()})
    common = dict(
        per_device_train_batch_size=64,
        num_train_epochs=cli.epochs,
        learning_rate=1e-2,
        temperature=cli.temperature,
        alpha=cli.alpha,
        report_to="none",
        save_strategy="no",
        logging_steps=1000,
        use_cpu=True,
        disable_tqdm=True,
    )
    variants = ["no_kd", "kd", "multi_kd", "self_ema", "mutual"]
    scores: dict[str, list[float]] = {v: [] for v in variants}
    for seed in range(cli.seeds):
        for variant in variants:
            student = run_variant(variant, seed, train, teachers, common)
            scores[variant].append(accuracy(student, xt, yt))
            print(f"seed {seed} {variant:9s} held-out accuracy {scores[variant][-1]:.4f}", flush=True)

    print(f"\nteachers (CNN): held-out accuracy {teacher_acc[0]:.4f}, {teacher_acc[1]:.4f}")
    print(f"{'variant':10s} {'mean acc':>9s} {'min':>7s} {'max':>7s}  (MLP 64-16-10, {cli.seeds} seeds)")
    summary = {}
    for variant, values in scores.items():
        summary[variant] = {
            "mean": statistics.mean(values),
            "min": min(values),
            "max": max(values),
            "runs": values,
        }
        print(f"{variant:10s} {summary[variant]['mean']:9.4f} {min(values):7.4f} {max(values):7.4f}")
    RESULTS.mkdir(exist_ok=True)
    result = {
        "teacher_accuracy": teacher_acc,
        "students": summary,
        "settings": {**vars(cli), "train": len(train)},
    }
    (RESULTS / "modes_digits.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
