"""ResNet teacher -> small CNN student on scikit-learn's digits upsampled to 32x32: KD and KD + feature maps
(FitNets) against the same student trained without the teacher, over several seeds.

Per seed: a ResNet teacher (Transformers ``ResNetConfig``, widths 16/32/64) is trained from scratch on the
training split; then one student initialisation (:class:`hf_distill.recipes.vision_models.SmallCNN`) is
trained three ways with the same data order, steps and optimizer by ``DistillationTrainer``:

  no_kd    alpha = 0 (the task loss alone; the teacher's outputs are not used),
  kd       alpha, T (logit KD),
  kd_fm    the same plus feature-map matching of ``DEFAULT_FEATURE_LAYERS`` (1x1-conv projection, pooling).

All are scored on the held-out test split, which no choice was made on; the paired differences
(variant - no_kd, same seed) get a 95% bootstrap interval over seeds (scipy.stats.bootstrap), and a second
interval over test images (per-image correctness, paired, pooled over seeds). alpha and T were chosen on the
validation split (``--select`` scores the validation split only; seed 0, alpha 0.5: T 1 best, then 2, then 4;
results/vision_digits_select_*.json), never on test.

    python benchmarks/vision_digits.py --seeds 0 1 2                      # results/vision_digits.json
    python benchmarks/vision_digits.py --select --seeds 0 --temperature 2 --out results/vision_digits_select_alpha0.5_T2.json

torch runs on one thread by default (``--threads``): on a CPU shared with other jobs, its spinning worker threads
made every step ~10x slower in CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
from _common import RESULTS, machine
from scipy.stats import bootstrap
from transformers import Trainer, TrainingArguments, set_seed

from hf_distill import DistillationTrainer, DistillationTrainingArguments
from hf_distill.recipes.data_vision import load_digits_images
from hf_distill.recipes.vision_models import DEFAULT_FEATURE_LAYERS, SmallCNN, resnet_teacher

COMMON = dict(
    per_device_train_batch_size=64,
    learning_rate=3e-3,
    weight_decay=0.0,
    report_to="none",
    save_strategy="no",
    use_cpu=True,
    disable_tqdm=True,
    logging_steps=50,
    dataloader_num_workers=0,
)


def correct(model: torch.nn.Module, split) -> np.ndarray:
    """Per-image correctness (bool) of ``model`` on ``split``."""
    model = model.cpu().eval()
    batch = split[:]
    with torch.no_grad():
        outputs = [model(pixel_values=x) for x in batch["pixel_values"].split(256)]
    logits = torch.cat([getattr(o, "logits", o) for o in outputs])
    return (logits.argmax(-1) == batch["labels"]).numpy()


def train_teacher(data, seed: int, epochs: int, out: str) -> torch.nn.Module:
    set_seed(seed)
    teacher = resnet_teacher(num_labels=10, num_channels=1)
    args = TrainingArguments(output_dir=out, num_train_epochs=epochs, seed=seed, **COMMON)
    Trainer(model=teacher, args=args, train_dataset=data["train"]).train()
    return teacher.eval()


def train_student(data, teacher, seed: int, epochs: int, out: str, **knobs) -> torch.nn.Module:
    set_seed(seed)
    student = SmallCNN(num_labels=10, num_channels=1)
    args = DistillationTrainingArguments(
        output_dir=out, num_train_epochs=epochs, seed=seed, **COMMON, **knobs
    )
    DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data["train"]).train()
    return student.eval()


def interval(differences: np.ndarray) -> list[float]:
    if len(differences) < 2 or np.all(differences == differences[0]):
        return [float(differences.mean())] * 2
    ci = bootstrap((differences,), np.mean, confidence_level=0.95, n_resamples=9999, random_state=0)
    return [float(ci.confidence_interval.low), float(ci.confidence_interval.high)]


def variants(args) -> dict[str, dict]:
    kd = dict(alpha=args.alpha, temperature=args.temperature)
    return {
        "no_kd": dict(alpha=0.0),
        "kd": kd,
        "kd_fm": dict(**kd, feature_map_weight=args.feature_weight, feature_layers=DEFAULT_FEATURE_LAYERS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher_epochs", type=int, default=15)
    parser.add_argument("--student_epochs", type=int, default=10)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--feature_weight", type=float, default=1.0)
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--out", default=str(RESULTS / "vision_digits.json"))
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: no spinning on a shared CPU)"
    )
    parser.add_argument("--select", action="store_true", help="score the validation split only (tuning)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_digits_images(args.image_size, seed=0)
    names = ["teacher", *variants(args)]
    scored = ("validation",) if args.select else ("validation", "test")
    runs: dict[str, dict[str, list]] = {split: {n: [] for n in names} for split in scored}
    start, load = time.time(), os.getloadavg()
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            teacher = train_teacher(data, seed, args.teacher_epochs, f"{tmp}/t{seed}")
            for split in runs:
                runs[split]["teacher"].append(correct(teacher, data[split]))
            for name, knobs in variants(args).items():
                t0 = time.time()
                student = train_student(
                    data, teacher, seed, args.student_epochs, f"{tmp}/{name}{seed}", **knobs
                )
                for split in runs:
                    runs[split][name].append(correct(student, data[split]))
                print(
                    f"seed {seed} {name}: {time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True
                )
            print({k: round(float(v[-1].mean()), 4) for k, v in runs[scored[-1]].items()}, flush=True)
    rows = {split: table(runs[split]) for split in runs}
    for row in rows[scored[-1]]:
        print(json.dumps(row))
    result = {
        "benchmark": "vision_digits",
        "settings": vars(args)
        | {"out": os.path.basename(args.out), "feature_layers": DEFAULT_FEATURE_LAYERS, **COMMON},
        **rows,
        "seconds": time.time() - start,
        "cpu_seconds_of_this_process": time.process_time() - cpu_start,
        "loadavg_at_start": load,
        "loadavg_at_end": os.getloadavg(),
        "machine": machine(),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


def table(runs: dict[str, list]) -> list[dict]:
    """Accuracy per seed and mean of each model; for the distilled ones the paired difference with no_kd and
    its 95% bootstrap intervals over seeds and over test images."""
    accuracy = {k: [float(r.mean()) for r in v] for k, v in runs.items()}
    rows = []
    for name, per_seed in accuracy.items():
        row = {"model": name, "accuracy_per_seed": per_seed, "mean": float(np.mean(per_seed))}
        if name not in ("teacher", "no_kd"):
            seed_diff = np.array(per_seed) - np.array(accuracy["no_kd"])
            image_diff = np.concatenate(runs[name]).astype(float) - np.concatenate(runs["no_kd"]).astype(
                float
            )
            row |= {
                "diff_vs_no_kd": float(seed_diff.mean()),
                "ci95_over_seeds": interval(seed_diff),
                "ci95_over_images": interval(image_diff),
            }
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
