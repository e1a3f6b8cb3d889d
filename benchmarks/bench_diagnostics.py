"""What the teacher diagnostics cost: one KD training step (compute_loss + backward + AdamW) of a causal LM on
the plain path, with ``teacher_diagnostics`` on and off, interleaved in rounds. ``logging_steps=1``: every step
is a logged step, on which the diagnostics are measured; a run logging every ``L`` steps pays ``1 / L`` of it.

    PYTHONPATH=. python benchmarks/bench_diagnostics.py [--rounds 7] [--quick]

The plain path is the costly case: the diagnostics take a top-k of the teacher's and of the student's full
logits at every KD position, and a log-sum-exp over the teacher's vocabulary (GPT-2's 50257 tokens here).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_causal_lm as lm  # noqa: E402
import torch  # noqa: E402
from _common import kd_training_step, report, summarize, time_variants  # noqa: E402

from hf_distill import DistillationTrainer, DistillationTrainingArguments  # noqa: E402


def step_fn(student, teacher, batch, out: str, diagnostics: bool):
    args = DistillationTrainingArguments(
        output_dir=out, report_to="none", use_cpu=True, alpha=0.5, temperature=2.0,
        kd_loss_implementation="plain", teacher_diagnostics=diagnostics, logging_steps=1,
    )  # fmt: skip
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args)
    return kd_training_step(trainer, student, batch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    s = lm.shapes(options.quick)
    batch = lm.make_batch(s)
    teacher = lm.gpt2(*s["teacher"], seed=1).eval()
    with tempfile.TemporaryDirectory() as out:
        variants = {
            f"diagnostics {'on' if on else 'off'}": step_fn(
                lm.gpt2(*s["student"], seed=2), teacher, batch, out, diagnostics=on
            )
            for on in (False, True)
        }
        times = time_variants(variants, options.rounds)
    rows = summarize(times, "diagnostics off")
    report("diagnostics", rows, {**s, "rounds": options.rounds, "threads": torch.get_num_threads()})


if __name__ == "__main__":
    main()
