"""(a) Classification KD step vs (teacher forward + student step) at BERT shapes, and
(c) cached-teacher KD step vs the student-only step.

    python benchmarks/bench_classification.py [--rounds 7] [--quick]

Teacher: BERT-base shape (12 layers, hidden 768); student: 6 layers, hidden 768 (DistilBERT shape);
batch 16 x 128 tokens, 2 labels, float32, random weights (timing does not depend on them).
Step = DistillationTrainer.compute_loss + backward + AdamW step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report, summarize, time_variants  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402
from hf_distill.cache.build import INPUT_HASH, TEACHER_LOGITS, batch_input_hashes  # noqa: E402


def shapes(quick: bool) -> dict:
    if quick:
        return {"batch": 4, "tokens": 32, "teacher": (2, 128), "student": (1, 128)}
    return {"batch": 16, "tokens": 128, "teacher": (12, 768), "student": (6, 768)}


def bert(layers: int, hidden: int, seed: int) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=hidden // 64,
        intermediate_size=4 * hidden, num_labels=2,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def make_batch(s: dict) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (s["batch"], s["tokens"]), generator=g)
    labels = torch.randint(0, 2, (s["batch"],), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small shapes, to check the script runs")
    options = parser.parse_args()
    s = shapes(options.quick)
    batch = make_batch(s)
    teacher = bert(*s["teacher"], seed=1).eval()
    with torch.no_grad():
        cached = {
            **batch,
            TEACHER_LOGITS: teacher(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits,
            INPUT_HASH: torch.tensor(batch_input_hashes(batch["input_ids"], batch["attention_mask"])),
        }
    names = ("student only", "teacher fwd + student step", "KD step", "KD step, cached teacher")
    students = {name: bert(*s["student"], seed=2) for name in names}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in students.items()}

    def plain_step(name: str, with_teacher: bool):
        def step():
            if with_teacher:
                with torch.no_grad():
                    teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            students[name](**batch).loss.backward()
            optimizers[name].step()
            optimizers[name].zero_grad(set_to_none=True)

        return step

    with tempfile.TemporaryDirectory() as out:
        args = DistillationTrainingArguments(output_dir=out, report_to="none", use_cpu=True, alpha=0.5)
        trainers = {
            name: DistillationTrainer(model=students[name], teacher_model=teacher, args=args)
            for name in names[2:]
        }

        def kd_step(name: str, inputs: dict):
            def step():
                trainers[name].compute_loss(students[name], inputs).backward()
                optimizers[name].step()
                optimizers[name].zero_grad(set_to_none=True)

            return step

        variants = {
            "student only": plain_step("student only", False),
            "teacher fwd + student step": plain_step("teacher fwd + student step", True),
            "KD step": kd_step("KD step", batch),
            "KD step, cached teacher": kd_step("KD step, cached teacher", cached),
        }
        times = time_variants(variants, rounds=options.rounds)
    meta = {"batch": s["batch"], "tokens": s["tokens"], "teacher(layers,hidden)": s["teacher"],
            "student(layers,hidden)": s["student"], "rounds": options.rounds, "dtype": "float32"}  # fmt: skip
    rows_a = summarize(times.subset(["teacher fwd + student step", "KD step"]), "teacher fwd + student step")
    rows_c = summarize(times.subset(["student only", "KD step, cached teacher"]), "student only")
    suffix = "_quick" if options.quick else ""
    teacher_share = 1 - min(times["student only"]) / min(times["teacher fwd + student step"])
    report(
        "classification_kd" + suffix,
        rows_a,
        meta,
        {"teacher forward share of the step": round(teacher_share, 3)},
    )
    report("cached_teacher" + suffix, rows_c, meta)


if __name__ == "__main__":
    main()
